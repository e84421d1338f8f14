"""Batch mode against the fault server's Batch API: one job per step, shared cache, resume, faults, file mode."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.llm.batch import JOURNAL, BatchJournal, read_results, split_lines
from datagen.llm.client import LLMClient, LLMConfig, SamplingParams, map_bounded
from datagen.records import Example, read_examples, write_jsonl
from tests.plugins.faults import MODEL_ID, completion_body

PARAMS = SamplingParams(max_tokens=16, temperature=0.0)


def config(fault_server, tmp_path, **overrides) -> LLMConfig:
    values = {
        "base_urls": (fault_server.url,),
        "model": MODEL_ID,
        "batch": "on",
        "poll_interval": 0.05,
        "cache_path": tmp_path / "cache.sqlite",
        "max_retries": 2,
        **overrides,
    }
    return LLMConfig(**values)


async def ask_all(cfg: LLMConfig, texts: list[str]) -> tuple[dict[str, str], LLMClient]:
    """Every text as a chat request through a batch-mode client, gathered the way stages gather them."""
    answers: dict[str, str] = {}
    async with LLMClient(cfg) as llm:

        async def one(text):
            return await llm.chat([{"role": "user", "content": text}], PARAMS)

        async for text, result in map_bounded(one, texts, limit=cfg.gather_limit):
            answers[text] = result if isinstance(result, BaseException) else result.text
    return answers, llm


def questions(n: int) -> list[str]:
    return [f"Batch question {i}?" for i in range(n)]


def test_one_step_is_one_job_and_a_second_run_calls_nothing(fault_server, tmp_path):
    cfg = config(fault_server, tmp_path)
    answers, llm = asyncio.run(ask_all(cfg, questions(20)))
    state = fault_server.batches
    assert (state.uploads, state.creates) == (1, 1)
    assert not fault_server.log  # zero online requests
    assert all(answers[q].endswith(f"to: {q}") for q in questions(20))
    assert llm.ledger.batch_requests == 20 and llm.ledger.batch_succeeded == 20 and llm.ledger.requests == 0
    # the ledger's tokens are the sum of what the jobs reported
    assert llm.ledger.batch_prompt_tokens == state.usage["prompt_tokens"]
    assert llm.ledger.batch_completion_tokens == state.usage["completion_tokens"]

    again, llm2 = asyncio.run(ask_all(cfg, questions(20)))
    assert again == answers and (state.uploads, state.polls) == (1, state.polls) and not fault_server.log
    assert llm2.ledger.cached == 20 and llm2.ledger.batch_requests == 0


def test_online_and_batch_runs_share_the_cache_both_ways(fault_server, tmp_path):
    online = config(fault_server, tmp_path, batch="off")
    first, _ = asyncio.run(ask_all(online, questions(4)))
    assert len(fault_server.log) == 4
    both, _ = asyncio.run(ask_all(config(fault_server, tmp_path), questions(6)))
    assert fault_server.batches.creates == 1
    assert fault_server.batches.files["file-0"].count(b"\n") == 2  # only the 2 requests not cached yet
    assert {q: both[q] for q in questions(4)} == first
    fault_server.log.clear()
    replay, llm = asyncio.run(ask_all(online, questions(6)))
    assert replay == both and not fault_server.log and llm.ledger.cached == 6


def test_batch_lines_are_the_online_request_bodies(fault_server, tmp_path):
    asyncio.run(ask_all(config(fault_server, tmp_path, batch="off"), ["Same body?"]))
    online_body = fault_server.log[0]["body"]
    asyncio.run(ask_all(config(fault_server, tmp_path, cache_path=tmp_path / "other.sqlite"), ["Same body?"]))
    line = json.loads(fault_server.batches.files["file-0"])
    assert line["body"] == online_body and line["url"] == "/v1/chat/completions" and line["method"] == "POST"


def test_failed_lines_alone_are_resubmitted(fault_server, tmp_path):
    fault_server.batches.plan.fail_rate = 0.1
    answers, llm = asyncio.run(ask_all(config(fault_server, tmp_path), questions(60)))
    state = fault_server.batches
    first, second = state.jobs.values()
    failed = first["request_counts"]["failed"]
    assert 1 <= failed <= 15
    assert second["request_counts"]["total"] == failed  # only the failed lines went again
    assert all(not isinstance(a, BaseException) for a in answers.values()) and len(answers) == 60
    assert llm.ledger.batch_requests == 60 + failed and llm.ledger.batch_succeeded == 60


def test_an_expired_job_resubmits_only_what_it_left_unanswered(fault_server, tmp_path):
    fault_server.batches.plan.expire_share = 0.5
    answers, _ = asyncio.run(ask_all(config(fault_server, tmp_path), questions(10)))
    jobs = list(fault_server.batches.jobs.values())
    assert [j["status"] for j in jobs] == ["expired", "completed"]
    assert jobs[1]["request_counts"]["total"] == 5
    assert all(answers[q].endswith(f"to: {q}") for q in questions(10))


def test_requests_no_job_answers_fail_after_the_attempt_budget(fault_server, tmp_path):
    fault_server.batches.plan.fail_validation = True
    fault_server.batches.plan.expire_share = None
    cfg = config(fault_server, tmp_path, batch_max_attempts=1)
    answers, llm = asyncio.run(ask_all(cfg, questions(3)))
    assert all(isinstance(a, BaseException) and a.reason == "batch_failed" for a in answers.values())
    assert llm.ledger.batch_failed == 3


def test_files_split_at_the_configured_limits(fault_server, tmp_path):
    answers, llm = asyncio.run(ask_all(config(fault_server, tmp_path, batch_max_requests=3), questions(7)))
    assert [j["request_counts"]["total"] for j in fault_server.batches.jobs.values()] == [3, 3, 1]
    assert len(answers) == 7 and len(llm.ledger.batches) == 3
    assert [len(p.splitlines()) for p in split_lines([b"x" * 10] * 5, 100, 25)] == [2, 2, 1]


def test_a_killed_run_reattaches_to_its_job_without_uploading_again(fault_server, tmp_path):
    plan = fault_server.batches.plan
    plan.running_polls = 10_000  # the job runs "forever" while the first client waits

    async def killed():
        task = asyncio.ensure_future(ask_all(config(fault_server, tmp_path), questions(5)))
        while not (tmp_path / JOURNAL).exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(killed())
    assert fault_server.batches.uploads == 1
    journal = BatchJournal(tmp_path / JOURNAL)
    assert list(journal.jobs) == ["batch-1"] and not journal.jobs["batch-1"]["imported"]

    plan.running_polls = 0
    answers, llm = asyncio.run(ask_all(config(fault_server, tmp_path), questions(5)))
    assert fault_server.batches.uploads == 1 and fault_server.batches.creates == 1  # re-attached
    assert all(answers[q].endswith(f"to: {q}") for q in questions(5)) and llm.ledger.batch_requests == 0
    assert BatchJournal(tmp_path / JOURNAL).jobs["batch-1"]["imported"]


def test_polling_survives_server_errors(fault_server, tmp_path):
    fault_server.batches.plan.poll_faults = [503, 502, 500]
    fault_server.batches.plan.validating_polls = 2
    answers, _ = asyncio.run(ask_all(config(fault_server, tmp_path), questions(3)))
    assert all(answers[q].endswith(f"to: {q}") for q in questions(3))


def test_read_results_splits_answers_from_failures():
    data = (
        b'{"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}}\n'
        b'{"custom_id": "b", "response": {"status_code": 500, "body": null}, "error": null}\n'
        b'{"custom_id": "c", "response": null, "error": {"message": "boom"}}\nnot json\n'
    )
    answers, failures = read_results(data)
    assert list(answers) == ["a"] and failures == {"b": "status 500", "c": "boom"}


# ---------------------------------------------------------------------------------------------- the CLI


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def respond(fault_server, tmp_path, out, *extra):
    return invoke(
        "respond",
        "--in",
        tmp_path / "in.jsonl",
        "--out",
        tmp_path / out,
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        "--cache-path",
        tmp_path / f"{out}.sqlite",
        *extra,
    )


def test_respond_batch_writes_what_online_mode_writes(fault_server, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [Example(instruction=q, output="") for q in questions(8)])
    online = respond(fault_server, tmp_path, "online")
    assert online.exit_code == 0, online.output
    fault_server.log.clear()
    batch = respond(fault_server, tmp_path, "batch", "--batch")
    assert batch.exit_code == 0, batch.output
    assert not fault_server.log and fault_server.batches.creates == 1
    assert [e.to_dict() for e in read_examples(tmp_path / "batch" / "responses.jsonl")] == [
        e.to_dict() for e in read_examples(tmp_path / "online" / "responses.jsonl")
    ]
    stats = json.loads((tmp_path / "batch" / "stats.json").read_text())
    assert stats["llm"]["batch_succeeded"] == 8 and stats["llm"]["batches"] == ["batch-1"]


def test_an_endpoint_without_batches_is_refused_before_any_upload(fault_server, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [Example(instruction=q, output="") for q in questions(3)])
    fault_server.batches.plan.supported = False
    result = respond(fault_server, tmp_path, "out", "--batch")
    assert result.exit_code == 2 and "has no /batches endpoint" in result.output
    assert fault_server.batches.uploads == 0 and not fault_server.log
    assert not (tmp_path / "out" / "responses.jsonl").exists()

    auto = respond(fault_server, tmp_path, "out", "--batch=auto")  # falls back to online requests
    assert auto.exit_code == 0, auto.output
    assert len(fault_server.log) == 3 and fault_server.batches.uploads == 0


def test_file_mode_export_import_resume_round_trip(fault_server, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [Example(instruction=q, output="") for q in questions(5)])
    requests = tmp_path / "requests.jsonl"
    waiting = respond(fault_server, tmp_path, "out", "--batch=file", "--batch-file", requests)
    assert waiting.exit_code == 3 and "wrote 5 pending request(s)" in waiting.output
    assert not (tmp_path / "out" / "responses.jsonl").exists() and not fault_server.log

    # run the file the way vllm run-batch would, writing OpenAI-format result lines
    results = tmp_path / "results.jsonl"
    lines = [json.loads(raw) for raw in requests.read_text().splitlines()]
    results.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"r{i}",
                    "custom_id": line["custom_id"],
                    "error": None,
                    "response": {"status_code": 200, "body": completion_body(fault_server, "chat", line["body"])},
                }
            )
            + "\n"
            for i, line in enumerate(lines)
        )
    )
    imported = invoke("batch", "import", results, "--cache-path", tmp_path / "out.sqlite")
    assert imported.exit_code == 0 and "imported 5 answer(s)" in imported.output

    done = respond(fault_server, tmp_path, "out", "--batch=file", "--batch-file", requests)
    assert done.exit_code == 0, done.output
    kept = read_examples(tmp_path / "out" / "responses.jsonl")
    assert [e.instruction for e in kept] == questions(5)
    assert all(e.output.endswith(f"to: {e.instruction}") for e in kept)
    assert not fault_server.log  # nothing was ever sent online


# ---------------------------------------------------------------------------------------------- cost


def test_the_ledger_prices_online_and_batch_tokens_with_the_discount(fault_server, tmp_path):
    prices = {MODEL_ID: {"input": 2.0, "output": 8.0}}
    _, online = asyncio.run(ask_all(config(fault_server, tmp_path, batch="off", prices=prices), questions(4)))
    expected = (online.ledger.prompt_tokens * 2.0 + online.ledger.completion_tokens * 8.0) / 1e6
    assert online.ledger.cost_usd == pytest.approx(expected) and online.ledger.batch_cost_usd is None
    _, batch = asyncio.run(ask_all(config(fault_server, tmp_path, prices=prices), questions(8)))
    state = fault_server.batches.usage
    expected = (state["prompt_tokens"] * 2.0 + state["completion_tokens"] * 8.0) / 1e6 * 0.5
    assert batch.ledger.batch_cost_usd == pytest.approx(expected) == batch.ledger.cost_usd


def test_max_cost_stops_before_crossing_and_a_rerun_pays_only_the_rest(fault_server, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [Example(instruction=q, output="") for q in questions(10)])
    (tmp_path / "prices.yaml").write_text(f"{MODEL_ID}: {{input: 1000.0, output: 1000.0}}\n")
    # each request's upper bound: ~20 prompt tokens + 16 max_tokens ≈ 0.036 USD at 1000 USD per million
    args = ["--prices", tmp_path / "prices.yaml", "--max-tokens", "16", "--concurrency", "1"]
    stopped = respond(fault_server, tmp_path, "out", *args, "--max-cost", "0.1")
    assert stopped.exit_code == 1 and "stopped before spending more than max_cost 0.1 USD" in stopped.output
    paid = len(fault_server.log)
    assert 1 <= paid < 10 and not (tmp_path / "out" / "responses.jsonl").exists()
    spent = sum(e["body"]["max_tokens"] for e in fault_server.log)  # completion tokens can't exceed this
    assert spent <= 0.1 / 1000 * 1e6

    fault_server.log.clear()
    done = respond(fault_server, tmp_path, "out", *args, "--max-cost", "10")
    assert done.exit_code == 0, done.output
    assert len(fault_server.log) == 10 - paid  # the answers already paid for came from the cache
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert 0 < stats["llm"]["cost_usd"] <= 10


def test_max_cost_without_prices_is_a_config_error(fault_server, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [Example(instruction="Q?", output="")])
    result = respond(fault_server, tmp_path, "out", "--max-cost", "1")
    assert result.exit_code == 2 and "needs prices" in result.output and not fault_server.log


def test_a_run_config_turns_batch_mode_and_prices_on(tmp_path):
    from datagen.run import load_plan

    (tmp_path / "seeds.jsonl").write_text(
        '{"id": "s1", "name": "s1", "instruction": "Name a prime.", '
        '"instances": [{"input": "", "output": "7"}], "is_classification": false}\n'
    )
    (tmp_path / "run.yaml").write_text(
        f"name: b\nout_dir: {tmp_path}\n"
        "endpoint: {base_url: 'http://127.0.0.1:9/v1', batch: true, completion_window: 24h, poll_interval: 5}\n"
        "prices: {gpt-x: {input: 0.15, output: 0.6}}\n"
        f"self_instruct: {{seeds: {tmp_path / 'seeds.jsonl'}, num_instructions: 2}}\n"
    )
    plan = load_plan(tmp_path / "run.yaml")
    llm = plan.stages[0][1].llm
    assert (llm.batch, llm.poll_interval, llm.gather_limit) == ("on", 5.0, 50_000)
    assert llm.prices == {"gpt-x": {"input": 0.15, "output": 0.6}}
    with pytest.raises(Exception, match="batch must be one of"):
        load_plan(tmp_path / "run.yaml", ("endpoint.batch=sometimes",))
