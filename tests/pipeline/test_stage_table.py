"""One stage table (``datagen/stages.py``) that the runner, the report and the command line read, and the
bug fixed on the way: a run with ``train`` but no ``filter`` trained on the first generator's records only.
It now trains on every generator's records, joined in stage order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from datagen.run import TOP_KEYS, fingerprint, load_plan, run_pipeline
from datagen.stages import STAGE, STAGES
from tests.plugins.faults import MODEL_ID

REPO = Path(__file__).resolve().parents[2]


def test_the_runner_reads_its_stages_from_the_table(tmp_path):
    assert TOP_KEYS[4:] == tuple(stage.name for stage in STAGES)
    for stage in STAGES:
        assert stage.load("config").__name__ == stage.config.rpartition(":")[2]
        assert callable(stage.load("run")) and stage.stats in stage.outputs
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "out_dir": str(tmp_path / "out"),
                "filter": {"embed_dedup": False},
                "self_kg": {"graph": str(REPO / "seeds/kg/plants.tsv")},
            }
        )
    )
    plan = load_plan(config)
    assert [(spec, type(cfg).__name__) for spec, cfg in plan.stages] == [
        (STAGE["self_kg"], "SelfKGConfig"),
        (STAGE["filter"], "FilterConfig"),
    ]
    assert plan.stages[0][1].out == plan.run_dir / "self_kg" and plan.stages[1][1].out == plan.run_dir / "filter"


def test_train_without_a_filter_reads_every_generator_in_stage_order(fault_server, tiny_model_dir, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "lava.md").write_text(
        "Magma that reaches the surface of a volcano is called lava. Lava cools into basalt "
        "rock within days, and the rock keeps the shape of the flow.\n",
        encoding="utf-8",
    )

    def responder(kind: str, body: dict) -> str:
        if re.search(r"^Question:", body["messages"][-1]["content"], re.MULTILINE):
            return "Lava is magma that reaches the surface of a volcano."
        return "1. What is magma called once it reaches the surface of a volcano?"

    fault_server.responder = responder
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "both",
                "out_dir": str(tmp_path / "outputs"),
                "endpoint": {"base_url": fault_server.url, "model": MODEL_ID, "cache": False},
                "self_qa": {"docs": str(docs)},
                "self_kg": {"graph": str(REPO / "seeds/kg/plants.tsv"), "num": 4},
                "train": {
                    "base": str(tiny_model_dir),
                    "max_steps": 1,
                    "eval_fraction": 0,
                    "max_seq_len": 64,
                    "per_device_train_batch_size": 2,
                },
            }
        )
    )
    manifest = run_pipeline(config)
    run_dir = tmp_path / "outputs" / "both"
    qa = (run_dir / "self_qa" / "records.jsonl").read_bytes()
    kg = (run_dir / "self_kg" / "records.jsonl").read_bytes()
    assert qa and kg
    summary = json.loads((run_dir / "train" / "train_summary.json").read_text())
    assert summary["data"] == str(run_dir / "train" / "generated.jsonl")
    assert (run_dir / "train" / "generated.jsonl").read_bytes() == qa + kg  # stage order: self_qa, then self_kg
    assert set(manifest["stages"]["train"]["inputs"]) == {"base", "self_qa", "self_kg"}  # both in the fingerprint
    before = fingerprint(STAGE["train"], load_plan(config).stages[-1][1], run_dir)
    (run_dir / "self_kg" / "records.jsonl").write_bytes(kg + kg)
    assert fingerprint(STAGE["train"], load_plan(config).stages[-1][1], run_dir) != before  # any generator counts
