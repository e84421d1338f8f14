"""One async client for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp server, Ollama, ``datagen serve``).

What it adds over a bare ``AsyncOpenAI``: bounded concurrency; retries with exponential backoff and full
jitter on 408/409/429/5xx, timeouts, connection errors and malformed answers, honouring ``Retry-After``;
requests-per-minute and tokens-per-minute pacing; load balancing over several base URLs; a circuit breaker;
an on-disk answer cache (``cache.py``) so a resumed run pays only for what is missing; and a usage ledger
for the manifest. ``openai.*`` exceptions never reach callers: ``transport.py`` turns them into
``datagen.errors.LLMError``s. With ``processes > 1`` the SDK's per-request work runs in sender processes.

API keys come from the environment only (``DATAGEN_API_KEY``, then ``OPENAI_API_KEY``) and never appear in
logs, errors, the cache or the ledger.

    async with LLMClient(LLMConfig(base_urls=("http://127.0.0.1:8000/v1",))) as llm:
        answer = await llm.chat([{"role": "user", "content": "Name a prime."}], SamplingParams(max_tokens=16))
        print(answer.text, answer.finish_reason, answer.usage)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlparse

from datagen.errors import (
    CircuitOpen,
    ConfigError,
    LLMBadResponse,
    LLMError,
)
from datagen.home import datagen_home
from datagen.llm.batch import BatchApi, BatchGatherer, check_batch_config
from datagen.llm.cache import ResponseCache, cache_key
from datagen.llm.costs import CostLimitReached, cost, estimate_tokens, price_of
from datagen.llm.limits import CircuitBreaker, TokenBucket
from datagen.llm.transport import ProcessTransport, Retryable, SdkTransport, resolve_api_key
from datagen.llm.types import (  # noqa: F401 - BATCH_MODES, LLMConfig and UsageLedger are re-exported
    BATCH_MODES,
    PATHS,
    Completion,
    LLMConfig,
    SamplingParams,
    UsageLedger,
    request_body,
)
from datagen.redaction import redact_text, redact_url

log = logging.getLogger("datagen.llm")

BASE_URL_ENV = ("DATAGEN_BASE_URL", "OPENAI_BASE_URL")
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def resolve_base_urls(cfg: LLMConfig) -> tuple[str, ...]:
    if "embedded" in cfg.base_urls:
        raise ConfigError(
            "base URL 'embedded' is started by the command that uses it "
            "(datagen.llm.endpoint.endpoint); the client needs a real URL"
        )
    if cfg.base_urls:
        return cfg.base_urls
    for name in BASE_URL_ENV:
        if os.environ.get(name):
            return tuple(u.strip() for u in os.environ[name].split(",") if u.strip())
    raise ConfigError(
        "no LLM endpoint: pass --base-url URL, set DATAGEN_BASE_URL or OPENAI_BASE_URL, "
        "or run `datagen serve` and point --base-url at it"
    )


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff (AWS architecture blog): uniform(0, min(cap, base·2^attempt))."""
    return rng.uniform(0.0, min(cap, base * (2**attempt)))


