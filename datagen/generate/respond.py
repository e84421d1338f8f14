"""Answer every prompt in a file with an LLM: the simplest generator, and the resumable-stage pattern.

Run it:  datagen respond --in curated.jsonl --out answers/ --base-url http://127.0.0.1:8000/v1

Each input record becomes a conversation (its ``messages`` minus a final assistant turn, or one user turn
built from ``instruction`` + ``input``); the answer becomes the record's ``output``. Answers are appended to
``OUT/.state/responses.jsonl`` as they arrive; a killed run re-reads that file, skips what is done,
and the LLM cache replays answers that arrived but were not yet written. Requests that failed for good
are written as rejects and asked again by the next run. When every prompt is settled the
final files are written atomically in input order, so ``responses.jsonl`` is whole or absent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.checkpoint import write_outputs
from datagen.errors import ConfigError, LLMError
from datagen.formats import read_any
from datagen.llm.client import Completion, LLMClient, LLMConfig, SamplingParams
from datagen.records import Example
from datagen.step import Step, failed_row, truncated_reject

STAGE = "respond"


@dataclass(frozen=True)
class RespondConfig:
    inputs: Path  # records in any supported format
    out: Path  # output folder
    llm: LLMConfig = field(default_factory=LLMConfig)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None  # system message prepended to every conversation


def build_messages(example: Example, system: str | None) -> list[dict[str, str]]:
    """The conversation to answer: the record's turns up to its last user turn, or one user turn."""
    messages = example.conversation(system)
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    return messages


def _answered(example: Example, messages: list[dict[str, str]], completion: Completion) -> Example:
    """The record with its answer: appended to its ``messages`` if it has them, else as its ``output``."""
    meta = {
        **example.meta,
        "model": completion.model,
        "usage": completion.usage,
        "source": example.meta.get("source", example.id),
        "finish_reason": completion.finish_reason,
    }
    text = completion.text
    return Example(
        instruction=example.instruction,
        input=example.input,
        output=(example.output or text) if example.messages else text,
        messages=[*messages, {"role": "assistant", "content": text}] if example.messages else None,
        lang=example.lang,
        meta=meta,
        is_classification=example.is_classification,
    )


async def respond(cfg: RespondConfig) -> dict[str, Any]:
    """Answer every input record; returns the stats also written to ``OUT/stats.json``."""
    started = time.monotonic()
    examples = read_any(cfg.inputs)  # validates the whole input before anything is written
    if not examples:
        raise ConfigError(f"{cfg.inputs}: no records to answer")
    keyed = [(f"{i}:{e.id}", e) for i, e in enumerate(examples)]

    with Step(cfg.out, "responses") as log:
        async with LLMClient(cfg.llm) as llm:

            async def answer(item: tuple[str, Example]):
                messages = build_messages(item[1], cfg.system)
                return messages, await llm.chat(messages, cfg.sampling)

            resumed = await log.answer(
                keyed,
                key=lambda item: item[0],
                ask=answer,
                row=lambda item, result: _record_row(*item, result),
                limit=cfg.llm.gather_limit,
                desc="respond",
            )
            ledger = llm.ledger.as_dict()

    kept, rejects = log.split_records(key for key, _ in keyed)
    stats = {
        "stage": STAGE,
        "inputs": len(examples),
        "resumed_from": resumed,
        "llm": ledger,
        "seconds": round(time.monotonic() - started, 3),
    }
    return write_outputs(cfg.out, kept, rejects, stats, kept_name="responses.jsonl")


def _record_row(key: str, example: Example, result: Any) -> dict[str, Any]:
    """The state row for one finished request: the answered record, or a reject with its reason."""
    if isinstance(result, LLMError):
        return failed_row(key, example, STAGE, result)
    messages, completion = result
    record = _answered(example, messages, completion)
    row: dict[str, Any] = {"key": key, "record": record.to_dict()}
    if completion.truncated:
        row["reject"] = truncated_reject(STAGE, completion)
    return row
