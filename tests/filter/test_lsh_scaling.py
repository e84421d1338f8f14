"""MinHash-LSH candidates that grow with n, not n² (issue 24, issue 23 item 1).

The quadratic growth came from the cut for common shingles being a share of n (1%): a shingle in up to
0.01·n texts makes up to (0.01·n)²/2 pairs of texts that share it. These tests pin the fixed cut, the
vectorised bucket pairing, and the growth itself on a set small enough to run in seconds.
"""

from __future__ import annotations

import random
from collections import Counter

import numpy as np

from datagen.filter import minhash
from datagen.rouge import Tokens, greedy_dedup, greedy_dedup_among, tokenize
from tests.filter.test_scale import synthetic


def _naive_bucket_pairs(keys: np.ndarray, members: np.ndarray, n: int) -> set[int]:
    """Every pair of members that share a key in one band, the slow obvious way."""
    seen: dict[tuple[int, int], set[int]] = {}
    for m in members:
        for band, key in enumerate(keys[m]):
            seen.setdefault((band, int(key)), set()).add(int(m))
    return {a * n + b for group in seen.values() for a in group for b in group if a < b}


def test_bucket_pairs_are_every_pair_sharing_a_key():
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 40, (300, 5), dtype=np.uint64)  # few distinct keys: buckets of many sizes
    members = np.flatnonzero(rng.random(300) < 0.8)
    codes = np.unique(np.concatenate(minhash._bucket_pairs(keys.T, members, 300, None)))
    assert set(codes.tolist()) == _naive_bucket_pairs(keys, members, 300)
    required = np.zeros(300, bool)
    required[members[:10]] = True
    needed = np.unique(np.concatenate(minhash._bucket_pairs(keys.T, members, 300, required)))
    assert set(needed.tolist()) == {c for c in codes.tolist() if required[c // 300] or required[c % 300]}


def test_the_common_shingle_cut_is_a_count_not_a_share_of_n():
    """A word in 150 of 20,000 texts (0.75%) is common with the fixed cut of 100, though under the 1% share;
    a text left with too few rare shingles gets a second tier cut 10x wider, where a pair must hold it."""
    texts = [["shared", f"a{k}", f"b{k}", f"c{k}"] if k < 150 else [f"a{k}", f"b{k}", f"c{k}"] for k in range(20_000)]
    texts[0] = ["shared", "a0"]  # 3 shingles, 2 of them rare
    owner, _, df = minhash.shingles(texts)
    live = np.ones(len(texts), bool)
    found, few = minhash.tiers(owner, df, live, limit=100, weak=3)
    (rare, members, required), (wide, members2, required2) = found
    first = owner == 0
    assert sorted(df[first & rare].tolist()) == [1, 1] and sorted(df[first].tolist()) == [1, 1, 150]
    assert required is None and not members[0] and members[1:].all()
    assert members2.all() and np.flatnonzero(required2).tolist() == [0] and not few.any()
    found, few = minhash.tiers(owner, df, live, limit=1_000, weak=3)
    assert len(found) == 1 and found[0][0][first].all() and found[0][1].all()
    found, few = minhash.tiers(owner, df, live, limit=100)  # weak=8: every text here has fewer rare shingles
    assert len(found) == 3 and found[1][2].all() and found[2][2].all()  # up to depth=3 tiers


def test_integer_shingles_are_the_string_shingles():
    """`_codes` gives one code per `_grams` string: the texts holding each code are those holding a string."""
    texts = [
        tokenize(t) for t in synthetic(500, seed=3) + ["大", "大海", "a", "写一首诗 about the sea", "", "海 海 海"]
    ]
    codes, owner = minhash._codes(Tokens.of(texts))
    holders: dict[object, set[int]] = {}
    for code, k in zip(codes.tolist(), owner.tolist()):
        holders.setdefault(code, set()).add(k)
    for k, tokens in enumerate(texts):
        for gram in minhash._grams(tokens):
            holders.setdefault(gram, set()).add(k)
    by_code = Counter(frozenset(v) for c, v in holders.items() if isinstance(c, int))
    assert by_code == Counter(frozenset(v) for c, v in holders.items() if isinstance(c, str))
    distinct = np.unique(np.stack([owner, codes]), axis=1)[0]  # codes repeat within a text; strings, in a set
    assert np.bincount(distinct, minlength=len(texts)).tolist() == [len(minhash._grams(t)) for t in texts]
    _, _, df = minhash.shingles(texts)
    assert sorted(df.tolist()) == sorted(len(v) for c, v in holders.items() for _ in v if isinstance(c, str))


def test_candidate_pairs_grow_linearly_and_keep_the_exact_kept_set():
    """4x the texts: about 4x the first tier's candidate pairs (n² would be 16x), the later tiers (texts with
    few rare shingles) add at most n more, and (nearly) the exact path's kept set."""
    small, large = synthetic(1500, seed=5), synthetic(6000, seed=5)
    counts = []
    for texts in (small, large):
        tokens = [tokenize(t) for t in texts]
        sketch = minhash.Sketch(tokens)
        pairs = sketch.pairs()
        keys, members, _ = sketch.tiers[0]
        counts.append(
            len(np.unique(np.concatenate(minhash._bucket_pairs(keys, np.flatnonzero(members), len(texts), None))))
        )
        assert len(pairs) <= counts[-1] + len(texts)
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
