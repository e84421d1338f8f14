"""Dedup against data you already have: ``datagen filter new.jsonl --against round1/curated.jsonl ...``.

A new round of generation repeats what earlier rounds made. ``--against OLD...`` drops each new record whose
prompt is the same as an old record's (normalised as exact dedup does) or whose similarity text scores
ROUGE-L F >= ``rouge_threshold`` against an old record's (the ROUGE-L stage's rule), naming the old record.
The old records are only an index: they are never filtered again, written, or counted in the outputs.

The old texts go into one `datagen.rouge.RougePool` built once; each new record is one query against it, so
the cost is the new records times what the pool's inverted index lets through, not a re-run over old + new.

    >>> old = OldSet(["Give three tips for staying healthy."], ["a1"], ["give three tips for staying healthy"])
    >>> old.match("Give 3 tips for staying healthy!", "give 3 tips for staying healthy", 0.7)
    ('a1', 0.8333333333333334, 'rouge')
    >>> old.match("Name a color.", "name a color", 0.7) is None
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from datagen.rouge import RougePool

STAGE = "against"
REASON = "in_earlier_dataset"


class OldSet:
    """The earlier records' similarity texts (ROUGE-L pool), normalised prompts and ids."""

    def __init__(self, texts: Sequence[str], ids: Sequence[str], prompts: Sequence[str]):
        self.ids = list(ids)
        self.pool = RougePool(texts)
        self.prompts: dict[str, str] = {}
        for prompt, rid in zip(prompts, ids):
            self.prompts.setdefault(prompt, rid)

    def __len__(self) -> int:
        return len(self.ids)

    def match(self, text: str, prompt: str, threshold: float) -> tuple[str, float, str] | None:
        """(old id, score, "exact" | "rouge") of the old record ``text``/``prompt`` duplicates, or None."""
        if prompt in self.prompts:
            return self.prompts[prompt], 1.0, "exact"
        hit = self.pool.find_duplicate(text, threshold)
        if hit is None:
            return None
        return self.ids[hit[0]], hit[1], "rouge"
