"""Optional LLM judge, the filter's last stage: an LLM scores each record 1-5 for helpfulness and correctness.

Run it:  datagen filter gen/records.jsonl --out curated/ --judge --judge-min-score 4 --base-url embedded

The rubric prompt is ``prompts/<lang>/filter_judge.j2`` (the record's language picks it); the answer ends
with a line ``Score: N`` (``评分：N``). Records scoring below ``judge_min_score`` are dropped; every score,
kept or not, is stored in ``meta.filter.judge``. Requests go through ``LLMClient``, so answers are cached:
a re-run, or a run resumed after a crash, replays them and pays only for what is missing. An answer with
no score is data, not a crash: the record is rejected as ``judge_unparseable`` with the raw text.

    >>> parse_score("Clear and correct, one small omission.\\nScore: 4")
    4
    >>> parse_score("回答正确，但不够完整。\\n评分：3"), parse_score("I would rate it highly.")
    (3, None)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datagen.llm.client import Completion, LLMClient, LLMConfig, SamplingParams, map_bounded
from datagen.progress import progress
from datagen.prompts import render
from datagen.records import Example
from datagen.text import detect_lang

STAGE = "judge"
TEMPLATE = "filter_judge"
#: Deterministic, and room for a sentence of rationale before the score line.
SAMPLING = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=256)

_SCORE = re.compile(r"(?:score|rating|评分|得分|分数)\s*\**\s*[:：=]?\s*\**\s*([1-5])(?![0-9.])", re.I)


def judge_messages(example: Example) -> list[dict[str, str]]:
    """The one-message chat that asks for a score: the rubric template around the record's conversation."""
    conversation = example.conversation()
    lang = detect_lang(example.instruction or conversation[0]["content"])
    return [{"role": "user", "content": render(f"{lang}/{TEMPLATE}", conversation=conversation)}]


def parse_score(text: str) -> int | None:
    """The 1-5 score in a judge's answer: the last ``Score: N`` / ``评分：N``, or a bare digit; else None."""
    found = _SCORE.findall(text)
    if found:
        return int(found[-1])
    bare = text.strip().rstrip(".。")
    return int(bare) if bare in {"1", "2", "3", "4", "5"} else None


@dataclass
class Verdict:
    """The judge's word on one record: a score, or why there is none (``error`` is a reject reason)."""

    score: int | None
    text: str = ""
    model: str | None = None
    error: str | None = None
    detail: str | None = None

    def meta(self) -> dict[str, Any]:
        """What ``meta.filter.judge`` stores: the score, the model and the rationale (first 500 characters)."""
        out: dict[str, Any] = {"score": self.score, "model": self.model, "rationale": self.text[:500]}
        if self.error:
            out["error"] = self.error
        return out


def _verdict(result: Completion | BaseException) -> Verdict:
    if isinstance(result, BaseException):  # an LLMError past the retry budget (map_bounded re-raises the rest)
        return Verdict(score=None, error="judge_error", detail=f"{getattr(result, 'reason', 'error')}: {result}")
    score = parse_score(result.text)
    if score is None:
        return Verdict(
            score=None, text=result.text, model=result.model, error="judge_unparseable", detail=result.text[:1000]
        )
    return Verdict(score=score, text=result.text, model=result.model)


async def judge_examples(
    examples: Sequence[Example], llm: LLMConfig, sampling: SamplingParams = SAMPLING
) -> tuple[list[Verdict], dict[str, Any]]:
    """A verdict per example, in order, and the client's usage ledger."""
    verdicts: list[Verdict | None] = [None] * len(examples)
    async with LLMClient(llm) as client:

        async def one(i: int) -> Completion:
            return await client.chat(judge_messages(examples[i]), sampling)

        with progress(len(examples), "filter: judge") as bar:
            async for i, result in map_bounded(one, range(len(examples)), limit=llm.gather_limit):
                verdicts[i] = _verdict(result)
                bar.update()
        ledger = client.ledger.as_dict()
    return verdicts, ledger  # type: ignore[return-value]  # map_bounded yields every item or raises
