"""What the client and the batch path share (below both, so neither imports the other): endpoint settings
(``LLMConfig``), what a stage asks for (``SamplingParams``), an answer (``Completion``), the counts (``UsageLedger``).

    >>> SamplingParams(max_tokens=16, seed=3).to_request(sample_index=2)
    {'temperature': 0.7, 'top_p': 1.0, 'max_tokens': 16, 'seed': 5}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from datagen.config import check_fields
from datagen.errors import ConfigError
from datagen.llm.costs import check_prices
from datagen.redaction import redact_url

BATCH_MODES = ("off", "on", "auto", "file")
#: Where each kind of request goes, below the base URL (``/v1``).
PATHS = {"chat": "/chat/completions", "completion": "/completions"}


def request_body(kind: str, model: str, payload: Any, request: dict[str, Any]) -> dict[str, Any]:
    """What is POSTed for one request, online or as a line of a batch file: the same bytes either way."""
    return {"model": model, "messages" if kind == "chat" else "prompt": payload, **request}


@dataclass(frozen=True)
class LLMConfig:
    """How to reach the endpoint and how hard to push it. Defaults suit a laptop against a local server."""

    base_urls: tuple[
        str, ...
    ] = ()  # load-balanced; empty → $DATAGEN_BASE_URL/$OPENAI_BASE_URL; "embedded" = bundled model
    model: str | None = None  # None → the first model the endpoint lists at /v1/models
    concurrency: int = 16  # requests in flight at once, over all base URLs
    timeout: float = 120.0  # seconds per request attempt
    max_retries: int = 6  # retries after the first attempt, for retryable failures only
    backoff_base: float = 1.0  # seconds; attempt k waits uniform(0, min(backoff_max, base·2^k))
    backoff_max: float = 60.0
    retry_after_max: float = 300.0  # never sleep longer than this for a server's Retry-After
    rpm: float | None = None  # requests per minute; None = unlimited
    tpm: float | None = None  # tokens per minute (prompt estimate + max_tokens); None = unlimited
    cache: bool = True  # replay answers from the on-disk cache
    cache_path: Path | None = None  # None → $DATAGEN_HOME/llm_cache.sqlite
    circuit_breaker: float | None = 600.0  # stop the run after this many seconds of nothing but failures
    processes: int = 1  # >1: send from this many child processes (for hundreds of requests/s)
    # --- batch jobs (datagen/llm/batch.py): the Batch API halves the price and lifts rate limits
    batch: bool | str = "off"  # off | on (Batch API) | auto (Batch API, else online) | file (batch_file)
    completion_window: str = "24h"  # the Batch API's completion window
    poll_interval: float = 30.0  # seconds between two looks at a running batch job
    batch_max_requests: int = 50_000  # lines per batch input file (the Batch API's limit)
    batch_max_bytes: int = 200_000_000  # bytes per batch input file (the Batch API's limit)
    batch_max_attempts: int = 3  # submissions of one request (failed lines, expired jobs) before it fails
    batch_file: Path | None = None  # file mode: where the pending requests are written
    # --- cost (datagen/llm/costs.py)
    prices: dict[str, Any] = field(default_factory=dict)  # model → {input, output} USD per million tokens; "*" = any
    batch_discount: float = 0.5  # batch jobs cost this much less (OpenAI's Batch API: half)
    max_cost: float | None = None  # USD: stop before a request would take spending past this

    def __post_init__(self) -> None:
        if isinstance(self.base_urls, str):
            object.__setattr__(self, "base_urls", tuple(u for u in self.base_urls.split(",") if u))
        if isinstance(self.batch, bool):  # `batch: true` in YAML reads as it should
            object.__setattr__(self, "batch", "on" if self.batch else "off")
        check_fields(
            self,
            "llm.",
            [
                ("concurrency", self.concurrency >= 1, "≥ 1"),
                ("processes", self.processes >= 1, "≥ 1"),
                ("timeout", self.timeout > 0, "> 0 seconds"),
                ("max_retries", self.max_retries >= 0, "≥ 0"),
                ("rpm", self.rpm is None or self.rpm > 0, "> 0 or unset"),
                ("tpm", self.tpm is None or self.tpm > 0, "> 0 or unset"),
                ("circuit_breaker", self.circuit_breaker is None or self.circuit_breaker > 0, "> 0 seconds or unset"),
                ("batch", self.batch in BATCH_MODES, f"one of {list(BATCH_MODES)} (or true/false)"),
                ("poll_interval", 0 < self.poll_interval < float("inf"), "> 0 seconds"),
                *(
                    (name, getattr(self, name) >= 1, "≥ 1")
                    for name in ("batch_max_requests", "batch_max_bytes", "batch_max_attempts")
                ),
                ("batch_discount", 0 <= self.batch_discount < 1, "in [0, 1)"),
            ],
        )
        for url in self.base_urls:
            if url != "embedded" and urlparse(url).scheme not in ("http", "https"):
                raise ConfigError(f"llm.base_url must start with http:// or https://, got {redact_url(url)!r}")
        if self.batch == "file" and self.batch_file is None:
            object.__setattr__(self, "batch_file", Path("batch_requests.jsonl"))
        if self.batch_file is not None:
            object.__setattr__(self, "batch_file", Path(self.batch_file))
        object.__setattr__(
            self,
            "prices",
            {model: {"input": i, "output": o} for model, (i, o) in check_prices(self.prices, "llm.prices").items()},
        )
        if self.max_cost is not None:
            if not 0 < self.max_cost < float("inf"):
                raise ConfigError(f"llm.max_cost must be a positive number of USD, got {self.max_cost}")
            if not self.prices:
                raise ConfigError(
                    "llm.max_cost needs prices to count against: add a prices table "
                    "(model: {input, output} USD per million tokens) or --prices FILE"
                )

    @property
    def gather_limit(self) -> int:
        """How many requests a stage should have in flight at once: enough to keep the endpoint busy online
        (twice ``concurrency``: the client's semaphore bounds what is sent), and a whole batch file in batch
        mode, where a request only waits to be gathered into a job."""
        return self.batch_max_requests if self.batch != "off" else self.concurrency * 2

    def public_dict(self) -> dict[str, Any]:
        """The config for manifests: nothing secret lives here, keys stay in the environment."""
        out = asdict(self)
        out["cache_path"] = str(self.cache_path) if self.cache_path else None
        out["batch_file"] = str(self.batch_file) if self.batch_file else None
        out["base_urls"] = [redact_url(url) for url in self.base_urls]  # a URL may carry user:key@ or ?key=
        return out


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI sampling parameters. With a ``seed``, sample k is requested with ``seed + k``."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def to_request(self, sample_index: int = 0) -> dict[str, Any]:
        """The keyword arguments sent to the endpoint (and hashed into the cache key)."""
        out: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}
        if self.stop:
            out["stop"] = list(self.stop)
        if self.seed is not None:
            out["seed"] = self.seed + sample_index
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass
class Completion:
    """One answer. ``truncated`` means the model hit ``max_tokens`` (``finish_reason == "length"``)."""

    text: str
    finish_reason: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    attempts: int = 0

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    def to_cache(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass
class UsageLedger:
    """Counts for the manifest: calls made, replayed from cache and failed, retries, tokens."""

    requests: int = 0  # HTTP attempts sent, retries included
    succeeded: int = 0  # answers received from the endpoint
    cached: int = 0  # answers replayed from the cache
    failed: int = 0  # requests given up on
    retries: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)  # attempt failures by reason
    failures: list[dict[str, Any]] = field(default_factory=list)  # permanent failures, with reasons
    # batch jobs: the fields above count online requests only
    batch_requests: int = 0  # request lines submitted in batch jobs, resubmissions included
    batch_succeeded: int = 0  # answers imported from batch jobs
    batch_failed: int = 0  # requests no batch job answered within batch_max_attempts
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    batches: list[str] = field(default_factory=list)  # ids of the batch jobs this client submitted
    cost_usd: float | None = None  # spent, online and batch, at the configured prices (None: unpriced)
    batch_cost_usd: float | None = None  # the batch part of it

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["errors"] = dict(self.errors)
        return out
