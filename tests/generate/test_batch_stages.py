"""A multi-step stage in batch mode: one batch job per step, the same records as online mode."""

from __future__ import annotations

import json

from datagen.records import read_examples
from tests.generate.test_self_qa import docs, fix_doc_ids, run_cli, scripted  # noqa: F401 - docs is a fixture


def test_self_qa_submits_one_job_per_step_and_writes_what_online_mode_writes(fault_server, docs, tmp_path):  # noqa: F811
    fault_server.responder = scripted
    online = run_cli(docs, tmp_path / "online", fault_server.url, "--cache-path", tmp_path / "online.sqlite")
    assert online.exit_code == 0, online.output
    fault_server.log.clear()

    batch = run_cli(docs, tmp_path / "batch", fault_server.url, "--cache-path", tmp_path / "batch.sqlite", "--batch")
    assert batch.exit_code == 0, batch.output
    jobs = list(fault_server.batches.jobs.values())
    assert len(jobs) == 2 and not fault_server.log  # questions, then answers; nothing online
    lines = fault_server.batches.files[jobs[0]["input_file_id"]].decode().splitlines()
    prompts = [json.loads(line)["body"]["messages"][-1]["content"] for line in lines]
    assert all("new questions" in p or "个新问题" in p for p in prompts)  # the first job is the question step
    for name in ("records.jsonl", "rejects.jsonl"):
        assert fix_doc_ids(read_examples(tmp_path / "batch" / name)) == fix_doc_ids(
            read_examples(tmp_path / "online" / name)
        )
    stats = json.loads((tmp_path / "batch" / "stats.json").read_text())
    assert stats["llm"]["batch_succeeded"] == sum(j["request_counts"]["completed"] for j in jobs)
