"""The shipped loop, end to end: `datagen run configs/seeds-to-sft.yaml` against the embedded SmolLM2.

Everything is real: the CLI as `make seeds-to-sft` calls it, the bundled model started as a child server,
all three generators, the filter, LoRA training and eval. Only the sizes are shrunk (through the same
``key=value`` overrides a user would type) so the whole run fits in a few minutes of CI on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from datagen.records import iter_json_lines

# Minutes of real generation and training: past the suite's 600 s per-test limit when the box is busy.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
SMALL = (
    "self_instruct.num_instructions=3",
    "self_instruct.batch_size=4",
    "self_instruct.classifier_eval_seeds=2",
    "self_qa.max_chunks=4",
    "self_kg.num=8",
    "train.max_steps=3",
    "train.per_device_train_batch_size=2",
    "train.max_seq_len=128",
    "eval.max_samples=2",
    "eval.max_new_tokens=16",
)


def datagen_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    overrides = (f"out_dir={tmp_path / 'outputs'}", f"endpoint.cache_path={tmp_path / 'llm-cache.sqlite'}", *SMALL)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "datagen", "run", "configs/seeds-to-sft.yaml", *extra, *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def methods(path: Path) -> Counter[str]:
    return Counter(row["meta"]["method"] for _, row in iter_json_lines(path))


def test_seeds_to_sft_config_runs_end_to_end_and_resumes_with_zero_calls(tmp_path):
    first = datagen_run(tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    run_dir = tmp_path / "outputs" / "seeds-to-sft"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"]
    assert list(manifest["stages"]) == ["self_instruct", "self_qa", "self_kg", "filter", "train", "eval"]

    # Every generator produced records, and the filter accounted for each one: kept or rejected with a reason.
    generated = sum(
        (methods(run_dir / stage / "records.jsonl") for stage in ("self_instruct", "self_qa", "self_kg")), Counter()
    )
    assert {"self-instruct", "self-qa", "self-kg"} <= set(generated), generated
    curated, rejects = methods(run_dir / "filter" / "curated.jsonl"), methods(run_dir / "filter" / "rejects.jsonl")
    assert curated + rejects == generated and sum(curated.values()) > 0
    assert all(row["reject"]["reason"] for _, row in iter_json_lines(run_dir / "filter" / "rejects.jsonl"))
    for stage in ("self_instruct", "self_qa"):
        llm = manifest["stages"][stage]["llm"]
        assert llm["succeeded"] > 0 and llm["failed"] == 0, (stage, llm)

    # The loop closed: an adapter trained on the curated data, scored before and after.
    assert (run_dir / "train" / "adapter" / "adapter_config.json").exists()
    summary = json.loads((run_dir / "train" / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["trainable_params"] > 0
    assert summary["eval_loss_after"] is not None and summary["eval_loss_before"] is not None
    eval_files = {p.name for p in (run_dir / "eval").iterdir()}
    assert {"eval.json", "samples.jsonl", "samples.md"} <= eval_files, eval_files
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html and "self-qa" in html and "self-kg" in html

    # Resume: every stage is done with unchanged inputs, so nothing runs and the model is never asked.
    hashes = {p: p.read_bytes() for p in run_dir.rglob("*.jsonl")}
    again = datagen_run(tmp_path, "--resume")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "0 stage(s) ran, 6 skipped" in again.stdout + again.stderr
    assert all(p.read_bytes() == data for p, data in hashes.items())
    resumed = json.loads((run_dir / "manifest.json").read_text())
    assert all(stage.get("skipped") for stage in resumed["stages"].values())
