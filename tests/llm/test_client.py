"""The async client against the fault-injecting server: real HTTP, injected failures, counted requests."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import pytest

from datagen.errors import CircuitOpen, ConfigError, LLMRequestError, LLMServerError, LLMTimeout
from datagen.llm.client import LLMClient, LLMConfig, SamplingParams, map_bounded
from datagen.llm.transport import parse_retry_after
from tests.conftest import PLANTED_API_KEY
from tests.plugins.faults import MODEL_ID

FAST = dict(backoff_base=0.01, backoff_max=0.05, retry_after_max=2.0)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=[1, 2], ids=["in-process", "2-sender-processes"])
def processes(request) -> int:
    """Tests that take this run twice: the SDK in the client's own event loop, and in sender processes."""
    return request.param


def make_client(url: str, tmp_path, **overrides) -> LLMClient:
    settings = dict(base_urls=(url,), cache_path=tmp_path / "cache.sqlite", **FAST)
    settings.update(overrides)
    return LLMClient(LLMConfig(**settings), rng=random.Random(0))


def test_chat_and_completion_roundtrip_with_usage(fault_server, tmp_path, processes):
    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes) as llm:
            chat = await llm.chat(user("Name a prime."), SamplingParams(max_tokens=8))
            text = await llm.complete("1. apples\n2.", SamplingParams(max_tokens=8))
            return chat, text, llm.ledger

    chat, text, ledger = run(go())
    assert chat.text.endswith("to: Name a prime.") and chat.finish_reason == "stop" and not chat.truncated
    assert chat.model == MODEL_ID  # discovered through /v1/models
    assert text.text.endswith("to: 1. apples\n2.")
    assert chat.completion_tokens > 0 and chat.prompt_tokens > 0
    assert (
        ledger.succeeded == 2
        and ledger.requests == 2
        and ledger.prompt_tokens == chat.prompt_tokens + text.prompt_tokens
    )
    body = fault_server.log[0]["body"]
    assert body["max_tokens"] == 8 and body["model"] == MODEL_ID and body["messages"] == user("Name a prime.")


def test_cache_replays_without_calling_and_separates_samples(fault_server, tmp_path):
    async def go():
        async with make_client(fault_server.url, tmp_path) as llm:
            first = await llm.chat(user("cache me"))
            again = await llm.chat(user("cache me"))
            other_sample = await llm.chat(user("cache me"), sample_index=1)
            return first, again, other_sample, llm.ledger

    first, again, other, ledger = run(go())
    assert again.cached and not first.cached and again.text == first.text
    assert not other.cached
    assert fault_server.requests_for("cache me") == 2
    assert ledger.cached == 1 and ledger.succeeded == 2

    async def later_run():  # a new process with the same cache file pays nothing
        async with make_client(fault_server.url, tmp_path) as llm:
            return await llm.chat(user("cache me")), llm.ledger

    replay, ledger2 = run(later_run())
    assert replay.cached and ledger2.requests == 0 and fault_server.requests_for("cache me") == 2


def test_seed_is_offset_by_sample_index(fault_server, tmp_path):
    async def go():
        async with make_client(fault_server.url, tmp_path) as llm:
            for k in range(3):
                await llm.chat(user("seeded"), SamplingParams(seed=100), sample_index=k)

    run(go())
    assert [e["body"]["seed"] for e in fault_server.log] == [100, 101, 102]


def test_every_retryable_fault_is_retried_until_success(fault_server, tmp_path, processes):
    steps = ["429_plain", "500", "502", "503", "reset", "malformed", "empty_choices", "ok"]
    fault_server.plan.script = {"flaky": steps}

    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes, max_retries=10) as llm:
            return await llm.chat(user("flaky")), llm.ledger

    answer, ledger = run(go())
    assert answer.attempts == len(steps) and answer.text.endswith("to: flaky")
    assert fault_server.requests_for("flaky") == len(steps)
    assert ledger.retries == len(steps) - 1 and ledger.failed == 0
    assert ledger.errors == {"rate_limited": 1, "server_error": 3, "connection": 1, "bad_response": 2}


def test_retry_after_is_honoured(fault_server, tmp_path, processes):
    fault_server.plan.script = {"slow down": ["429", "ok"]}
    fault_server.plan.retry_after = "1"

    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes) as llm:
            start = time.monotonic()
            await llm.chat(user("slow down"))
            return time.monotonic() - start

    elapsed = run(go())
    times = [e["time"] for e in fault_server.log]
    assert times[1] - times[0] >= 0.95, "second attempt came before Retry-After elapsed"
    assert elapsed < 3


def test_stall_past_timeout_is_a_retried_timeout(fault_server, tmp_path, processes):
    fault_server.plan.script = {"stall": ["stall", "ok"]}
    fault_server.plan.stall_seconds = 2.0

    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes, timeout=0.5) as llm:
            return await llm.chat(user("stall")), llm.ledger

    answer, ledger = run(go())
    assert answer.attempts == 2 and ledger.errors == {"timeout": 1}


