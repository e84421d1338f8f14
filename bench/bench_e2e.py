"""Benchmark: the whole loop, `datagen run configs/seeds-to-sft.yaml` (what `make seeds-to-sft` runs).

    python bench/bench_e2e.py                                   # the shipped config, ~15 min on 2 cores
    python bench/bench_e2e.py --set self_instruct.num_instructions=3 --set train.max_steps=2 --out e2e.json

Runs the config twice into a fresh folder with a fresh LLM cache: once from nothing (timed, split per stage
from the manifest), then again with ``--resume``, which must run no stage, call no model and leave every
output byte-identical — the "same result" check of this benchmark. Reports, per generator, the curated-record
yield (kept by the filter / generated). The set-up part of `make seeds-to-sft` (venv, pip) is not in here:
it depends on the package cache, not on datagen; the fresh-clone number is in the issue notes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ("self_instruct", "self_instruct_multiturn", "self_qa", "self_kg")


def datagen_run(config: Path, out_dir: Path, cache: Path, overrides: list[str], resume: bool) -> tuple[float, str]:
    command = [
        sys.executable,
        "-m",
        "datagen",
        "run",
        str(config),
        *(["--resume"] if resume else []),
        f"out_dir={out_dir}",
        f"endpoint.cache_path={cache}",
        *overrides,
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"bench_e2e: datagen run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout + done.stderr


def methods(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(
        json.loads(line)["meta"]["method"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    )


def output_hashes(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*.jsonl"))
        if ".state" not in p.parts
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "seeds-to-sft.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, as on the datagen run command line (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        out_dir, cache = Path(tmp) / "outputs", Path(tmp) / "llm-cache.sqlite"
        wall, _ = datagen_run(args.config, out_dir, cache, args.overrides, resume=False)
        (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        before = output_hashes(run_dir)
        resume_wall, resume_log = datagen_run(args.config, out_dir, cache, args.overrides, resume=True)
        resumed = json.loads((run_dir / "manifest.json").read_text())

        curated = methods(run_dir / "filter" / "curated.jsonl")
        yields = {}
        for stage in GENERATORS:
            generated = methods(run_dir / stage / "records.jsonl")
            for method, count in generated.items():
                yields[method] = {
                    "generated": count,
                    "curated": curated.get(method, 0),
                    "yield": round(curated.get(method, 0) / count, 3),
                }
        stages = manifest["stages"]
        llm_calls = {name: (s.get("llm") or {}).get("succeeded") for name, s in stages.items() if s.get("llm")}
        result = {
            "wall_s": round(wall, 1),
            "stage_s": {name: s["seconds"] for name, s in stages.items()},
            "outside_stages_s": round(wall - sum(s["seconds"] for s in stages.values()), 1),
            "llm_requests": llm_calls,
            "yield_per_method": yields,
            "curated_records": sum(curated.values()),
            "resume_wall_s": round(resume_wall, 1),
            "resume_ran_nothing": all(s.get("skipped") for s in resumed["stages"].values()),
            "resume_outputs_identical": output_hashes(run_dir) == before,
            "overrides": args.overrides,
            "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        }
    rows = "\n".join(f"| {name} | {seconds:.0f} |" for name, seconds in result["stage_s"].items())
    result["markdown"] = (
        f"Whole loop from an empty output folder and cache: **{result['wall_s'] / 60:.1f} min** "
        f"(stages below, plus {result['outside_stages_s']:.0f} s of start-up, model loading and report). "
        f"`--resume` afterwards: {result['resume_wall_s']:.0f} s, ran nothing: {result['resume_ran_nothing']}, "
        f"outputs identical: {result['resume_outputs_identical']}.\n\n| stage | seconds |\n| --- | --- |\n{rows}\n\n"
        "| method | generated | curated | yield |\n| --- | --- | --- | --- |\n"
        + "\n".join(f"| {m} | {y['generated']} | {y['curated']} | {y['yield']:.0%} |" for m, y in yields.items())
    )
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps({k: v for k, v in result.items() if k != "markdown"}, indent=2, ensure_ascii=False))
    if not (result["resume_ran_nothing"] and result["resume_outputs_identical"]):
        sys.exit("bench_e2e: --resume changed something; see the JSON")


if __name__ == "__main__":
    main()
