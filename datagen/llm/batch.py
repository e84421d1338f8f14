"""Batch jobs: the OpenAI Batch API, and batch files for self-hosted engines, behind the same client and cache.

Turn it on with ``--batch`` on any command that calls an LLM, or ``endpoint: {batch: true}`` in a run config:

    datagen respond --in prompts.jsonl --out out/ --base-url https://api.openai.com/v1 --model gpt-4o-mini --batch

Nothing in the stages changes. In batch mode ``LLMClient`` does not send a cache miss at once: it hands it to
``BatchGatherer``, which holds every miss until the stage has asked for all it can ask before it needs an
answer (no new request for ``quiet`` seconds: that is one step of the stage, e.g. one Self-Instruct round or
all the answers of Self-QA), then submits the whole step as batch jobs:

1. one JSONL line per request, ``custom_id`` = the cache key, ``body`` = exactly what online mode would POST,
   split at ``batch_max_requests`` lines or ``batch_max_bytes`` bytes per file (OpenAI's limits: 50,000 / 200 MB);
2. upload (``/v1/files``, purpose ``batch``), create (``/v1/batches``), and record the ids in the batch journal
   (``batches.jsonl`` beside the answer cache) *before* waiting, so a killed run re-attaches to its jobs;
3. poll every ``poll_interval`` seconds with a progress bar (completed, failed, waited), download the output
   and error files, and put every answer into the answer cache, where online runs find it too (and batch runs
   find online answers: a cached request is never submitted);
4. resubmit failed lines and the unanswered part of an expired or cancelled job, up to ``batch_max_attempts``
   submissions in all; a request still unanswered then fails like an online request that ran out of retries.

``batch: auto`` falls back to online requests, with a warning, when the endpoint has no ``/v1/batches``;
``batch: on`` stops with exit code 2 before anything is uploaded. ``batch: file`` writes the step's requests
to ``batch_file`` in the same format (what ``vllm run-batch -i`` reads) and stops with ``BatchWaiting``
(exit code 3); ``datagen batch import RESULTS.jsonl`` loads the answers into the cache and a re-run goes on.

    >>> line = request_line("k1", "chat", "m", [{"role": "user", "content": "Hi"}], {"max_tokens": 8})
    >>> line["custom_id"], line["url"], line["body"]["messages"][0]["content"]
    ('k1', '/v1/chat/completions', 'Hi')
    >>> [len(part.splitlines()) for part in split_lines([b'{"a": 1}'] * 5, max_requests=2, max_bytes=10**6)]
    [2, 2, 1]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import openai

from datagen.errors import ConfigError, DatagenError, LLMBadResponse, LLMError, LLMRequestError
from datagen.llm.types import PATHS, Completion, LLMConfig, UsageLedger, request_body
from datagen.records import write_atomic

if TYPE_CHECKING:
    from datagen.llm.cache import ResponseCache

log = logging.getLogger("datagen.llm")
T = TypeVar("T")

#: Batch states after which nothing more will be answered.
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
JOURNAL = "batches.jsonl"


class BatchWaiting(DatagenError):
    """File mode wrote the pending requests of a step and stopped: run them, import the results, re-run."""

    exit_code = 3
    label = "waiting"


class BatchFailed(LLMError):
    """A request a batch job did not answer within ``batch_max_attempts`` submissions."""

    reason = "batch_failed"


# ---------------------------------------------------------------------------------------------- request files


def request_line(key: str, kind: str, model: str, payload: Any, request: dict[str, Any]) -> dict[str, Any]:
    """One line of a batch input file: the body online mode would POST, under its cache key."""
    return {
        "custom_id": key,
        "method": "POST",
        "url": "/v1" + PATHS[kind],
        "body": request_body(kind, model, payload, request),
    }


def split_lines(lines: Iterable[bytes], max_requests: int, max_bytes: int) -> list[bytes]:
    """JSONL files of at most ``max_requests`` lines and ``max_bytes`` bytes each (a line is never split)."""
    parts: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and (len(current) >= max_requests or size + len(line) + 1 > max_bytes):
            parts.append(b"\n".join(current) + b"\n")
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        parts.append(b"\n".join(current) + b"\n")
    return parts


def read_results(data: bytes) -> tuple[dict[str, bytes], dict[str, str]]:
    """Answers by ``custom_id`` (the raw response body) and failures by ``custom_id`` (a reason) from an
    output or error file. A line that is not valid JSON or names no ``custom_id`` is skipped with a warning:
    its request counts as unanswered and is resubmitted."""
    answers: dict[str, bytes] = {}
    failures: dict[str, str] = {}
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            key = row["custom_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("batch results line %d is not a result line; its request will be asked again", number)
            continue
        response = row.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")
        if row.get("error") or status != 200 or body is None:
            error = row.get("error") or {}
            message = error.get("message") if isinstance(error, dict) else str(error)
            failures[key] = message or f"status {status}"
        else:
            answers[key] = (
                json.dumps(body).encode()
                if not isinstance(body, (str, bytes))
                else (body.encode() if isinstance(body, str) else body)
            )
    return answers, failures


# ---------------------------------------------------------------------------------------------- the journal


class BatchJournal:
    """Every batch job submitted, by id, in an append-only JSONL file (a job's last row is its state).

    Written before a job is waited on, so a killed run re-attaches to its jobs instead of uploading again."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.jobs: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for raw in self.path.read_bytes().splitlines():
                try:
                    row = json.loads(raw)
                    self.jobs[row["id"]] = row
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line of a killed run

    def record(self, row: dict[str, Any]) -> None:
        self.jobs[row["id"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def open_jobs(self, endpoint: str, keys: set[str]) -> list[dict[str, Any]]:
        """Jobs on ``endpoint`` not yet imported that were submitted for any of ``keys``."""
        return [
            job
            for job in self.jobs.values()
            if job.get("endpoint") == endpoint and not job.get("imported") and keys.intersection(job["keys"])
        ]


def endpoint_id(base_url: str) -> str:
    """What the journal knows an endpoint by: a digest, so no URL (which may hold credentials) is written."""
    return hashlib.sha256(base_url.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- the API


class BatchApi:
    """The four calls of the Batch API on one endpoint, with ``openai`` errors turned into ours."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float):
        self.base_url = base_url
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "no-key-needed", max_retries=2, timeout=timeout
        )

    async def supported(self) -> bool:
        """Whether the endpoint serves ``/batches`` (asked with a one-item listing, which uploads nothing)."""
        try:
            await self._client.batches.list(limit=1)
        except openai.NotFoundError:
            return False
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):
                return False
            raise _translate(exc) from None
        except openai.OpenAIError as exc:
            raise _translate(exc) from None
        return True

    async def submit(self, data: bytes, endpoint: str, window: str) -> dict[str, Any]:
        """Upload one input file and create its job; the job as a dict."""
        uploaded = await _call(self._client.files.create(file=("batch.jsonl", data), purpose="batch"))
        job = await _call(
            self._client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window=window)
        )
        return job.model_dump()

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return (await _call(self._client.batches.retrieve(batch_id))).model_dump()

    async def content(self, file_id: str) -> bytes:
        return (await _call(self._client.files.content(file_id))).content

    async def aclose(self) -> None:
        await self._client.close()


async def _call(request: Awaitable[T]) -> T:
    """Await one SDK call, its ``openai`` error turned into ours."""
    try:
        return await request
    except openai.OpenAIError as exc:
        raise _translate(exc) from None


def _translate(exc: BaseException) -> LLMError:
    status = getattr(exc, "status_code", None)
    if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
        return LLMRequestError(f"batch API: {type(exc).__name__} (status {status})", status=status)
    return LLMBadResponse(
        f"batch API: {type(exc).__name__}" + (f" (status {status})" if status else ""), status=status
    )


# ---------------------------------------------------------------------------------------------- gathering


@dataclass
class _Ask:
    key: str
    kind: str
    model: str
    payload: Any
    request: dict[str, Any]
    future: asyncio.Future = field(repr=False)

    def line(self) -> bytes:
        return json.dumps(
            request_line(self.key, self.kind, self.model, self.payload, self.request),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")


class BatchGatherer:
    """Holds the cache misses of one step and answers them through batch jobs (or a batch file)."""

    def __init__(
        self,
        cfg: LLMConfig,
        api: BatchApi | None,
        cache: ResponseCache,
        ledger: UsageLedger,
        parse: Callable[[str, str, bytes], Completion],
        charge: Callable[..., None],
        check_budget: Callable[[float], None],
        estimate: Callable[..., float],
        quiet: float = 0.3,
    ):
        self.cfg = cfg
        self.charge = charge  # adds an answer's price to the ledger
        self.check_budget = check_budget  # raises CostLimitReached before a job would cross max_cost
        self.estimate = estimate  # the most one request can cost
        self.api = api
        self.cache = cache
        self.ledger = ledger
        self.parse = parse
        self.quiet = quiet
        self.journal = BatchJournal(Path(cache.path).parent / JOURNAL)
        self._asks: dict[str, _Ask] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._committed = 0.0  # USD: the most the jobs submitted and not yet imported can cost

    async def ask(self, key: str, kind: str, model: str, payload: Any, request: dict[str, Any]) -> Completion:
        """The answer to one request, once the step it belongs to has gone through a batch job."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._asks[key] = _Ask(key, kind, model, payload, request, future)
        if self._timer is not None:
            self._timer.cancel()
        # The step is complete when nobody has asked anything for ``quiet`` seconds: every task of the stage
        # is then waiting on an answer, so no further request can come before one arrives.
        self._timer = loop.call_later(self.quiet, self._flush)
        return await future

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        asks, self._asks, self._timer = self._asks, {}, None
        task = asyncio.ensure_future(self._settle(asks))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, asks: dict[str, _Ask]) -> None:
        try:
            if self.cfg.batch == "file":
                self._export(asks)
            else:
                await self._run(asks)
        except BaseException as exc:
            for ask in asks.values():
                if not ask.future.done():
                    ask.future.set_exception(exc)
                    ask.future.exception()  # retrieved: the stage sees it through the task awaiting the future
            if not isinstance(exc, Exception):
                raise

    # ------------------------------------------------------------------------------------------ file mode

    def _export(self, asks: dict[str, _Ask]) -> None:
        """Write the step's requests to ``batch_file`` (whole or absent) and stop the stage."""
        path = Path(self.cfg.batch_file)
        lines = sorted(ask.line() for ask in asks.values())
        write_atomic(path, b"".join(line + b"\n" for line in lines))
        raise BatchWaiting(
            f"wrote {len(lines)} pending request(s) to {path} (OpenAI batch format). Run them, e.g. "
            f"`vllm run-batch -i {path} -o results.jsonl --model MODEL`, then `datagen batch import results.jsonl` "
            "and run the same command again with --resume"
        )

    # ------------------------------------------------------------------------------------------ Batch API

    async def _run(self, asks: dict[str, _Ask]) -> None:
        assert self.api is not None
        where = endpoint_id(self.api.base_url)
        todo = dict(asks)
        attempts: dict[str, int] = dict.fromkeys(todo, 0)
        jobs = [job["id"] for job in self.journal.open_jobs(where, set(todo))]
        if jobs:
            log.info("batch: re-attaching to %d job(s) submitted by an earlier run", len(jobs))
            for batch_id in jobs:
                for key in self.journal.jobs[batch_id]["keys"]:
                    if key in attempts:
                        attempts[key] += 1
        while todo:
            covered = {key for batch_id in jobs for key in self.journal.jobs[batch_id]["keys"]}
            fresh = [todo[key] for key in sorted(todo) if key not in covered]
            jobs += await self._submit(fresh, where)
            for ask in fresh:
                attempts[ask.key] += 1
            failures = await self._wait(jobs, todo)
            jobs, self._committed = [], 0.0  # what the jobs cost is in the ledger now
            for key in list(todo):
                if attempts[key] >= self.cfg.batch_max_attempts:
                    ask = todo.pop(key)
                    reason = failures.get(key, "not answered")
                    self.ledger.batch_failed += 1
                    if not ask.future.done():
                        ask.future.set_exception(
                            BatchFailed(
                                f"batch job left the request unanswered after {attempts[key]} submission(s): {reason}"
                            )
                        )
                        ask.future.exception()
            if todo:
                log.info("batch: resubmitting %d request(s) that were not answered", len(todo))

    async def _submit(self, asks: list[_Ask], where: str) -> list[str]:
        """Upload and create jobs for ``asks`` (one per file part); journal each before returning."""
        ids: list[str] = []
        by_kind: dict[str, list[_Ask]] = {}
        for ask in asks:
            by_kind.setdefault(ask.kind, []).append(ask)
        for kind, group in by_kind.items():
            parts = split_lines([ask.line() for ask in group], self.cfg.batch_max_requests, self.cfg.batch_max_bytes)
            start = 0
            for part in parts:
                count = part.count(b"\n")
                members = group[start : start + count]
                start += count
                estimate = sum(self.estimate(a.model, a.payload, a.request, batch=True) for a in members)
                self.check_budget(self._committed + estimate)
                self._committed += estimate
                job = await self.api.submit(part, "/v1" + PATHS[kind], self.cfg.completion_window)
                self.journal.record(
                    {
                        "id": job["id"],
                        "input_file_id": job.get("input_file_id"),
                        "endpoint": where,
                        "keys": [ask.key for ask in members],
                        "submitted_at": time.time(),
                        "imported": False,
                    }
                )
                self.ledger.batches.append(job["id"])
                self.ledger.batch_requests += count
                ids.append(job["id"])
                log.info("batch: submitted job %s with %d request(s)", job["id"], count)
        return ids

    async def _wait(self, jobs: list[str], todo: dict[str, _Ask]) -> dict[str, str]:
        """Poll ``jobs`` until each is final, import their answers, resolve their asks; failures by key."""
        from datagen.progress import progress

        failures: dict[str, str] = {}
        waiting = set(jobs)
        started = time.monotonic()
        total = sum(len(self.journal.jobs[j]["keys"]) for j in jobs)
        errors = 0
        with progress(total, "batch") as bar:
            while waiting:
                done_count = failed_count = 0
                for batch_id in sorted(waiting):
                    try:
                        job = await self.api.retrieve(batch_id)
                    except LLMError as exc:  # a 5xx while polling: the job runs on, ask again later
                        errors += 1
                        if errors > self.cfg.max_retries + 10:
                            raise
                        log.info("batch: polling %s failed (%s); trying again", batch_id, exc)
                        continue
                    counts = job.get("request_counts") or {}
                    done_count += int(counts.get("completed") or 0)
                    failed_count += int(counts.get("failed") or 0)
                    if job.get("status") in FINAL:
                        waiting.discard(batch_id)
                        failures.update(await self._import(job, todo))
                bar.set_postfix(
                    completed=done_count,
                    failed=failed_count,
                    waited=f"{time.monotonic() - started:.0f}s",
                    refresh=False,
                )
                bar.n = min(total, done_count + failed_count)
                bar.refresh()
                if waiting:
                    await asyncio.sleep(self.cfg.poll_interval)
        return failures

    async def _import(self, job: dict[str, Any], todo: dict[str, _Ask]) -> dict[str, str]:
        """Cache every answer a final job holds and resolve its asks; the rest are failures."""
        answers: dict[str, bytes] = {}
        failures: dict[str, str] = {}
        for name in ("output_file_id", "error_file_id"):
            if job.get(name):
                got, failed = read_results(await self.api.content(job[name]))
                answers.update(got)
                failures.update(failed)
        record = self.journal.jobs[job["id"]]
        # every answer is cached, also those a re-attached job holds for requests not asked now
        parsed, malformed = _parse_answers(answers, self.parse, todo)
        failures.update(malformed)  # a malformed answer line is an unanswered request
        # On disk before anyone sees an answer: the resume contract.
        await asyncio.to_thread(self.cache.put_many, [(k, c.model, c.to_cache()) for k, c in parsed])
        for key, completion in parsed:
            self.ledger.batch_succeeded += 1
            self.ledger.batch_prompt_tokens += completion.prompt_tokens
            self.ledger.batch_completion_tokens += completion.completion_tokens
            self.charge(completion, batch=True)
            ask = todo.pop(key, None)
            if ask is not None and not ask.future.done():
                ask.future.set_result(completion)
        for key in record["keys"]:
            if key in todo and key not in failures:
                failures[key] = f"job {job['status']}" + (
                    "" if job["status"] == "completed" else " before answering it"
                )
        if job["status"] == "failed" and job.get("errors"):
            log.warning("batch: job %s failed: %s", job["id"], json.dumps(job["errors"])[:300])
        self.journal.record({**record, "status": job["status"], "imported": True})
        return failures


def check_batch_config(cfg: LLMConfig) -> None:
    """What batch mode needs before anything is sent: the cache (answers land there), a model name in file mode."""
    if cfg.batch == "off":
        return
    if not cfg.cache:
        raise ConfigError("batch mode stores answers in the answer cache: drop --no-cache (llm.cache: false)")
    if cfg.batch == "file" and not cfg.model:
        raise ConfigError("batch file mode writes requests for a named model: pass --model (endpoint.model)")


def import_results(path: Path, cache: ResponseCache, parse: Callable[[str, str, bytes], Completion]) -> dict[str, int]:
    """Load a batch results file (OpenAI format, what ``vllm run-batch -o`` writes) into the answer cache."""
    answers, failures = read_results(Path(path).read_bytes())
    parsed, malformed = _parse_answers(answers, parse, {})  # a malformed line is counted and skipped
    stored = cache.put_many([(key, completion.model, completion.to_cache()) for key, completion in parsed])
    return {"imported": stored, "failed": len(failures), "malformed": len(malformed)}


def _parse_answers(
    answers: dict[str, bytes], parse: Callable[[str, str, bytes], Completion], asks: dict[str, _Ask]
) -> tuple[list[tuple[str, Completion]], dict[str, str]]:
    """The answers that parse, as ``(key, completion)``, and why each other one did not, by key. An answer to
    a request in ``asks`` is parsed as that request's kind and model, any other as the kind its body shows."""
    parsed: list[tuple[str, Completion]] = []
    malformed: dict[str, str] = {}
    for key, body in answers.items():
        ask = asks.get(key)
        try:
            parsed.append((key, parse(ask.kind if ask else _kind_of(body), ask.model if ask else "", body)))
        except Exception as exc:  # noqa: BLE001 - a malformed answer must not stop the others
            malformed[key] = f"malformed answer: {getattr(exc, 'error', exc)}"
    return parsed, malformed


def _kind_of(body: bytes) -> str:
    """``chat`` or ``completion``, from an answer body (a chat choice has a ``message``)."""
    try:
        choice = (json.loads(body).get("choices") or [{}])[0]
    except (ValueError, AttributeError, TypeError):
        return "chat"
    return "chat" if isinstance(choice, dict) and "message" in choice else "completion"
