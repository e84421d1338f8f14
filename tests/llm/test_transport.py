"""Sender processes: errors cross the process boundary intact, a dead sender is replaced, none outlives the client."""

from __future__ import annotations

import asyncio
import pickle
import random
from pathlib import Path

from datagen.errors import LLMRateLimited, LLMRequestError
from datagen.llm.client import LLMClient, LLMConfig
from datagen.llm.transport import ProcessTransport, Retryable
from tests.conftest import PLANTED_API_KEY
from tests.plugins.faults import MODEL_ID

FAST = dict(backoff_base=0.01, backoff_max=0.05, retry_after_max=2.0)


def client(url: str, tmp_path: Path, **overrides) -> LLMClient:
    settings = dict(base_urls=(url,), model=MODEL_ID, cache_path=tmp_path / "cache.sqlite", processes=2, **FAST)
    settings.update(overrides)
    return LLMClient(LLMConfig(**settings), rng=random.Random(0))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_errors_keep_their_type_status_and_retry_after_through_pickle():
    retry = pickle.loads(pickle.dumps(Retryable(LLMRateLimited("HTTP 429: slow down", status=429), 1.5)))
    assert isinstance(retry.error, LLMRateLimited) and retry.error.status == 429 and retry.retry_after == 1.5
    assert str(retry) == "HTTP 429: slow down"
    fatal = pickle.loads(pickle.dumps(LLMRequestError("HTTP 404: no such model", status=404)))
    assert isinstance(fatal, LLMRequestError) and fatal.status == 404 and str(fatal) == "HTTP 404: no such model"


def test_a_killed_sender_is_replaced_and_its_requests_retried(fault_server, tmp_path):
    fault_server.plan.latency = 0.4

    async def go():
        async with client(fault_server.url, tmp_path) as llm:
            transport = llm._transport
            assert isinstance(transport, ProcessTransport)
            asking = asyncio.gather(*[llm.chat(user(f"k{i}")) for i in range(8)])
            while sum(len(s.pending) for s in transport._senders) < 8:  # all 8 handed to the 2 senders
                await asyncio.sleep(0.02)
            victim = transport._senders[0]
            assert victim.pending  # it holds requests it will never answer
            victim.process.kill()
            answers = await asyncio.wait_for(asking, timeout=30)
            senders = [s.process.pid for s in transport._senders if s.alive]
            return answers, llm.ledger, victim.process.pid, senders, transport._senders

    answers, ledger, victim_pid, live, senders = asyncio.run(go())
    assert [a.text.endswith(f"to: k{i}") for i, a in enumerate(answers)] == [True] * 8
    assert ledger.failed == 0 and ledger.errors.get("connection", 0) >= 1 and ledger.succeeded == 8
    assert len(live) == 2 and victim_pid not in live  # a new sender took the dead one's place
    assert all(s.process.returncode is not None for s in senders)  # and none outlived the client


def test_senders_get_the_key_from_the_environment_not_their_command_line(fault_server, tmp_path, monkeypatch):
    monkeypatch.setenv("DATAGEN_API_KEY", PLANTED_API_KEY)
    fault_server.plan.require_key = PLANTED_API_KEY

    async def go():
        async with client(fault_server.url, tmp_path) as llm:
            answer = await llm.chat(user("keyed"))
            cmdlines = [Path(f"/proc/{s.process.pid}/cmdline").read_bytes() for s in llm._transport._senders]
            return answer, cmdlines

    answer, cmdlines = asyncio.run(go())
    assert answer.text.endswith("to: keyed") and fault_server.log[-1]["auth"] == f"Bearer {PLANTED_API_KEY}"
    assert len(cmdlines) == 2 and all(
        b"datagen.llm.transport" in c and PLANTED_API_KEY.encode() not in c for c in cmdlines
    )


def test_a_sender_that_cannot_start_is_a_clear_error(fault_server, tmp_path, monkeypatch):
    import sys

    import pytest

    from datagen.errors import LLMConnectionError

    monkeypatch.setattr(sys, "executable", "/bin/false")  # exits at once, says nothing

    async def go():
        async with client(fault_server.url, tmp_path):
            pass

    with pytest.raises(LLMConnectionError, match="failed to start"):
        asyncio.run(go())
    assert fault_server.log == []
