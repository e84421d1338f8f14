"""LLM client saturation: requests/s against a fixed 100 ms endpoint at concurrency 64, vs the ideal.

    python bench/bench_client.py [--requests 2000] [--concurrency 64] [--latency 0.1] [--out FILE.json]

Compared in one run, against the same endpoint (a separate process, bench/latency_server.py):
- ours: ``datagen.llm.client.LLMClient`` (retries, pacing, cache and ledger all on) through ``map_bounded``;
- a naive sequential loop over the official ``openai`` client (what a hand-rolled script does);
- distilabel's ``OpenAILLM`` in a minimal pipeline (LoadDataFromDicts → TextGeneration), if installed.
Each side must return one answer per prompt; ideal = concurrency / latency requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datagen.llm.client import LLMClient, LLMConfig, SamplingParams, map_bounded  # noqa: E402


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    url_file = Path(tempfile.mkdtemp()) / "url"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "latency_server.py"), "--latency",
                             str(latency), "--url-file", str(url_file)])
    deadline = time.monotonic() + 60
    while not url_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("latency server did not start")
        time.sleep(0.05)
    url = url_file.read_text()
    import httpx

    while True:
        try:
            if httpx.get(url.removesuffix("/v1") + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    return proc, url


async def ours(url: str, prompts: list[str], concurrency: int, cache_path: Path) -> tuple[float, int]:
    cfg = LLMConfig(base_urls=(url,), model="latency-model", concurrency=concurrency, cache_path=cache_path)
    async with LLMClient(cfg) as llm:
        start = time.perf_counter()
        answers = 0
        async for _, result in map_bounded(lambda p: llm.chat([{"role": "user", "content": p}],
                                                              SamplingParams(max_tokens=8)), prompts, concurrency * 2):
            answers += not isinstance(result, BaseException)
        return time.perf_counter() - start, answers


def naive_sequential(url: str, prompts: list[str]) -> tuple[float, int]:
    import openai

    client = openai.OpenAI(base_url=url, api_key="none")
    start = time.perf_counter()
    answers = sum(1 for p in prompts if client.chat.completions.create(
        model="latency-model", messages=[{"role": "user", "content": p}], max_tokens=8).choices[0].message.content)
    return time.perf_counter() - start, answers


def distilabel_pipeline(url: str, prompts: list[str], concurrency: int) -> tuple[float, int] | None:
    try:
        from distilabel.models import OpenAILLM
        from distilabel.pipeline import Pipeline
        from distilabel.steps import LoadDataFromDicts
        from distilabel.steps.tasks import TextGeneration
    except ImportError:
        return None
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "ERROR")
    with Pipeline(name="bench-client", cache_dir=tempfile.mkdtemp()) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p} for p in prompts], batch_size=concurrency)
        generate = TextGeneration(llm=OpenAILLM(model="latency-model", base_url=url, api_key="none",
                                                generation_kwargs={"max_new_tokens": 8}),
                                  input_batch_size=concurrency)
        load >> generate
    start = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    elapsed = time.perf_counter() - start
    rows = distiset["default"]["train"]
    return elapsed, sum(1 for r in rows if r.get("generation"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sequential-requests", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-distilabel", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    proc, url = start_server(args.latency)
    ideal = args.concurrency / args.latency
    results: dict[str, object] = {"requests": args.requests, "concurrency": args.concurrency,
                                  "latency_s": args.latency, "ideal_rps": ideal}
    try:
        asyncio.run(ours(url, [f"warm {i}" for i in range(200)], args.concurrency, Path(tempfile.mkdtemp()) / "c.sqlite"))
        runs = []
        for r in range(args.repeats):
            prompts = [f"prompt {r}-{i}" for i in range(args.requests)]  # distinct: no cache hits
            elapsed, answers = asyncio.run(ours(url, prompts, args.concurrency, Path(tempfile.mkdtemp()) / "c.sqlite"))
            assert answers == args.requests, f"ours answered {answers}/{args.requests}"
            runs.append(args.requests / elapsed)
        runs.sort()
        results["ours_rps"] = round(runs[len(runs) // 2], 1)
        results["ours_share_of_ideal"] = round(results["ours_rps"] / ideal, 3)
        elapsed, answers = naive_sequential(url, [f"seq {i}" for i in range(args.sequential_requests)])
        assert answers == args.sequential_requests
        results["naive_sequential_rps"] = round(answers / elapsed, 1)
        if not args.skip_distilabel:
            outcome = distilabel_pipeline(url, [f"dl {i}" for i in range(args.requests)], args.concurrency)
            if outcome:
                elapsed, answers = outcome
                results["distilabel_rps"] = round(answers / elapsed, 1)
                results["distilabel_answers"] = answers
            else:
                results["distilabel_rps"] = None
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
