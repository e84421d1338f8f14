"""Decontamination: drop records that share a long n-gram with a benchmark item (``filter.decontaminate``).

Run it:  datagen filter gen.jsonl --out f/ --config f.yaml     (f.yaml: ``decontaminate: [bench/mmlu_dev.jsonl]``)

Training on a benchmark's test items makes its scores meaningless, and generated data leaks them easily (a
model that saw the benchmark reproduces its questions). The check is the one GPT-3 and its successors used: a
record is contaminated when its instruction, input or output shares an n-gram of ``ngram`` tokens (13 by
default) with a benchmark item's instruction, input or output. Tokens are ``datagen.rouge.tokenize``'s: word
tokens for Latin text (case and punctuation folded) and one token per CJK character, so the same n means 13
words of English or 13 characters of Chinese. Benchmark files are read like any input (JSONL in any record
format datagen reads, a ``save_to_disk`` folder, parquet). An item shorter than ``ngram`` tokens is not
checked (a 3-word answer such as "Yes, it is." would match everything).

The reason names the benchmark file, the item (its id, or its line) and the shared span.

    >>> index = NgramIndex(4)
    >>> index.add_text("Which planet is known as the red planet?", "b.jsonl", "item-1")
    >>> index.find("Tell me which planet is known as the red one")
    ('b.jsonl', 'item-1', 'which planet is known')
    >>> index.find("Which planet is called red?") is None
    True
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from datagen.formats import read_any
from datagen.records import Example
from datagen.rouge import tokenize

STAGE = "decontaminate"
REASON = "benchmark_overlap"


def _fields(example: Example) -> list[tuple[str, str]]:
    """The texts of a record that are checked, by field name."""
    if example.messages:
        return [(f"messages[{k}]", m["content"]) for k, m in enumerate(example.messages) if m["role"] != "system"]
    return [(name, getattr(example, name)) for name in ("instruction", "input", "output") if getattr(example, name)]


def _join(tokens: Iterable[str]) -> str:
    """A span for people to read: words with spaces, CJK characters without."""
    out = ""
    for token in tokens:
        out += token if not out or (not token.isascii() and not out[-1].isascii()) else " " + token
    return out


class NgramIndex:
    """Every ``n``-gram of the benchmark items, mapped to the first (file, item) that holds it."""

    def __init__(self, n: int = 13):
        self.n = n
        self._grams: dict[int, tuple[str, str]] = {}  # hash of the n-gram → (file, item)
        self.items = 0

    def add_text(self, text: str, source: str, item: str) -> None:
        tokens = tokenize(text)
        for k in range(len(tokens) - self.n + 1):
            self._grams.setdefault(hash(tuple(tokens[k : k + self.n])), (source, item))

    def add_file(self, path: Path) -> None:
        for number, example in enumerate(read_any(path), 1):  # RecordError (path:line) for a bad file
            item = example.meta.get("id") or example.id or f"line {number}"
            for _, text in _fields(example):
                self.add_text(text, str(path), str(item))
            self.items += 1

    def find(self, text: str) -> tuple[str, str, str] | None:
        """The first (file, item, span) whose n-gram ``text`` shares, or None."""
        if not self._grams:
            return None
        tokens = tokenize(text)
        for k in range(len(tokens) - self.n + 1):
            gram = tuple(tokens[k : k + self.n])
            hit = self._grams.get(hash(gram))
            if hit is not None:
                return hit[0], hit[1], _join(gram)
        return None

    def check(self, example: Example) -> tuple[str, dict[str, str]] | None:
        """(detail, extra reject fields) when ``example`` shares an n-gram with a benchmark item, else None."""
        for field, text in _fields(example):
            hit = self.find(text)
            if hit is not None:
                source, item, span = hit
                detail = f'{field} shares a {self.n}-gram with {source} item {item}: "{span}"'
                return detail, {"benchmark": source, "benchmark_item": item, "field": field, "span": span}
        return None


def build_index(paths: Iterable[Path], n: int = 13) -> NgramIndex:
    """Read every benchmark file into one index (before the filter writes anything)."""
    index = NgramIndex(n)
    for path in paths:
        index.add_file(Path(path))
    return index
