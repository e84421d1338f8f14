"""MinHash-LSH candidate pairs for the ROUGE-L stage, so near-duplicate search grows with n, not n².

Run it (with the other stages):  datagen filter big.jsonl --out f/ --config f.yaml   (``rouge_method: lsh``)

The exact ROUGE-L stage compares each text with every kept text that shares enough tokens (an inverted
index prunes most, but the posting lists it scans grow with the pool: slope 1.44 → 2.18 up to 300K, issue 24).
Here each text gets a MinHash signature of its set of ROUGE tokens (``datagen.rouge.tokenize``: words for
Latin text, one token per CJK character, so Chinese is shingled as finely as ROUGE-L reads it), signatures are
cut into ``b`` bands of ``r`` rows, and two texts are a *candidate pair* when some band is equal. Exact
ROUGE-L then runs only on candidate pairs (``datagen.rouge.greedy_dedup_among``), with the same greedy rule as
the exact path, so where LSH finds every pair >= the threshold both paths keep the same set.

Why unigram sets find ROUGE-L pairs: with LCS = L tokens and F = 2L/(m+n) >= 0.7, texts with distinct tokens
share >= L of them, so Jaccard >= L/(m+n-L) >= 0.35/0.65 = 0.54. ``b`` and ``r`` come from datasketch's
``MinHashLSH`` (its false-positive/false-negative integral) for Jaccard threshold 0.4 weighted 0.2/0.8
toward recall: b=31, r=3 with 128 permutations, which catches a pair at Jaccard 0.54 with p = 0.996.

The signatures are computed here with numpy (one multiply-shift hash per permutation over every token of
every text, then a min per text) rather than with datasketch's per-text ``MinHash`` objects: those cost
88 µs a text to hash and 270 µs to query and insert (measured, 10K texts of 15 tokens), 110 s at 300K.

    >>> pairs = candidate_pairs([["a", "b", "c", "d"], ["a", "b", "c", "d", "e"], ["x", "y", "z"]])
    >>> pairs.tolist()
    [[0, 1]]
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["lsh_params", "signatures", "candidate_pairs", "band_collides"]

_BLOCK = 1 << 16  # tokens hashed per numpy pass: (block × num_perm) uint64 = 64 MiB at 128 permutations


@lru_cache(maxsize=8)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for a Jaccard ``threshold``, from datasketch, weighted 0.2/0.8 toward recall."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
    return int(lsh.b), int(lsh.r)


def signatures(token_sets: Sequence[Sequence[str]], num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signatures, one row of ``num_perm`` uint32 per text (all-ones for a text with no tokens).

    Each distinct token gets a random 64-bit value; permutation k maps it to ``(a_k·x + b_k) >> 32``
    (multiply-shift, a_k odd), and a text's signature is the minimum over its tokens.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 63, num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64)
    vocab: dict[str, int] = {}
    ids: list[int] = []
    lengths = np.zeros(len(token_sets), np.int64)
    for k, tokens in enumerate(token_sets):
        unique = {vocab.setdefault(t, len(vocab)) for t in tokens}
        ids.extend(unique)
        lengths[k] = len(unique)
    values = np.random.default_rng(seed + 1).integers(0, 1 << 63, max(len(vocab), 1), dtype=np.uint64)
    flat = values[np.asarray(ids, np.int64)] if ids else np.empty(0, np.uint64)
    out = np.full((len(token_sets), num_perm), np.iinfo(np.uint32).max, np.uint32)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    text = 0
    while text < len(token_sets):  # whole texts per block, about _BLOCK tokens each
        last = max(int(np.searchsorted(ends, starts[text] + _BLOCK, side="right")), text + 1)
        lo, hi = int(starts[text]), int(ends[last - 1])
        if hi > lo:
            with np.errstate(over="ignore"):
                hashed = ((flat[lo:hi, None] * a[None, :] + b[None, :]) >> np.uint64(32)).astype(np.uint32)
            nonempty = np.flatnonzero(lengths[text:last]) + text
            out[nonempty] = np.minimum.reduceat(hashed, starts[nonempty] - lo, axis=0)
        text = last
    return out


def _band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per (text, band): the band's rows mixed by odd multipliers (collisions only add pairs)."""
    mix = np.random.default_rng(7).integers(1, 1 << 63, rows, dtype=np.uint64) | np.uint64(1)
    banded = sig[:, : bands * rows].astype(np.uint64).reshape(len(sig), bands, rows)
    with np.errstate(over="ignore"):
        return (banded * mix).sum(axis=2, dtype=np.uint64) ^ np.arange(bands, dtype=np.uint64)


def candidate_pairs(token_sets: Sequence[Sequence[str]], *, threshold: float = 0.4, num_perm: int = 128,
                    seed: int = 1, sig: np.ndarray | None = None) -> np.ndarray:
    """Distinct pairs ``[i, j]`` (i < j, sorted) of texts that share a LSH band; empty texts pair with none."""
    bands, rows = lsh_params(threshold, num_perm)
    if sig is None:
        sig = signatures(token_sets, num_perm, seed)
    live = np.flatnonzero([len(t) > 0 for t in token_sets]) if len(sig) else np.empty(0, np.int64)
    if len(live) < 2:
        return np.empty((0, 2), np.int64)
    keys = _band_keys(sig[live], bands, rows).ravel()  # row-major: key k belongs to text live[k // bands]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(keys)]
    multi = np.flatnonzero(ends - starts > 1)
    n = len(token_sets)
    codes: list[np.ndarray] = []
    for s, e in zip(starts[multi], ends[multi]):
        members = np.unique(live[order[s:e] // bands])
        if len(members) < 2:
            continue
        i, j = np.triu_indices(len(members), 1)
        codes.append(members[i] * n + members[j])
    if not codes:
        return np.empty((0, 2), np.int64)
    unique = np.unique(np.concatenate(codes))
    return np.stack([unique // n, unique % n], axis=1)


def band_collides(sig: np.ndarray, pairs: np.ndarray, *, threshold: float = 0.4, num_perm: int = 128) -> np.ndarray:
    """For each pair ``[i, j]``, whether LSH makes it a candidate (for measuring recall against exact pairs)."""
    if not len(pairs):
        return np.zeros(0, bool)
    bands, rows = lsh_params(threshold, num_perm)
    keys = _band_keys(sig, bands, rows)
    return (keys[pairs[:, 0]] == keys[pairs[:, 1]]).any(axis=1)
