"""``datagen inspect FILE``: a quick terminal summary of any dataset file (any supported format).

Counts, length statistics, methods, languages and a few samples, so a user can look at a file without
opening it. On a rejects file the samples give way to the rejects grouped by reason: each reason's count,
the stage(s) that applied it and one example with its detail, commonest first, so "why was so much
dropped?" is answered by one command:

    $ datagen inspect outputs/seeds-to-sft/filter/rejects.jsonl
    ...
      rejects by reason (3 reasons):
        too_short_output: 5 (heuristics)
          instruction: Describe the water cycle.
          answer: Rain.
          detail: 1 word(s) for an open task
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from datagen.formats import read_any
from datagen.records import Example
from datagen.text import count_units, detect_lang


def summarize(path: str | Path, samples: int = 3, seed: int = 0) -> dict[str, Any]:
    """Summary numbers of a dataset file, plus ``samples`` random records."""
    records = read_any(path)
    langs = Counter(r.lang or detect_lang(r.instruction + " " + r.output) for r in records)

    def lengths(field: str) -> dict[str, float]:
        values = [count_units(getattr(r, field), r.lang or detect_lang(getattr(r, field))) for r in records]
        if not values:
            return {}
        return {
            "min": min(values),
            "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 1),
            "max": max(values),
        }

    rng = random.Random(seed)
    return {
        "path": str(path),
        "records": len(records),
        "methods": dict(Counter(r.meta.get("method", "unknown") for r in records).most_common()),
        "langs": dict(langs.most_common()),
        "with_input": sum(1 for r in records if r.input),
        "multi_turn": sum(1 for r in records if r.messages and sum(m["role"] == "user" for m in r.messages) > 1),
        "classification": sum(1 for r in records if r.is_classification),
        "reject_reasons": dict(Counter(r.reject.get("reason") for r in records if r.reject).most_common()),
        "reject_groups": reject_groups(records),
        "instruction_length": lengths("instruction"),
        "output_length": lengths("output"),
        "samples": rng.sample(records, min(samples, len(records))),
    }


def render(summary: dict[str, Any]) -> str:
    """Plain-text rendering of ``summarize``'s result."""
    lines = [f"{summary['path']}: {summary['records']} records"]
    for key in ("methods", "langs"):
        if summary[key]:
            lines.append(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items()))
    lines.append(
        f"  with input: {summary['with_input']}, multi-turn: {summary['multi_turn']}, "
        f"classification: {summary['classification']}"
    )
    for key in ("instruction_length", "output_length"):
        if summary[key]:
            lines.append(
                f"  {key.replace('_', ' ')} (words; characters for Chinese): "
                + ", ".join(f"{k} {v}" for k, v in summary[key].items())
            )
    groups = summary.get("reject_groups") or []
    if groups:
        lines.append(f"  rejects by reason ({len(groups)} reason{'s' if len(groups) != 1 else ''}):")
        for group in groups:
            stages = ", ".join(group["stages"])
            lines.append(f"    {group['reason']}: {group['count']}" + (f" ({stages})" if stages else ""))
            lines.extend("    " + line for line in _sample(group["example"], answer=True))
            if group["detail"]:
                lines.append(f"      detail: {snippet(group['detail'])}")
        return "\n".join(lines)
    for record in summary["samples"]:
        lines.append("  ---")
        lines.extend(_sample(record))
    return "\n".join(lines)


def reject_groups(records: list[Example]) -> list[dict[str, Any]]:
    """Rejected records grouped by reason, commonest first: count, stages that applied it, first example.

    >>> from datagen.records import Example
    >>> rows = [Example("a", "", reject={"stage": "heuristics", "reason": "empty_output"}),
    ...         Example("b", "x", reject={"stage": "rouge", "reason": "rouge_duplicate", "detail": "0.82"}),
    ...         Example("c", "", reject={"stage": "heuristics", "reason": "empty_output"})]
    >>> [(g["reason"], g["count"], g["example"].instruction) for g in reject_groups(rows)]
    [('empty_output', 2, 'a'), ('rouge_duplicate', 1, 'b')]
    """
    groups: dict[str, dict[str, Any]] = {}
    for record in records:
        if not record.reject:
            continue
        reason = str(record.reject.get("reason") or "unknown")
        group = groups.setdefault(
            reason,
            {
                "reason": reason,
                "count": 0,
                "stages": Counter(),
                "example": record,
                "detail": reject_detail(record.reject),
            },
        )
        group["count"] += 1
        if record.reject.get("stage"):
            group["stages"][str(record.reject["stage"])] += 1
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["reason"]))
    return [{**g, "stages": [s for s, _ in g["stages"].most_common()]} for g in ordered]


def reject_detail(reject: dict[str, Any]) -> str:
    """A reject's ``detail`` as text (JSON for a structured one; empty when it has none)."""
    detail = reject.get("detail")
    if detail is None:
        return ""
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, default=str)


def snippet(text: Any, width: int = 300) -> str:
    """``text`` on one line (``None``: empty), cut to ``width`` characters with an ellipsis (also the report's)."""
    text = " ".join(str(text if text is not None else "").split())
    return text if len(text) <= width else text[:width] + "…"


def _sample(record: Example, answer: bool = False) -> list[str]:
    out = [f"  instruction: {snippet(record.instruction)}"]
    if record.input:
        out.append(f"  input: {snippet(record.input)}")
    text = record.output
    if record.messages:  # a conversation: its last answer is what a rule usually judged
        replies = [m["content"] for m in record.messages if m.get("role") == "assistant" and m.get("content")]
        text = replies[-1] if replies and answer else text
    out.append(f"  {'answer' if answer else 'output'}: {snippet(text) or '(empty)'}")
    return out