def test_permanent_failure_is_reported_with_reason_after_bounded_retries(fault_server, tmp_path, processes):
    fault_server.plan.script = {"doomed": ["500"] * 10}

    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes, max_retries=2) as llm:
            with pytest.raises(LLMServerError) as info:
                await llm.chat(user("doomed"))
            return info.value, llm.ledger

    error, ledger = run(go())
    assert error.attempts == 3 and fault_server.requests_for("doomed") == 3
    assert (
        ledger.failed == 1 and ledger.failures[0]["reason"] == "server_error" and ledger.failures[0]["attempts"] == 3
    )


def test_client_errors_are_not_retried(fault_server, tmp_path, processes):
    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes, model="no-such-model") as llm:
            with pytest.raises(LLMRequestError) as info:
                await llm.chat(user("wrong model"))
            return info.value

    error = run(go())
    assert error.status == 404 and error.attempts == 1 and "not found" in str(error)
    assert fault_server.requests_for("wrong model") == 1


def test_truncated_answer_is_marked(fault_server, tmp_path):
    fault_server.plan.script = {"long": ["length"]}

    async def go():
        async with make_client(fault_server.url, tmp_path) as llm:
            return await llm.chat(user("long")), llm.ledger

    answer, ledger = run(go())
    assert answer.truncated and answer.finish_reason == "length" and ledger.truncated == 1


def test_thirty_percent_faults_lose_and_duplicate_nothing(fault_server, tmp_path, processes):
    """200 requests at 30% faults: each one answered exactly once in the output, or listed as failed."""
    fault_server.plan.rate = 0.3
    fault_server.plan.seed = 7
    fault_server.plan.stall_seconds = 1.0
    fault_server.plan.retry_after = "0"
    prompts = [f"question {i}" for i in range(200)]

    async def go():
        async with make_client(
            fault_server.url, tmp_path, processes=processes, timeout=0.5, max_retries=4, concurrency=16
        ) as llm:
            results = {}
            async for prompt, result in map_bounded(lambda p: llm.chat(user(p)), prompts, limit=32):
                assert prompt not in results
                results[prompt] = result
            return results, llm.ledger

    results, ledger = run(go())
    assert sorted(results) == sorted(prompts)
    answers = {p: r for p, r in results.items() if not isinstance(r, Exception)}
    failures = {p: r for p, r in results.items() if isinstance(r, Exception)}
    assert all(a.text.endswith(f"to: {p}") for p, a in answers.items())
    assert len(answers) + len(failures) == 200 and len(failures) == ledger.failed == len(ledger.failures)
    assert all(f.reason and f.attempts == 5 for f in failures.values())
    assert ledger.errors and sum(ledger.errors.values()) == ledger.requests - ledger.succeeded
    # retries are bounded: no request was tried more than max_retries + 1 times
    assert max(fault_server.attempts.values()) <= 5
    assert ledger.retries > 20  # faults really were injected at about the planned rate


def test_identical_concurrent_requests_are_sent_once(fault_server, tmp_path):
    fault_server.plan.latency = 0.2

    async def go():
        async with make_client(fault_server.url, tmp_path) as llm:
            return await asyncio.gather(*[llm.chat(user("same")) for _ in range(5)])

    answers = run(go())
    assert len({a.text for a in answers}) == 1 and fault_server.requests_for("same") == 1


def test_concurrency_is_bounded(fault_server, tmp_path):
    fault_server.plan.latency = 0.15

    async def go():
        async with make_client(fault_server.url, tmp_path, concurrency=4) as llm:
            await asyncio.gather(*[llm.chat(user(f"c{i}")) for i in range(12)])

    start = time.monotonic()
    run(go())
    elapsed = time.monotonic() - start
    times = sorted(e["time"] for e in fault_server.log)
    # at most 4 arrive within any 0.1 s window, and 12 requests need ≥ 3 rounds of 0.15 s
    assert max(sum(1 for t in times if s <= t < s + 0.1) for s in times) <= 4
    assert elapsed >= 0.44


def test_requests_per_minute_are_paced(fault_server, tmp_path):
    async def go():
        async with make_client(fault_server.url, tmp_path, rpm=600) as llm:  # 10 per second
            await asyncio.gather(*[llm.chat(user(f"r{i}")) for i in range(25)])

    run(go())
    times = sorted(e["time"] for e in fault_server.log)
    assert times[-1] - times[0] >= 1.3  # 10 at once, then 15 more at 10/s


def test_tokens_per_minute_are_paced(fault_server, tmp_path):
    async def go():
        async with make_client(fault_server.url, tmp_path, tpm=6000) as llm:  # 100 tokens per second
            await asyncio.gather(*[llm.chat(user(f"t{i}"), SamplingParams(max_tokens=90)) for i in range(4)])

    run(go())
    times = sorted(e["time"] for e in fault_server.log)
    assert times[-1] - times[0] >= 2.5  # each request costs ~95 tokens of a 100/s budget


