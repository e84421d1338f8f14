"""``datagen inspect FILE``: a quick terminal summary of any dataset file (any supported format).

Counts, length statistics, methods, languages, reject reasons, and a few samples, so a user can look at
a file without opening it.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from datagen.formats import read_any
from datagen.lang import count_units, detect_lang
from datagen.records import Example


def summarize(path: str | Path, samples: int = 3, seed: int = 0) -> dict[str, Any]:
    """Summary numbers of a dataset file, plus ``samples`` random records."""
    records = read_any(path)
    langs = Counter(r.lang or detect_lang(r.instruction + " " + r.output) for r in records)

    def lengths(field: str) -> dict[str, float]:
        values = [count_units(getattr(r, field), r.lang or detect_lang(getattr(r, field))) for r in records]
        if not values:
            return {}
        return {"min": min(values), "median": statistics.median(values), "mean": round(statistics.fmean(values), 1),
                "max": max(values)}

    rng = random.Random(seed)
    return {
        "path": str(path), "records": len(records),
        "methods": dict(Counter(r.meta.get("method", "unknown") for r in records).most_common()),
        "langs": dict(langs.most_common()),
        "with_input": sum(1 for r in records if r.input),
        "multi_turn": sum(1 for r in records if r.messages and sum(m["role"] == "user" for m in r.messages) > 1),
        "classification": sum(1 for r in records if r.is_classification),
        "reject_reasons": dict(Counter(r.reject.get("reason") for r in records if r.reject).most_common()),
        "instruction_length": lengths("instruction"), "output_length": lengths("output"),
        "samples": rng.sample(records, min(samples, len(records))),
    }


def render(summary: dict[str, Any]) -> str:
    """Plain-text rendering of ``summarize``'s result."""
    lines = [f"{summary['path']}: {summary['records']} records"]
    for key in ("methods", "langs", "reject_reasons"):
        if summary[key]:
            lines.append(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items()))
    lines.append(f"  with input: {summary['with_input']}, multi-turn: {summary['multi_turn']}, "
                 f"classification: {summary['classification']}")
    for key in ("instruction_length", "output_length"):
        stats = summary[key]
        if stats:
            lines.append(f"  {key.replace('_', ' ')} (words; characters for Chinese): "
                         + ", ".join(f"{k} {v}" for k, v in stats.items()))
    for record in summary["samples"]:
        lines.append("  ---")
        lines.extend(_sample(record))
    return "\n".join(lines)


def _sample(record: Example, width: int = 300) -> list[str]:
    def cut(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[:width] + "…"
    out = [f"  instruction: {cut(record.instruction)}"]
    if record.input:
        out.append(f"  input: {cut(record.input)}")
    out.append(f"  output: {cut(record.output)}")
    return out
