"""Resumable stage state: a keyed append-only log of settled work, and the stage's final outputs.

Every generator works the same way, so a killed run loses nothing and a resumed one pays nothing twice:

1. Each unit of work (a prompt, a chunk, a task) has a stable key. When it is settled, one row
   ``{"key": ..., ...}`` is appended to ``OUT/.state/<name>.jsonl`` (``ShardWriter``: flushed per row,
   torn tail repaired on reopen).
2. A re-run reads the log, skips settled keys, and re-asks the rest; answers that arrived but were not yet
   logged come back free from the LLM cache.
3. When all work is settled, ``write_outputs`` writes the kept records, the rejects (each with
   ``reject.stage/reason/detail``) and ``stats.json`` atomically, so final files are whole or absent.

    with StageLog(out, "questions") as log:
        for key, item in todo(items, log.done):
            log.append({"key": key, "questions": [...]})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from datagen.records import Example, ShardWriter, read_jsonl_tolerant, write_json, write_jsonl


class StageLog:
    """The settled-work log of one step of a stage; ``done`` maps key → row as read at open plus appends."""

    def __init__(self, out: Path, name: str, keep: Any = None):
        self.path = Path(out) / ".state" / f"{name}.jsonl"
        latest = {row["key"]: row for row in read_jsonl_tolerant(self.path)}  # a key's last row is its outcome
        # ``keep`` lets a stage forget rows it wants redone (e.g. requests that failed for good last time). It
        # judges a key's last row only: an older answer must not stand in for a newer failure.
        self.keep = keep
        self.done: dict[str, dict[str, Any]] = {k: r for k, r in latest.items() if self.lasts(r)}
        self._writer: ShardWriter | None = None

    def lasts(self, row: dict[str, Any]) -> bool:
        """Whether ``row`` stays settled on resume (a failure under ``not_failed`` does not: it is asked again)."""
        return self.keep is None or self.keep(row)

    def append(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = ShardWriter(self.path)
        self._writer.write(row)
        self.done[row["key"]] = row

    def split_records(self, keys: Iterable[str]) -> tuple[list[Example], list[Example]]:
        """Kept records and rejects, in ``keys`` order, from settled rows ``{"key", "record", "reject"?}``."""
        kept: list[Example] = []
        rejects: list[Example] = []
        for key in keys:
            row = self.done[key]
            record = Example.from_dict(row["record"], f"{self.path}:{key}")
            if "reject" in row:
                rejects.append(make_reject(record, **row["reject"]))
            else:
                kept.append(record)
        return kept, rejects

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def not_failed(row: dict[str, Any]) -> bool:
    """``StageLog``'s ``keep`` for logs whose rows mark a request that failed for good (``llm_failed``, or
    ``error`` in the bootstrap logs): such a row is not settled, so a re-run asks the request again (the
    endpoint may be back)."""
    return not row.get("llm_failed") and "error" not in row


def make_reject(example: Example, stage: str, reason: str, detail: Any = None, **extra: Any) -> Example:
    """Tag ``example`` as dropped by ``stage`` for ``reason`` (what rejects files hold)."""
    example.reject = {"stage": stage, "reason": reason, "detail": detail, **extra}
    return example


def count_reasons(rejects: Iterable[Example]) -> dict[str, int]:
    return dict(Counter(r.reject["reason"] for r in rejects if r.reject))


def write_outputs(
    out: Path, kept: list[Example], rejects: list[Example], stats: dict[str, Any], kept_name: str = "records.jsonl"
) -> dict[str, Any]:
    """Write kept records, rejects and ``stats.json`` (with counts filled in) atomically; returns stats."""
    out = Path(out)
    write_jsonl(out / "rejects.jsonl", rejects)
    write_jsonl(out / kept_name, kept)
    stats = {**stats, "kept": len(kept), "rejected": len(rejects), "rejects_by_reason": count_reasons(rejects)}
    write_json(out / "stats.json", stats)
    return stats