def test_circuit_breaker_stops_a_run_against_a_dead_endpoint(fault_server, tmp_path):
    fault_server.plan.down = True

    async def go():
        async with make_client(fault_server.url, tmp_path, max_retries=1000, circuit_breaker=0.5) as llm:
            start = time.monotonic()
            with pytest.raises(CircuitOpen, match="--resume"):
                await llm.chat(user("down"))
            elapsed = time.monotonic() - start
            sent = fault_server.requests_for("down")
            with pytest.raises(CircuitOpen):  # later requests fail fast, without a call
                await llm.chat(user("also down"))
            return elapsed, sent

    elapsed, sent = run(go())
    assert elapsed < 3 and fault_server.requests_for("also down") == 0 and sent > 1


def test_load_balances_and_survives_a_dead_endpoint(fault_server, second_fault_server, tmp_path):
    async def go(urls):
        llm = LLMClient(LLMConfig(base_urls=urls, model=MODEL_ID, cache=False, **FAST), rng=random.Random(0))
        async with llm:
            return await asyncio.gather(*[llm.chat(user(f"lb{i}")) for i in range(20)])

    run(go((fault_server.url, second_fault_server.url)))
    assert len(fault_server.log) >= 5 and len(second_fault_server.log) >= 5
    dead = "http://127.0.0.1:9/v1"  # discard port: connection refused
    answers = run(go((dead, fault_server.url)))
    assert len(answers) == 20


def test_api_key_is_sent_but_never_leaks(fault_server, tmp_path, processes, monkeypatch, caplog):
    monkeypatch.setenv("DATAGEN_API_KEY", PLANTED_API_KEY)
    fault_server.plan.require_key = PLANTED_API_KEY
    fault_server.plan.script = {"k1": ["500", "reset", "ok"], "k2": ["500"] * 5}
    caplog.set_level(logging.DEBUG)

    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes, max_retries=2) as llm:
            await llm.chat(user("k1"))
            with pytest.raises(LLMServerError) as info:
                await llm.chat(user("k2"))
            return str(info.value), llm.ledger

    message, ledger = run(go())
    assert fault_server.log[0]["auth"] == f"Bearer {PLANTED_API_KEY}"
    assert PLANTED_API_KEY not in message
    assert PLANTED_API_KEY not in json.dumps(ledger.as_dict())
    assert PLANTED_API_KEY not in caplog.text
    assert PLANTED_API_KEY.encode() not in (tmp_path / "cache.sqlite").read_bytes()


def test_wrong_key_is_a_clear_non_retried_error(fault_server, tmp_path, processes, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    fault_server.plan.require_key = PLANTED_API_KEY

    async def go():
        async with make_client(fault_server.url, tmp_path, processes=processes, model=MODEL_ID) as llm:
            with pytest.raises(LLMRequestError, match="DATAGEN_API_KEY") as info:
                await llm.chat(user("auth"))
            return info.value

    assert run(go()).attempts == 1


def test_remote_endpoint_without_key_is_a_config_error():
    with pytest.raises(ConfigError, match="DATAGEN_API_KEY or OPENAI_API_KEY"):
        LLMClient(LLMConfig(base_urls=("https://api.example.com/v1",), cache=False))


def test_no_endpoint_is_a_config_error_naming_the_options():
    with pytest.raises(ConfigError, match="--base-url"):
        LLMClient(LLMConfig(cache=False))


def test_base_url_from_environment(fault_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", fault_server.url)

    async def go():
        async with LLMClient(LLMConfig(cache_path=tmp_path / "c.sqlite")) as llm:
            return await llm.chat(user("env"))

    assert run(go()).text.endswith("to: env")


@pytest.mark.parametrize(
    "field,value", [("concurrency", 0), ("timeout", 0), ("max_retries", -1), ("rpm", 0), ("base_urls", ("ftp://x",))]
)
def test_config_validation_names_the_key(field, value):
    with pytest.raises(ConfigError, match=f"llm.{field.rstrip('s') if field == 'base_urls' else field}"):
        LLMConfig(**{field: value})


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({"retry-after": "soon"}) is None


def test_map_bounded_yields_failures_as_data_and_limits_concurrency():
    in_flight = 0
    peak = 0

    async def work(i):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        if i % 5 == 0:
            raise LLMTimeout("late")
        return i * 2

    async def go():
        return [pair async for pair in map_bounded(work, range(40), limit=3)]

    pairs = run(go())
    assert peak == 3 and len(pairs) == 40
    assert sum(isinstance(r, LLMTimeout) for _, r in pairs) == 8
    assert all(r == i * 2 for i, r in pairs if not isinstance(r, Exception))