class LLMClient:
    """Async, cached, rate-limited access to one or more OpenAI-compatible endpoints. Use as ``async with``."""

    def __init__(self, cfg: LLMConfig, cache: ResponseCache | None = None, rng: random.Random | None = None):
        self.cfg = cfg
        check_batch_config(cfg)
        # File mode needs no endpoint: the requests go to a file another engine runs.
        self.base_urls = () if cfg.batch == "file" and not cfg.base_urls else resolve_base_urls(cfg)
        self._api_key = resolve_api_key()
        if self._api_key is None and any(
            urlparse(u).hostname not in _LOCAL_HOSTS and urlparse(u).password is None for u in self.base_urls
        ):  # user:key@ in the URL is a credential too
            raise ConfigError("no API key for a remote endpoint: set DATAGEN_API_KEY or OPENAI_API_KEY")
        self._transport: SdkTransport | ProcessTransport = (
            ProcessTransport(self.base_urls, cfg.timeout, cfg.processes)
            if cfg.processes > 1
            else SdkTransport(self.base_urls, self._api_key, cfg.timeout)
        )
        # /models is asked once, from this process.
        self._lister = (
            self._transport
            if isinstance(self._transport, SdkTransport)
            else SdkTransport(self.base_urls[:1], self._api_key, cfg.timeout)
        )
        self._in_flight = [0] * len(self.base_urls)
        self._next = 0
        self._semaphore = asyncio.Semaphore(cfg.concurrency)
        self._rpm = TokenBucket(cfg.rpm) if cfg.rpm else None
        self._tpm = TokenBucket(cfg.tpm) if cfg.tpm else None
        self._breaker = CircuitBreaker(cfg.circuit_breaker)
        self._pending: dict[str, asyncio.Future[Completion]] = {}
        self._model: str | None = cfg.model
        self._model_lock = asyncio.Lock()
        self._rng = rng or random.Random()
        self._owns_cache = cache is None and cfg.cache
        self.cache = (
            cache
            if cache is not None
            else (ResponseCache(cfg.cache_path or datagen_home() / "llm_cache.sqlite") if cfg.cache else None)
        )
        self.ledger = UsageLedger()
        self._gatherer: BatchGatherer | None = None
        self._batch_api: BatchApi | None = None
        self._reserved = 0.0  # USD of requests sent and not answered yet, counted against max_cost

    async def __aenter__(self) -> LLMClient:
        await self._transport.start()  # sender processes, if any, are up before the first request is timed
        try:
            await self._start_batches()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _start_batches(self) -> None:
        """Batch mode: check the endpoint serves ``/batches`` before anything is uploaded, then gather misses."""
        if self.cfg.batch == "off":
            return
        if self.cfg.batch in ("on", "auto"):
            self._batch_api = BatchApi(self.base_urls[0], self._api_key, self.cfg.timeout)
            if not await self._batch_api.supported():
                where = redact_url(self.base_urls[0])
                if self.cfg.batch == "on":
                    raise ConfigError(
                        f"{where} has no /batches endpoint, so batch mode cannot run there: use "
                        "--batch auto to fall back to online requests, or --batch file to write a "
                        "request file for another engine"
                    )
                log.warning("%s has no /batches endpoint: sending requests online (--batch auto)", where)
                await self._batch_api.aclose()
                self._batch_api = None
                return
        assert self.cache is not None  # check_batch_config
        self._gatherer = BatchGatherer(
            self.cfg,
            self._batch_api,
            self.cache,
            self.ledger,
            self._parse_raw,
            charge=self._charge,
            check_budget=self._check_budget,
            estimate=self.request_cost,
        )

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._gatherer is not None:
            await self._gatherer.aclose()
        if self._batch_api is not None:
            await self._batch_api.aclose()
        await self._transport.aclose()
        if self._lister is not self._transport:
            await self._lister.aclose()
        if self._owns_cache and self.cache is not None:  # stops its writer thread
            await asyncio.to_thread(self.cache.close)

    # ------------------------------------------------------------------------------------------ public

    async def chat(
        self, messages: list[dict[str, str]], params: SamplingParams = SamplingParams(), sample_index: int = 0
    ) -> Completion:
        """One chat completion (``/v1/chat/completions``); the k-th sample of a request is ``sample_index=k``."""
        return await self._cached_request("chat", messages, params, sample_index)

    async def complete(
        self, prompt: str, params: SamplingParams = SamplingParams(), sample_index: int = 0
    ) -> Completion:
        """One text completion (``/v1/completions``): the model continues ``prompt`` as-is."""
        return await self._cached_request("completion", prompt, params, sample_index)

    async def model_name(self) -> str:
        """The configured model, or the first one the endpoint lists (asked once)."""
        if self._model:
            return self._model
        async with self._model_lock:
            if not self._model:
                models = await self._lister.models()
                if not models:
                    raise LLMBadResponse(f"{redact_url(self.base_urls[0])}/models lists no model; pass --model")
                self._model = models[0]
        return self._model

    def request_cost(self, model: str, payload: Any, request: dict[str, Any], batch: bool = False) -> float:
        """The most one request can cost (prompt estimated, ``max_tokens`` in full); 0 when unpriced."""
        price = price_of(self.cfg.prices, model)
        discount = self.cfg.batch_discount if batch else 0.0
        return cost(price, *estimate_tokens(payload, request), discount=discount) if price else 0.0

    def _check_budget(self, amount: float) -> None:
        """Refuse to spend ``amount`` more when it would take spending past ``max_cost``."""
        if self.cfg.max_cost is None:
            return
        spent = (self.ledger.cost_usd or 0.0) + self._reserved
        if spent + amount > self.cfg.max_cost:
            raise CostLimitReached(
                f"stopped before spending more than max_cost {self.cfg.max_cost:g} USD: {spent:.4f} USD spent or "
                f"committed, and the next request(s) may cost up to {amount:.4f} USD. Every answer received is "
                "cached: run the same command with a higher --max-cost to go on from here"
            )

    def _charge(self, completion: Completion, batch: bool = False) -> None:
        """Add one answer's tokens at the model's price to the ledger's spending."""
        price = price_of(self.cfg.prices, completion.model) or price_of(self.cfg.prices, self._model or "")
        if price is None:
            return
        spent = cost(
            price,
            completion.prompt_tokens,
            completion.completion_tokens,
            discount=self.cfg.batch_discount if batch else 0.0,
        )
        self.ledger.cost_usd = round((self.ledger.cost_usd or 0.0) + spent, 10)
        if batch:
            self.ledger.batch_cost_usd = round((self.ledger.batch_cost_usd or 0.0) + spent, 10)

    # ------------------------------------------------------------------------------------------ internals

    async def _cached_request(self, kind: str, payload: Any, params: SamplingParams, sample_index: int) -> Completion:
        model = await self.model_name()
        request = params.to_request(sample_index)
        key = cache_key(kind, model, payload, request, sample_index)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.ledger.cached += 1
                return Completion(**hit, cached=True)
        # The same request twice at once (a resumed run racing itself): send it once, share the answer.
        if key in self._pending:
            return await asyncio.shield(self._pending[key])
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            if self._gatherer is not None:  # batch mode: the gatherer caches what its jobs answer
                completion = await self._gatherer.ask(key, kind, model, payload, request)
            else:
                estimate = self.request_cost(model, payload, request)
                self._check_budget(estimate)
                self._reserved += estimate
                try:
                    completion = await self._send_with_retries(kind, model, payload, request)
                finally:
                    self._reserved -= estimate
                if self.cache is not None:
                    await self.cache.aput(key, model, completion.to_cache())  # on disk before anyone sees it
            future.set_result(completion)
            return completion
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise
        finally:
            del self._pending[key]

    async def _send_with_retries(self, kind: str, model: str, payload: Any, request: dict[str, Any]) -> Completion:
        attempts = 0
        avoid: int | None = None
        while True:
            self._breaker.check()
            attempts += 1
            async with self._semaphore:
                await self._pace(payload, request)
                index = self._pick_endpoint(avoid)
                self._in_flight[index] += 1
                self.ledger.requests += 1
                try:
                    completion = await self._send(index, kind, model, payload, request)
                except Retryable as retry:
                    error, retry_after = retry.error, retry.retry_after
                except LLMError as fatal:
                    fatal.attempts = attempts
                    self._fail(fatal)
                    raise
                else:
                    self._breaker.record_success()
                    completion.attempts = attempts
                    self._account(completion)
                    return completion
                finally:
                    self._in_flight[index] -= 1
            # Back off outside the semaphore, so other requests keep the endpoint busy meanwhile.
            self._breaker.record_failure()
            self.ledger.errors[error.reason] += 1
            avoid = index if len(self.base_urls) > 1 else None
            if attempts > self.cfg.max_retries:
                error.attempts = attempts
                self._fail(error)
                raise error
            self.ledger.retries += 1
            delay = backoff_delay(attempts - 1, self.cfg.backoff_base, self.cfg.backoff_max, self._rng)
            if retry_after is not None:
                delay = min(retry_after, self.cfg.retry_after_max) + self._rng.uniform(0, 0.1 * self.cfg.backoff_base)
            log.info(
                "retrying after %s (attempt %d/%d, waiting %.2f s)",
                error.reason,
                attempts,
                self.cfg.max_retries + 1,
                delay,
            )
            await asyncio.sleep(delay)

    async def _pace(self, payload: Any, request: dict[str, Any]) -> None:
        if self._rpm:
            await self._rpm.acquire(1)
        if self._tpm:  # the prompt at ~4 characters a token, the completion budget in full
            await self._tpm.acquire(sum(estimate_tokens(payload, request)))

    def _pick_endpoint(self, avoid: int | None) -> int:
        """Least requests in flight, round-robin among ties; after a failure prefer another endpoint."""
        order = [(self._next + i) % len(self.base_urls) for i in range(len(self.base_urls))]
        self._next = (self._next + 1) % len(self.base_urls)
        candidates = [i for i in order if i != avoid] or order
        return min(candidates, key=lambda i: self._in_flight[i])

    async def _send(self, index: int, kind: str, model: str, payload: Any, request: dict[str, Any]) -> Completion:
        body = await self._transport.post(index, PATHS[kind], request_body(kind, model, payload, request))
        return self._parse(kind, model, body)

    def _parse(self, kind: str, model: str, body: bytes | str) -> Completion:
        """Validate an answer by hand: a malformed body is a retryable LLMBadResponse, never a crash."""
        try:
            data = json.loads(body)
            choice = data["choices"][0]
            text = choice["message"]["content"] if kind == "chat" else choice["text"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
            finish_reason = choice.get("finish_reason") or "stop"
            answered_model = data.get("model") or model
            if not isinstance(finish_reason, str) or not isinstance(answered_model, str):
                raise TypeError("finish_reason and model must be strings")
            if _SURROGATE.search(text):  # no UTF-8 file (records, the cache) can hold it: ask again
                raise ValueError("the answer holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
            prompt_tokens, completion_tokens = _usage(data.get("usage"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError) as exc:
            head = body[:200]
            snippet = (head.decode("utf-8", "replace") if isinstance(head, bytes) else head).replace("\n", " ")
            raise Retryable(
                LLMBadResponse(self._redact(f"malformed completion ({type(exc).__name__}: {exc}): {snippet!r}"))
            ) from None
        return Completion(
            text=text,
            finish_reason=finish_reason,
            model=answered_model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    def _parse_raw(self, kind: str, model: str, body: bytes) -> Completion:
        """``_parse`` for answers that come from a batch file: a malformed one raises its ``LLMBadResponse``."""
        try:
            return self._parse(kind, model, body)
        except Retryable as bad:
            raise bad.error from None

    def _redact(self, text: str) -> str:
        return redact_text(text, secrets=(self._api_key,))

    def _account(self, completion: Completion) -> None:
        self._charge(completion)
        self.ledger.succeeded += 1
        self.ledger.prompt_tokens += completion.prompt_tokens
        self.ledger.completion_tokens += completion.completion_tokens
        if completion.truncated:
            self.ledger.truncated += 1
        if log.isEnabledFor(logging.DEBUG):  # `completion.usage` builds a dict: skip it when nobody listens
            log.debug(
                "completion: finish_reason=%s usage=%s attempts=%d",
                completion.finish_reason,
                completion.usage,
                completion.attempts,
            )

    def _fail(self, error: LLMError) -> None:
        self.ledger.failed += 1
        self.ledger.failures.append(
            {"reason": error.reason, "message": str(error), "attempts": error.attempts, "status": error.status}
        )
        log.warning("request failed for good after %s attempt(s): %s", error.attempts, error)


def _usage(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens from an answer's ``usage`` block; absent is zero, anything but a mapping of
    non-negative whole numbers is a malformed answer (ValueError/TypeError, so the caller retries it)."""
    if usage is None:
        return 0, 0
    if not isinstance(usage, dict):
        raise TypeError(f"usage must be an object, got {type(usage).__name__}")
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if value is None:
            value = 0
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or value < 0
            or (isinstance(value, float) and not value.is_integer())
        ):
            raise ValueError(f"usage.{name} must be a whole number ≥ 0, got {value!r:.40}")
        counts.append(int(value))
    return counts[0], counts[1]


T = TypeVar("T")
R = TypeVar("R")


async def map_bounded(
    fn: Callable[[T], Awaitable[R]], items: Iterable[T], limit: int
) -> AsyncIterator[tuple[T, R | BaseException]]:
    """Run ``fn`` over ``items`` with at most ``limit`` in flight; yield ``(item, result)`` as each finishes.

    Tasks are created lazily (a million items never become a million tasks), and an exception is yielded
    as the result instead of cancelling the rest: the caller writes a reject and goes on. ``CircuitOpen``
    and cancellation still propagate (and cancel what is in flight); ``CostLimitReached`` propagates once the
    requests already sent have landed in the cache, since they are paid for.
    """
    iterator = iter(items)
    running: dict[asyncio.Task, T] = {}

    def start_next() -> bool:
        try:
            item = next(iterator)
        except StopIteration:
            return False
        running[asyncio.ensure_future(fn(item))] = item
        return True

    for _ in range(limit):
        if not start_next():
            break
    try:
        while running:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                item = running.pop(task)
                exc = task.exception()
                if exc is not None and (not isinstance(exc, LLMError) or isinstance(exc, CircuitOpen)):
                    raise exc
                yield item, (exc if exc is not None else task.result())
                start_next()
    finally:
        if not isinstance(sys.exc_info()[1], CostLimitReached):
            for task in running:
                task.cancel()
        # At the spending limit, requests already sent are paid for: let them land in the cache.
        if running:
            await asyncio.gather(*running, return_exceptions=True)
