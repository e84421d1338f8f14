"""MinHash-LSH candidate pairs for the ROUGE-L stage, so near-duplicate search grows with n, not n².

Run it (with the other stages):  datagen filter big.jsonl --out f/ --config f.yaml   (``rouge_method: lsh``)

The exact ROUGE-L stage compares each text with every kept text that shares enough tokens (an inverted
index prunes most, but the posting lists it scans grow with the pool: slope 1.44 → 2.18 up to 300K, issue 24).
Here each text gets a MinHash signature of its set of ROUGE tokens (``datagen.rouge.tokenize``: words for
Latin text, one token per CJK character, so Chinese is shingled as finely as ROUGE-L reads it), signatures are
cut into ``b`` bands of ``r`` rows, and two texts are a *candidate pair* when some band is equal. Exact
ROUGE-L then runs only on candidate pairs (``datagen.rouge.greedy_dedup_among``), with the same greedy rule as
the exact path, so where LSH finds every pair >= the threshold both paths keep the same set.

Why these bands find ROUGE-L pairs: with LCS = L tokens and F = 2L/(m+n) >= 0.7, texts with distinct tokens
share >= L of them, so their word Jaccard >= L/(m+n-L) >= 0.35/0.65 = 0.54; shingles here are words and word
bigrams (`shingles`), whose Jaccard is lower for the same pair (an edit breaks two bigrams), so the bands
target Jaccard 0.3. ``b`` and ``r`` come from datasketch's ``MinHashLSH`` (its false-positive/false-negative
integral) for that threshold weighted 0.2/0.8 toward recall: b=76, r=3 with 256 permutations, which catches
a pair at Jaccard 0.3 with p = 0.88 and at 0.54 with p = 1 - 4e-6. Measured on bench_filter's data: pair
recall against the exact path 1.0 at 10K and 0.9991 at 30K; candidate pairs 4.0K at 10K, 12.2K at 30K.

The signatures are computed here with numpy (one multiply-shift hash per permutation over every token of
every text, then a min per text) rather than with datasketch's per-text ``MinHash`` objects: those cost
88 µs a text to hash and 270 µs to query and insert (measured, 10K texts of 15 tokens), 110 s at 300K.

    >>> words = [f"w{k}" for k in range(12)]
    >>> pairs, few = candidate_pairs([words[:8], words[:8] + ["extra"], words[8:]])
    >>> pairs.tolist(), few.tolist()
    ([[0, 1]], [False, False, False])
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["Sketch", "candidate_pairs", "lsh_params", "shingles", "signatures"]

_BLOCK = 1 << 16  # tokens hashed per numpy pass: (num_perm × block) uint32 = 64 MiB at 256 permutations


@lru_cache(maxsize=8)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for a Jaccard ``threshold``, from datasketch, weighted 0.2/0.8 toward recall."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
    return int(lsh.b), int(lsh.r)


def shingles(token_sets: Sequence[Sequence[str]], max_df: float = 0.01, floor: int = 50,
             min_rare: int = 3, max_count: int = 100) -> tuple[list[list[str]], list[set[str]], np.ndarray]:
    """Each text's shingle set without the shingles common to the corpus, its whole set, and which texts
    have fewer than ``min_rare`` rare shingles (for those only the whole set says anything).

    A shingle in more than ``min(max(max_df·n, floor), max_count)`` texts ("the", a template's fixed words)
    is common. Why a fixed ``max_count`` and not a share of n: every shingle kept makes up to df²/2 pairs of
    texts that share it, and some of them collide in LSH; with the cut at 1% of n that is quadratic in n
    (8.8K candidate pairs at 10K records, 780K at 100K, 6.9M at 300K: n^1.95, measured on bench_filter's
    data). With df <= a constant c, the pairs that share a shingle number at most c/2 per shingle
    occurrence, so candidate pairs grow linearly. Word bigrams keep texts made of common words placeable
    (their bigrams are rarer than their words): unigrams alone with a fixed cut left 17% of texts at 30K
    with too few rare shingles.
    """
    sets = [_grams(tokens) for tokens in token_sets]
    df: dict[str, int] = {}
    for grams in sets:
        for g in grams:
            df[g] = df.get(g, 0) + 1
    limit = min(max(max_df * len(sets), floor), max_count)
    rare = [[g for g in grams if df[g] <= limit] for grams in sets]
    few = np.fromiter((len(r) < min_rare for r in rare), bool, len(rare))
    return rare, sets, few  # type: ignore[return-value]  # the sets themselves: a sorted copy doubled RSS


def _grams(tokens: Sequence[str]) -> set[str]:
    """Latin words and word bigrams; CJK characters as the bigrams and trigrams of each run (a character
    alone says little: 3,500 of them make up most Chinese text, so unrelated Chinese texts share most of
    their characters).

    >>> sorted(_grams(["write", "a", "大", "海", "的", "诗"]))
    ['a', 'a 大', 'write', 'write a', '大海', '大海的', '海的', '海的诗', '的诗']
    """
    out: set[str] = set()
    prev = prev2 = ""
    for t in tokens:
        cjk = not t.isascii()
        if cjk and prev and not prev.isascii():
            out.add(prev + t)
            if prev2 and not prev2.isascii():
                out.add(prev2 + prev + t)
        elif not cjk:
            out.add(t)
            if prev:
                out.add(prev + " " + t)
        elif prev:  # a CJK character after a word
            out.add(prev + " " + t)
        prev2, prev = prev, t
    if len(out) == 0 and prev:  # a one-character text
        out.add(prev)
    return out


def signatures(token_sets: Sequence[Sequence[str]], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signatures, one row of ``num_perm`` uint32 per text (all-ones for a text with no tokens).

    Each distinct token gets a 64-bit hash; permutation k maps it to ``(a_k·x + b_k) >> 32``
    (multiply-shift, a_k odd), and a text's signature is the minimum over its tokens.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 63, num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64)
    vocab: dict[str, int] = {}
    ids = array("q")  # 8 bytes an id; a list of ints was ~36 (1.4 GB of 40M ids at 1M texts)
    lengths = np.zeros(len(token_sets), np.int64)
    for k, tokens in enumerate(token_sets):
        unique = {vocab.setdefault(t, len(vocab)) for t in tokens}
        ids.extend(unique)
        lengths[k] = len(unique)
    # A stable 64-bit value per token (blake2b, not hash(): str hashes change per process, and so would the
    # candidate pairs), salted by the seed.
    salt = seed.to_bytes(8, "little")
    values = np.fromiter((int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4, salt=salt).digest(), "little")
                          for t in vocab), np.uint32, len(vocab))
    flat = values[np.frombuffer(ids, np.int64)] if ids else np.empty(0, np.uint32)
    del ids
    # Permutation-major and 32-bit: (a·x + b) mod 2^32 with a odd is a bijection of the 32-bit values, x is
    # already a random hash, and a row of ``a_k·x`` over a block of tokens is contiguous for reduceat; 13x
    # faster than 64-bit multiply-shift laid out text-major (0.018 s vs 0.24 s per 65K tokens × 256).
    a32, b32 = a.astype(np.uint32) | np.uint32(1), b.astype(np.uint32)
    out = np.full((num_perm, len(token_sets)), np.iinfo(np.uint32).max, np.uint32)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    text = 0
    while text < len(token_sets):  # whole texts per block, about _BLOCK tokens each
        last = max(int(np.searchsorted(ends, starts[text] + _BLOCK, side="right")), text + 1)
        lo, hi = int(starts[text]), int(ends[last - 1])
        if hi > lo:
            hashed = a32[:, None] * flat[None, lo:hi]
            hashed += b32[:, None]
            nonempty = np.flatnonzero(lengths[text:last]) + text
            out[:, nonempty] = np.minimum.reduceat(hashed, starts[nonempty] - lo, axis=1)
        text = last
    return np.ascontiguousarray(out.T)


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per (text, band): the band's rows mixed by odd multipliers (collisions only add pairs)."""
    mix = np.random.default_rng(7).integers(1, 1 << 63, rows, dtype=np.uint64) | np.uint64(1)
    banded = sig[:, : bands * rows].astype(np.uint64).reshape(len(sig), bands, rows)
    with np.errstate(over="ignore"):
        return (banded * mix).sum(axis=2, dtype=np.uint64) ^ np.arange(bands, dtype=np.uint64)


class Sketch:
    """The LSH view of a corpus: MinHash signatures of the rare and of the whole shingle sets.

    Two texts are a candidate pair when a band of their rare-set signatures is equal. A text with few rare
    shingles (``few``) cannot be placed that way: comparing its whole set with others' rare sets missed 4 of
    292 pairs at 3K, and whole-set LSH for them made 75K-230K candidate pairs at 10K (they are all common
    words, so they collide with everything). So those texts are left to the exact pool search
    (``greedy_dedup_among(..., exhaustive=few)``), about 1% of texts on bench_filter's data.
    """

    def __init__(self, token_sets: Sequence[Sequence[str]], *, threshold: float = 0.3, num_perm: int = 256,
                 max_df: float = 0.01, max_count: int = 100, seed: int = 1):
        self.bands, self.rows = lsh_params(threshold, num_perm)
        rare, full, self.few = shingles(token_sets, max_df, max_count=max_count)
        self.live = np.fromiter((len(f) > 0 for f in full), bool, len(full))
        del full
        self.rare_keys = _band_keys(signatures(rare, num_perm, seed), self.bands, self.rows)

    def pairs(self) -> np.ndarray:
        """Distinct candidate pairs ``[i, j]``, i < j, sorted."""
        n = len(self.live)
        codes = _bucket_pairs(self.rare_keys, np.flatnonzero(self.live & ~self.few), n, None)
        if not codes:
            return np.empty((0, 2), np.int64)
        unique = np.unique(np.concatenate(codes))
        return np.stack([unique // n, unique % n], axis=1)

    def collides(self, pairs: np.ndarray) -> np.ndarray:
        """For each pair ``[i, j]``, whether it is compared: a candidate pair, or one holding a ``few`` text."""
        if not len(pairs):
            return np.zeros(0, bool)
        a, b = pairs[:, 0], pairs[:, 1]
        both_live = self.live[a] & self.live[b]
        rare = ~self.few[a] & ~self.few[b] & (self.rare_keys[a] == self.rare_keys[b]).any(axis=1)
        return both_live & (rare | self.few[a] | self.few[b])


def _bucket_pairs(keys: np.ndarray, members: np.ndarray, n: int, required: np.ndarray | None) -> list[np.ndarray]:
    """Pair codes ``i·n + j`` (i < j) of ``members`` sharing a band key; with ``required``, only pairs that
    hold at least one required text.

    Vectorised over buckets: after sorting the keys, position p pairs with p + d for d = 1, 2, ... while both
    are in one bucket, one numpy pass per d (a Python loop over 200K buckets of two, with ``triu_indices``
    each, was 17 of 26 profiled seconds at 30K). Passes stop at the largest bucket's size.
    """
    if len(members) < 2:
        return []
    bands = keys.shape[1]
    flat = keys[members].ravel()  # row-major: key k belongs to members[k // bands]
    order = np.argsort(flat, kind="stable")
    owner = members[order // bands]
    cuts = np.flatnonzero(np.diff(flat[order])) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(flat)]
    later = np.repeat(ends, ends - starts) - np.arange(len(flat)) - 1  # members after p in p's bucket
    codes: list[np.ndarray] = []
    at = np.flatnonzero(later >= 1)
    d = 1
    while len(at):
        a, b = owner[at], owner[at + d]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keep = lo != hi
        if required is not None:
            keep &= required[lo] | required[hi]
        codes.append(lo[keep] * n + hi[keep])
        d += 1
        at = at[later[at] >= d]
    return codes


def candidate_pairs(token_sets: Sequence[Sequence[str]], *, threshold: float = 0.3, num_perm: int = 256,
                    max_df: float = 0.01, max_count: int = 100, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs ``[i, j]`` (i < j, sorted) that LSH makes candidates, and the ``few`` mask (`Sketch`)."""
    sketch = Sketch(token_sets, threshold=threshold, num_perm=num_perm, max_df=max_df, max_count=max_count,
                    seed=seed)
    return sketch.pairs(), sketch.few
