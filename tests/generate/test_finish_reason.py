"""Every generator and `respond` record ``meta.finish_reason`` of the answer each record keeps (the filter's
truncation rule reads it first), against the fault server."""

from __future__ import annotations

import asyncio

from datagen.generate import multiturn, self_instruct, self_kg
from datagen.records import Example, read_examples, write_jsonl
from tests.generate.test_multiturn import config as multiturn_config
from tests.generate.test_multiturn import scripted as multiturn_scripted
from tests.generate.test_respond import ARGS as RESPOND_ARGS
from tests.generate.test_respond import invoke
from tests.generate.test_self_instruct import config as si_config
from tests.generate.test_self_instruct import scripted as si_scripted
from tests.generate.test_self_kg import faithful, kg, llm_cfg  # noqa: F401  (kg is a fixture)
from tests.generate.test_self_qa import docs, run_cli  # noqa: F401  (docs is a fixture)
from tests.generate.test_self_qa import scripted as qa_scripted


def test_self_instruct_records_the_kept_instance_finish_reason(fault_server, tmp_path):
    base = si_scripted()

    def respond(kind, body):
        answer = base(kind, body)
        if "Come up with examples" in body.get("prompt", ""):
            return answer + "\nExample 3\nInput: cut", "length"  # the reply ran out; its last instance is dropped
        return answer

    fault_server.responder = respond
    asyncio.run(self_instruct.generate(si_config(tmp_path, fault_server.url, num_instructions=4, batch_size=2)))
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert records and all(r.meta["finish_reason"] == "stop" for r in records)
    input_first = [r for r in records if not r.is_classification]
    assert input_first and all(r.meta["response_finish_reason"] == "length" for r in input_first)
    assert all(r.meta["response_finish_reason"] == "stop" for r in records if r.is_classification)


def test_multiturn_records_the_last_and_every_assistant_finish_reason(fault_server, tmp_path):
    fault_server.responder = multiturn_scripted()
    asyncio.run(multiturn.generate(multiturn_config(tmp_path, fault_server.url, num_conversations=3)))
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert records
    for record in records:
        assistants = [m for m in record.messages if m["role"] == "assistant"]
        assert record.meta["finish_reason"] == "stop"
        assert record.meta["finish_reasons"] == ["stop"] * len(assistants)


def test_self_qa_records_the_answer_finish_reason(fault_server, docs, tmp_path):  # noqa: F811
    fault_server.responder = qa_scripted
    assert run_cli(docs, tmp_path / "out", fault_server.url).exit_code == 0
    kept = read_examples(tmp_path / "out" / "records.jsonl")
    assert kept and all(r.meta["finish_reason"] == "stop" for r in kept)
    truncated = [r for r in read_examples(tmp_path / "out" / "rejects.jsonl") if r.reject["reason"] == "truncated"]
    assert truncated and all(r.meta["finish_reason"] == "length" for r in truncated)


def test_self_kg_llm_mode_records_the_answer_finish_reason(kg, tmp_path, fault_server):  # noqa: F811
    calls = {"n": 0}

    def respond(kind, body):
        calls["n"] += 1
        text = faithful(kind, body)
        if calls["n"] % 3 == 0:  # ran on past a complete answer: the kept answer itself was not cut
            return text + "\nQuestion: And", "length"
        return text

    fault_server.responder = respond
    asyncio.run(self_kg.generate(llm_cfg(kg, tmp_path / "out", fault_server.url, num=9)))
    kept = read_examples(tmp_path / "out" / "records.jsonl")
    assert len(kept) >= 6 and all(r.meta["finish_reason"] == "stop" for r in kept)


def test_respond_records_the_finish_reason(fault_server, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [Example(instruction=f"Question number {i}?", output="") for i in range(3)])
    result = invoke(
        "respond",
        "--in",
        tmp_path / "in.jsonl",
        "--out",
        tmp_path / "out",
        "--base-url",
        fault_server.url,
        *RESPOND_ARGS,
    )
    assert result.exit_code == 0, result.output
    kept = read_examples(tmp_path / "out" / "responses.jsonl")
    assert len(kept) == 3 and all(r.meta["finish_reason"] == "stop" for r in kept)
