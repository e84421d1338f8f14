"""datagen.step over real HTTP (the fault server): a half-written step log is completed without asking a
settled key again; failures are asked again or replayed as ``keep`` says; a log of other settings is refused."""

from __future__ import annotations

import asyncio
import json

import pytest

from datagen.errors import ConfigError
from datagen.llm.client import LLMClient, LLMConfig, SamplingParams
from datagen.step import Step, answer_row, ask
from tests.plugins.faults import MODEL_ID

PROMPTS = [f"Name fruit number {i}." for i in range(6)]
PARAMS = SamplingParams(max_tokens=16)


def llm_config(url: str) -> LLMConfig:
    # No cache: every request the step sends reaches the server, so the server's log counts them.
    return LLMConfig(base_urls=(url,), model=MODEL_ID, cache=False, max_retries=1, backoff_base=0.01)


async def answer(url: str, out, prompts: list[str], keep="default") -> int:
    kwargs = {} if keep == "default" else {"keep": keep}
    async with LLMClient(llm_config(url)) as llm:
        with Step(out, "fruit", **kwargs) as step:
            return await step.answer(
                prompts,
                key=lambda p: p,
                ask=lambda p: ask(llm, "chat", [{"role": "user", "content": p}], PARAMS),
                row=lambda p, result: answer_row(p, result, n=len(p)),
                limit=3,
                desc=None,
            )


def log_rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / ".state" / "fruit.jsonl").read_text().splitlines()]


def test_a_half_written_log_is_completed_without_asking_settled_keys_again(fault_server, tmp_path):
    assert asyncio.run(answer(fault_server.url, tmp_path, PROMPTS[:3])) == 0
    first = {row["key"]: row for row in log_rows(tmp_path)}
    with open(tmp_path / ".state" / "fruit.jsonl", "a") as f:
        f.write('{"key": "Name fruit number 3.", "te')  # killed mid-row: a torn last line
    fault_server.reset()

    assert asyncio.run(answer(fault_server.url, tmp_path, PROMPTS)) == 3
    assert sorted(fault_server.answered()) == PROMPTS[3:]  # each missing key asked once, no settled one
    assert all(n == 1 for n in fault_server.answered().values())
    rows = log_rows(tmp_path)  # the torn line is gone; every row whole
    keys = [row["key"] for row in rows]
    assert sorted(keys[:3]) == PROMPTS[:3] and sorted(keys[3:]) == PROMPTS[3:]
    assert {row["key"]: row for row in rows if row["key"] in first} == first
    assert all(row["model"] == MODEL_ID and row["n"] == len(row["key"]) and row["text"] for row in rows)

    fault_server.reset()
    assert asyncio.run(answer(fault_server.url, tmp_path, PROMPTS)) == 6  # all settled: nothing asked
    assert not fault_server.answered()


@pytest.mark.parametrize("keep, asked_again", [("default", True), (None, False)])
def test_a_failed_request_is_a_row_asked_again_or_replayed(fault_server, tmp_path, keep, asked_again):
    fault_server.plan.script = {PROMPTS[1]: ["500", "500"]}  # the first try and the one retry fail
    asyncio.run(answer(fault_server.url, tmp_path, PROMPTS[:2], keep))
    (failed,) = [row for row in log_rows(tmp_path) if row["key"] == PROMPTS[1]]
    assert failed["llm_failed"] is True and failed["reason"] and failed["n"] == len(PROMPTS[1])
    assert "text" not in failed

    fault_server.reset()
    resumed = asyncio.run(answer(fault_server.url, tmp_path, PROMPTS[:2], keep))
    assert resumed == (1 if asked_again else 2)
    assert sorted(fault_server.answered()) == ([PROMPTS[1]] if asked_again else [])
    last = [row for row in log_rows(tmp_path) if row["key"] == PROMPTS[1]][-1]
    assert ("text" in last) is asked_again


def test_answer_one_replays_a_logged_row_and_refuses_a_changed_request(fault_server, tmp_path):
    async def one(digest: str) -> dict:
        async with LLMClient(llm_config(fault_server.url)) as llm:
            with Step(tmp_path, "turns", keep=None) as step:
                return await step.answer_one(
                    "c0|t0", lambda: ask(llm, "completion", "Once upon", PARAMS), digest=digest, failed_as="error"
                )

    row = asyncio.run(one("d1"))
    assert row["key"] == "c0|t0" and row["prompt"] == "d1" and row["text"]
    fault_server.reset()
    assert asyncio.run(one("d1")) == row and not fault_server.answered()
    with pytest.raises(ConfigError, match="other seeds or settings"):
        asyncio.run(one("d2"))
