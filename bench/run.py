"""``make bench``: run every comparison and rewrite docs/BENCHMARKS.md with the numbers.

    python bench/run.py                 # full sizes (about 40-60 minutes on 2 cores, the e2e loop included)
    python bench/run.py --only rouge,client  # re-runs these two; the doc keeps the others' last results
    python bench/run.py --smoke --doc /tmp/B.md   # tiny sizes: checks the harness works (run by make test)

Each benchmark is a script in bench/ that checks both sides produced the same result (same kept set, same
losses within tolerance, one answer per prompt) before it reports a speed, and writes JSON. This file only
runs them one after another (never in parallel: they would measure each other), then renders the JSON with
the machine, package versions and the exact commands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: name -> (script, full-size args, smoke args, what it compares)
BENCHES: dict[str, tuple[str, list[str], list[str], str]] = {
    "rouge": (
        "bench_rouge.py",
        [],
        ["--candidates", "200", "--classic-budget", "5", "--pool-budget", "3", "--sizes", "1000", "--queries", "20"],
        "ROUGE-L pool filter: ours vs rouge_score (single process and alpaca's Pool), 5,000 candidates",
    ),
    "filter": (
        "bench_filter.py",
        [],
        ["--sizes", "300,600", "--encoder-sample", "0"],
        "The filter at size: 10K, 100K, 300K, 1M records with planted duplicates (en+zh), per stage, slopes",
    ),
    "client": (
        "bench_client.py",
        [],
        ["--requests", "200", "--repeats", "1", "--sequential-requests", "10", "--skip-distilabel"],
        "LLM client saturation at concurrency 64 against a fixed 100 ms endpoint",
    ),
    "batch": (
        "bench_batch.py",
        [],
        ["--requests", "300"],
        "Batch mode: write, import and round-trip (test server's Batch API) 100k requests",
    ),
    "kg": (
        "bench_kg.py",
        [],
        ["--triples", "2000", "--entities", "500", "--samples", "50"],
        "Self-KG: load 100k triples and sample 1,000 items",
    ),
    "trainer": (
        "bench_trainer.py",
        [],
        ["--smoke"],
        "Trainer: tokens/s and peak RSS vs trl SFTTrainer, with and without packing",
    ),
    "e2e": (
        "bench_e2e.py",
        [],
        [
            "--set",
            "self_instruct.num_instructions=2",
            "--set",
            "self_qa.max_chunks=2",
            "--set",
            "self_kg.num=4",
            "--set",
            "train.max_steps=2",
            "--set",
            "eval.max_samples=2",
            "--set",
            "eval.max_new_tokens=8",
        ],
        "End to end: `make seeds-to-sft`'s run (configs/seeds-to-sft.yaml), split per stage, yield per generator",
    ),
    "quality": (
        "bench_quality.py",
        [],
        ["--no-doc", "--no-embed"],
        "Curation quality: sound records kept and planted defects caught by the filter (details: docs/QUALITY.md)",
    ),
    "classify": (
        "bench_classify.py",
        [],
        ["--no-model-vote"],
        "Classification decision vs human labels: seeds leave-one-out and the held-out set, model vote SmolLM2",
    ),
}
PACKAGES = (
    "datagen",
    "torch",
    "transformers",
    "peft",
    "trl",
    "rouge-score",
    "rapidfuzz",
    "sentence-transformers",
    "faiss-cpu",
    "openai",
    "aiohttp",
    "distilabel",
    "networkx",
)


def machine() -> dict[str, str]:
    cpu = ""
    try:
        cpu = next(
            l.split(":", 1)[1].strip()
            for l in Path("/proc/cpuinfo").read_text().splitlines()
            if l.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kb = int(
            next(l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        )
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_bench(name: str, smoke: bool, results_dir: Path) -> dict:
    script, full, small, _ = BENCHES[name]
    out = results_dir / f"{name}.json"
    command = [sys.executable, f"bench/{script}", *(small if smoke else full), "--out", str(out)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    entry = {
        "command": " ".join(["python", *command[1:]]),
        "seconds": round(time.monotonic() - started, 1),
        "returncode": done.returncode,
    }
    if done.returncode != 0 or not out.exists():
        entry["error"] = (done.stderr or done.stdout)[-2000:]
        return entry
    entry["result"] = json.loads(out.read_text())
    return entry


def earlier_entries(results_dir: Path, skip: list[str]) -> dict[str, dict]:
    """Entries that an earlier `bench/run.py` left in ``results_dir``, for the benchmarks not run now, so that
    `--only trainer` refreshes one section of the doc instead of dropping the others."""
    earlier = {}
    for name in BENCHES:
        path = results_dir / f"{name}.entry.json"
        if name not in skip and path.exists():
            earlier[name] = json.loads(path.read_text())
    return earlier


def _rows(data: object, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten JSON into (key, value) rows; long lists are summarised."""
    rows: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            rows += _rows(value, f"{prefix}{key}.")
    elif isinstance(data, list) and data and all(isinstance(x, dict) for x in data) and len(data) <= 12:
        for i, value in enumerate(data):
            rows += _rows(value, f"{prefix}{i}.")
    elif isinstance(data, list) and len(data) > 12:
        rows.append((prefix.rstrip("."), f"[{len(data)} items]"))
    else:
        rows.append((prefix.rstrip("."), json.dumps(data) if not isinstance(data, str) else data))
    return rows


def render(results: dict, info: dict, smoke: bool) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python bench/run.py`); do not edit by hand. Each comparison runs both sides "
        "in one process tree on the same machine and data, and checks they produced the same result before "
        "reporting a speed." + (" **Smoke run: tiny sizes, numbers mean nothing.**" if smoke else ""),
        "",
        f"- date: {info['date']}",
        *(f"- {k}: {v}" for k, v in info["machine"].items()),
        "",
        "Package versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        "",
    ]
    for name, entry in results.items():
        lines += [
            f"## {name}: {BENCHES[name][3]}",
            "",
            f"`{entry['command']}` ({entry['seconds']} s, run {entry.get('date', info['date'])}, load average "
            f"{entry.get('load_before', info['machine']['load_before'])} before it)",
            "",
        ]
        if "error" in entry:
            lines += ["Failed:", "", "```", entry["error"].strip(), "```", ""]
            continue
        summary = entry["result"].get("markdown") if isinstance(entry["result"], dict) else None
        if summary:
            lines += [summary.strip(), ""]
        lines += ["| key | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in _rows({k: v for k, v in entry["result"].items() if k != "markdown"})]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset of " + ", ".join(BENCHES))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the harness")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--results", type=Path, default=ROOT / "outputs" / "bench")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHES)}")
    args.results.mkdir(parents=True, exist_ok=True)
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(), "versions": versions()}
    results = {}
    for name in names:
        print(f"bench: {name} …", flush=True)
        load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results[name] = {**run_bench(name, args.smoke, args.results), "load_before": load_before, "date": started}
        if not args.smoke:
            (args.results / f"{name}.entry.json").write_text(json.dumps(results[name], ensure_ascii=False))
        print(
            f"bench: {name} {'failed' if 'error' in results[name] else 'done'} in {results[name]['seconds']} s",
            flush=True,
        )
    shown = results if args.smoke else {**earlier_entries(args.results, names), **results}
    shown = {name: shown[name] for name in BENCHES if name in shown}  # the doc's order, whatever ran
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.doc.with_suffix(".tmp")
    tmp.write_text(render(shown, info, args.smoke), encoding="utf-8")
    tmp.replace(args.doc)
    print(f"wrote {args.doc}")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
