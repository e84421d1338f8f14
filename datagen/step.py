"""One LLM step of a stage: ask what is not settled yet, log each answer as it lands, replay the rest.

Every generator asks the LLM the way ``checkpoint.py`` describes; ``Step`` is that loop, written once:

    with Step(out, "answers") as step:
        await step.answer(prompts, key=lambda p: p.key, ask=lambda p: llm.chat(p.messages, params),
                          row=lambda p, result: answer_row(p.key, result), limit=8, desc="answers")
        rows = [step.done[p.key] for p in prompts]        # every key is settled now
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

from datagen.checkpoint import StageLog, not_failed
from datagen.errors import CircuitOpen, ConfigError, LLMError
from datagen.llm.client import Completion, LLMClient, SamplingParams, map_bounded
from datagen.progress import progress
from datagen.records import Example

T, R = TypeVar("T"), TypeVar("R")
Row = dict[str, Any]


def answer_row(key: str, result: Completion | BaseException, failed_as: str = "llm_failed", **extra: Any) -> Row:
    """The log row of one raw answer: ``{"key", **extra, "text", "finish_reason", "model", "usage"}``.

    A failure is ``{"key", **extra, "llm_failed": true, "reason", "detail"}``; with ``failed_as="error"`` (the
    bootstrap logs' older form) ``{"key", **extra, "error": reason, "detail"}``.

    >>> from datagen.errors import LLMTimeout
    >>> answer_row("k", LLMTimeout("boom"), failed_as="error")
    {'key': 'k', 'error': 'timeout', 'detail': 'boom'}
    """
    if isinstance(result, LLMError):
        failure = {"error": result.reason} if failed_as == "error" else {"llm_failed": True, "reason": result.reason}
        return {"key": key, **extra, **failure, "detail": str(result)}
    return {
        "key": key,
        **extra,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "model": result.model,
        "usage": result.usage,
    }


def as_request(style: str, prompt: str) -> tuple[str, str | list[dict[str, str]]]:
    """``(kind, payload)`` of a prompt: the text itself for /v1/completions, one user turn for a chat.

    >>> as_request("chat", "Hi")
    ('chat', [{'role': 'user', 'content': 'Hi'}])
    """
    return ("completion", prompt) if style == "completion" else ("chat", [{"role": "user", "content": prompt}])


async def ask(llm: LLMClient, kind: str, payload: Any, params: SamplingParams, sample_index: int = 0) -> Completion:
    """Send one request of ``kind`` (``as_request``) through the client and its cache."""
    if kind == "completion":
        return await llm.complete(payload, params, sample_index)
    return await llm.chat(payload, params, sample_index)


class Step(StageLog):
    """The log of one LLM step (``OUT/.state/<name>.jsonl``) and the loop that fills it. ``keep`` says which
    rows stay settled on resume: ``not_failed`` asks a failed request again, ``None`` replays the failure."""

    def __init__(self, out: Path, name: str, keep: Callable[[Row], bool] | None = not_failed):
        super().__init__(out, name, keep=keep)

    def check(self, key: str, digest: str | None) -> None:
        """Refuse a log whose row for ``key`` answered another request (other seeds or settings)."""
        row = self.done.get(key)
        if digest is not None and row is not None and row["prompt"] != digest:
            raise ConfigError(
                f"{self.path}: state was written by a run with other seeds or settings; "
                "use a new --out folder (or delete it) to start over"
            )

    async def answer(
        self,
        items: Sequence[T],
        key: Callable[[T], str],
        ask: Callable[[T], Awaitable[R]],
        row: Callable[[T, R | LLMError], Row],
        limit: int,
        desc: str | None = None,
    ) -> int:
        """Ask ``ask(item)`` for every item whose key is not settled (at most ``limit`` in flight) and append
        ``row(item, result)`` as each lands; a failed request is data, a dead endpoint or a bug stops the
        run. Returns how many items were settled already (resumed)."""
        todo = [item for item in items if key(item) not in self.done]
        with progress(len(items), desc, initial=len(items) - len(todo)) if desc else nullcontext() as bar:
            async for item, result in map_bounded(ask, todo, limit=max(1, limit)):
                self.append(row(item, result))  # type: ignore[arg-type]  # map_bounded raises all but LLMError
                if bar is not None:
                    bar.update()
        return len(items) - len(todo)

    async def answer_one(
        self,
        key: str,
        ask: Callable[[], Awaitable[Completion]],
        digest: str | None = None,
        failed_as: str = "llm_failed",
    ) -> Row:
        """One answer as an ``answer_row`` (with ``prompt=digest`` when given): replayed from the log, or asked
        for and logged at once."""
        self.check(key, digest)
        if key in self.done:
            return self.done[key]
        try:
            result: Completion | LLMError = await ask()
        except CircuitOpen:
            raise
        except LLMError as exc:  # a failed request is data: logged, and replayed or asked again on resume
            result = exc
        extra = {} if digest is None else {"prompt": digest}
        row = answer_row(key, result, failed_as, **extra)
        self.append(row)
        return row


def failed_row(key: str, record: Example, stage: str, error: LLMError) -> Row:
    """The row of a record log (``StageLog.split_records``) for a request that failed for good: a reject, and
    not settled under ``not_failed``, so a re-run asks it again."""
    return {
        "key": key,
        "record": record.to_dict(),
        "llm_failed": True,
        "reject": {"stage": stage, "reason": error.reason, "detail": str(error)},
    }


def truncated_reject(stage: str, completion: Completion) -> dict[str, Any]:
    """The ``reject`` of an answer cut off at ``max_tokens``."""
    return {
        "stage": stage,
        "reason": "truncated",
        "detail": f"finish_reason=length after {completion.completion_tokens} tokens",
    }
