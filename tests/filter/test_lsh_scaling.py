"""MinHash-LSH candidates that grow with n, not n² (issue 24, issue 23 item 1).

The quadratic growth came from the cut for common shingles being a share of n (1%): a shingle in up to
0.01·n texts makes up to (0.01·n)²/2 pairs of texts that share it. These tests pin the fixed cut, the
vectorised bucket pairing, and the growth itself on a set small enough to run in seconds.
"""

from __future__ import annotations

import random

import numpy as np

from datagen.filter import minhash
from datagen.rouge import greedy_dedup, greedy_dedup_among, tokenize
from tests.filter.test_scale import synthetic


def _naive_bucket_pairs(keys: np.ndarray, members: np.ndarray, n: int) -> set[int]:
    """Every pair of members that share a band key, the slow obvious way."""
    seen: dict[int, set[int]] = {}
    for m in members:
        for key in keys[m]:
            seen.setdefault(int(key), set()).add(int(m))
    return {a * n + b for group in seen.values() for a in group for b in group if a < b}


def test_bucket_pairs_are_every_pair_sharing_a_key():
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 40, (300, 5), dtype=np.uint64)  # few distinct keys: buckets of many sizes
    members = np.flatnonzero(rng.random(300) < 0.8)
    codes = np.unique(np.concatenate(minhash._bucket_pairs(keys, members, 300, None)))
    assert set(codes.tolist()) == _naive_bucket_pairs(keys, members, 300)
    required = np.zeros(300, bool)
    required[members[:10]] = True
    needed = np.unique(np.concatenate(minhash._bucket_pairs(keys, members, 300, required)))
    assert set(needed.tolist()) == {c for c in codes.tolist() if required[c // 300] or required[c % 300]}


def test_the_common_shingle_cut_is_a_count_not_a_share_of_n():
    """A word in 150 of 20,000 texts (0.75%) is common with the fixed cut of 100, though under the 1% share."""
    texts = [["shared", f"a{k}", f"b{k}", f"c{k}"] if k < 150 else [f"a{k}", f"b{k}", f"c{k}"] for k in range(20_000)]
    rare, _, few = minhash.shingles(texts, max_df=0.01, max_count=100)
    assert "shared" not in rare[0] and "a0" in rare[0]
    rare, _, _ = minhash.shingles(texts, max_df=0.01, max_count=1_000)
    assert "shared" in rare[0]
    assert not few.any()


def test_candidate_pairs_grow_linearly_and_keep_the_exact_kept_set():
    """4x the texts: about 4x the candidate pairs (n² would be 16x), and (nearly) the exact path's kept set."""
    small, large = synthetic(1500, seed=5), synthetic(6000, seed=5)
    counts = []
    for texts in (small, large):
        tokens = [tokenize(t) for t in texts]
        sketch = minhash.Sketch(tokens)
        pairs = sketch.pairs()
        counts.append(len(pairs))
        kept_l, _ = greedy_dedup_among(tokens, 0.7, pairs, exhaustive=sketch.few)
        kept_e, _ = greedy_dedup(texts, 0.7)
        assert len(set(kept_l) ^ set(kept_e)) <= len(texts) // 500, "LSH pair recall below 99.8%"
    assert counts[1] <= 6 * counts[0], counts


def test_every_lsh_drop_is_at_or_above_the_threshold_to_a_kept_text():
    texts = synthetic(2000, seed=9)
    random.Random(0).shuffle(texts)
    tokens = [tokenize(t) for t in texts]
    sketch = minhash.Sketch(tokens)
    kept, dropped = greedy_dedup_among(tokens, 0.7, sketch.pairs(), exhaustive=sketch.few)
    assert dropped
    kept_set = set(kept)
    from datagen.rouge import rouge_l

    for x, k, score in dropped:
        assert k in kept_set and k < x
        assert score >= 0.7 and abs(rouge_l(texts[x], texts[k]) - score) < 1e-9
