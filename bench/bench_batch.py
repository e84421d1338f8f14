"""Benchmark: batch mode at 100k requests: gather and write the request file, import the results, and a whole
Batch API round trip against the project's test server.

    python bench/bench_batch.py                       # 100,000 requests, ~1-3 minutes on 2 cores
    python bench/bench_batch.py --requests 2000 --out b.json

Three timings, each through the code a user runs:

- export:   100k chat requests gathered by a batch-mode client (``batch: file``), written as one OpenAI batch
            file (what ``datagen batch export`` does); ends in ``BatchWaiting``.
- import:   a 100k-line results file in the OpenAI format loaded into the answer cache (``datagen batch import``).
- round trip: the same requests through ``batch: on`` against the fault server's in-memory Batch API
            (upload, create, poll, download, cache); the server runs in this process, so its time and memory
            are included: an upper bound on ours.

Peak memory is the process's peak RSS after each part (``ru_maxrss`` only grows, so each part is run in a
fresh child process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prompts(n: int) -> list[str]:
    return [f"Write one sentence about topic number {i}, for a reader who has never heard of it." for i in range(n)]


async def _ask_all(cfg, texts: list[str]) -> int:
    from datagen.llm.client import LLMClient, SamplingParams, map_bounded

    params = SamplingParams(max_tokens=64, temperature=0.7)
    answered = 0
    async with LLMClient(cfg) as llm:

        async def one(text):
            return await llm.chat([{"role": "user", "content": text}], params)

        async for _, result in map_bounded(one, texts, limit=cfg.gather_limit):
            answered += not isinstance(result, BaseException)
    return answered


def part_export(n: int, work: Path) -> dict:
    from datagen.llm.batch import BatchWaiting
    from datagen.llm.client import LLMConfig

    cfg = LLMConfig(
        batch="file",
        model="bench-model",
        batch_file=work / "requests.jsonl",
        batch_max_requests=n,
        cache_path=work / "export.sqlite",
    )
    started = time.perf_counter()
    try:
        asyncio.run(_ask_all(cfg, _prompts(n)))
    except BatchWaiting:
        pass
    seconds = time.perf_counter() - started
    lines = (work / "requests.jsonl").read_bytes().count(b"\n")
    return {
        "requests": lines,
        "seconds": round(seconds, 2),
        "ms_per_request": round(1000 * seconds / n, 4),
        "file_mb": round((work / "requests.jsonl").stat().st_size / 1e6, 1),
    }


def part_import(n: int, work: Path) -> dict:
    from datagen.llm.batch import import_results
    from datagen.llm.client import LLMClient, LLMConfig
    from tests.plugins.faults import MODEL_ID

    results = work / "results.jsonl"
    with results.open("w", encoding="utf-8") as f:
        for i, text in enumerate(_prompts(n)):
            body = {
                "id": f"c{i}",
                "object": "chat.completion",
                "model": MODEL_ID,
                "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50},
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": f"An answer about: {text}"},
                    }
                ],
            }
            f.write(
                json.dumps(
                    {
                        "id": f"r{i}",
                        "custom_id": f"key-{i:08d}",
                        "error": None,
                        "response": {"status_code": 200, "body": body},
                    }
                )
                + "\n"
            )
    client = LLMClient(LLMConfig(batch="file", model="bench-import", cache_path=work / "import.sqlite"))
    started = time.perf_counter()
    counts = import_results(results, client.cache, client._parse_raw)
    seconds = time.perf_counter() - started
    asyncio.run(client.aclose())
    assert counts["imported"] == n, counts
    return {"requests": n, "seconds": round(seconds, 2), "ms_per_request": round(1000 * seconds / n, 4)}


def part_round_trip(n: int, work: Path) -> dict:
    from datagen.llm.client import LLMConfig
    from tests.plugins.faults import MODEL_ID, FaultServer, running

    with running(FaultServer()) as server:
        cfg = LLMConfig(
            base_urls=(server.url,),
            model=MODEL_ID,
            batch="on",
            poll_interval=0.2,
            cache_path=work / "round.sqlite",
            timeout=600,
        )
        started = time.perf_counter()
        answered = asyncio.run(_ask_all(cfg, _prompts(n)))
        seconds = time.perf_counter() - started
        assert answered == n and not server.log, (answered, len(server.log))
        jobs = server.batches.creates
    return {"requests": n, "jobs": jobs, "seconds": round(seconds, 2), "ms_per_request": round(1000 * seconds / n, 4)}


PARTS = {"export": part_export, "import": part_import, "round_trip": part_round_trip}


def child(name: str, n: int, work: Path) -> None:
    out = PARTS[name](n, work)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.requests, args.work)
    result: dict = {"requests": args.requests}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DATAGEN_HOME": tmp, "PYTHONPATH": str(ROOT)}
        for name in PARTS:
            done = subprocess.run(
                [sys.executable, __file__, "--child", name, "--requests", str(args.requests), "--work", tmp],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
            )
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            result[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(name, result[name], flush=True)
    rows = [
        f"| {name} | {r['seconds']} | {r['ms_per_request']} | {r['peak_rss_mb']} |"
        for name, r in result.items()
        if isinstance(r, dict)
    ]
    result["markdown"] = "\n".join(
        [
            f"{args.requests:,} chat requests, each part in a fresh process.",
            "",
            "| part | seconds | ms per request | peak RSS (MB) |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print(result["markdown"])


if __name__ == "__main__":
    main()
