"""MinHash-LSH candidate pairs for the ROUGE-L stage, so near-duplicate search grows with n, not n².

Run it (with the other stages):  datagen filter big.jsonl --out f/ --config f.yaml   (``rouge_method: lsh``)

The exact ROUGE-L stage compares each text with every kept text that shares enough tokens (an inverted
index prunes most, but the posting lists it scans grow with the pool: slope 1.44 → 2.18 up to 300K, issue 24).
Here each text gets a MinHash signature of its set of shingles (`_grams`: words and word bigrams of its ROUGE
tokens, ``datagen.rouge.tokenize``; CJK character bigrams and trigrams, so Chinese is shingled as finely as
ROUGE-L reads it), signatures are cut into ``b`` bands of ``r`` rows, and two texts are a *candidate pair*
when some band is equal. Exact ROUGE-L then runs only on candidate pairs (``datagen.rouge.greedy_dedup_among``),
with the same greedy rule as the exact path, so where LSH finds every pair >= the threshold both paths keep
the same set.

Why these bands find ROUGE-L pairs: with LCS = L tokens and F = 2L/(m+n) >= 0.7, texts with distinct tokens
share >= L of them, so their word Jaccard >= L/(m+n-L) >= 0.35/0.65 = 0.54; word bigrams lower the Jaccard of
the same pair (an edit breaks two bigrams), so the bands target Jaccard 0.3. ``b`` and ``r`` come from
datasketch's ``MinHashLSH`` (its false-positive/false-negative integral) for that threshold weighted 0.2/0.8
toward recall: b=76, r=3 with 256 permutations, which catches a pair at Jaccard 0.3 with p = 0.88 and at
0.54 with p = 1 - 4e-6.

Memory and time at 1M texts: shingles are int64 codes of token ids (`_codes`), never strings; document
frequencies are one sort; a shingle's hash is splitmix64 of its code (numpy integer arithmetic, the
same in every process, where ``hash()`` of a str is not); signatures are made a block of texts at a time
(one multiply-shift per permutation over the block's shingles, a min per text), so only the bands × n
uint64 band keys are ever whole. Candidate pairs are sorted out one band at a time (`_bucket_pairs`).

    >>> words = [f"w{k}" for k in range(12)]
    >>> pairs, few = candidate_pairs([words[:8], words[:8] + ["extra"], words[8:]])
    >>> pairs.tolist(), few.tolist()
    ([[0, 1]], [False, False, False])
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from datagen.rouge import Tokens

__all__ = ["Sketch", "band_keys", "candidate_pairs", "lsh_params", "shingles", "tiers"]

_BLOCK = 1 << 16  # shingles hashed per numpy pass: (num_perm × block) uint32 = 64 MiB at 256 permutations


@lru_cache(maxsize=8)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for a Jaccard ``threshold``, from datasketch, weighted 0.2/0.8 toward recall."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.2, 0.8))
    return int(lsh.b), int(lsh.r)


def _grams(tokens: Sequence[str]) -> set[str]:
    """The shingles of a text, as strings (what `_codes` encodes): Latin words and word bigrams; CJK characters
    as the bigrams and trigrams of each run (a character alone says little: 3,500 of them make up most Chinese
    text, so unrelated Chinese texts share most of their characters); a one-character text, that character.

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


def _codes(tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
    """`_grams` of every text as int64 codes, one per distinct shingle string, and the text of each code.

    With u = token id + 1 and V = vocabulary size + 1: a word is u, a pair of adjacent tokens (every pair is
    one bigram, with or without the space) u·V + u', a run of three CJK characters V² + (c·K + c')·K + c''
    with c the character's rank among the K - 1 CJK tokens. Ids are int32, so V² < 2^62, and K³ stays
    below 2^62 while there are fewer than 1.6M distinct CJK characters (Unicode has ~100K).
    """
    u = tokens.ids.astype(np.int64) + 1
    lengths = tokens.lengths
    size = len(tokens.vocab) + 1
    is_cjk = np.fromiter((not t.isascii() for t in tokens.vocab), bool, len(tokens.vocab))
    rank = np.cumsum(is_cjk)  # CJK rank from 1, per token id
    owner = np.repeat(np.arange(len(tokens)), lengths)
    at = np.arange(len(u)) - tokens.offsets[owner]  # position in its text
    cjk = is_cjk[u - 1]
    single = ~cjk | (lengths[owner] == 1)
    pair = np.flatnonzero(at >= 1)
    triple = pair[(at[pair] >= 2) & cjk[pair] & cjk[pair - 1] & cjk[pair - 2]]
    k = np.int64(rank[-1] + 1 if len(rank) else 1)
    c = rank[u[triple - 2] - 1] * k * k + rank[u[triple - 1] - 1] * k + rank[u[triple] - 1]
    codes = np.concatenate([u[single], u[pair - 1] * size + u[pair], np.int64(size) ** 2 + c])
    return codes, np.concatenate([owner[single], owner[pair], owner[triple]])


def shingles(tokens: Tokens | Sequence[Sequence[str]], seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each text's distinct shingles, text by text: the text each belongs to (ascending), its 32-bit hash
    (splitmix64's finaliser of its code, salted by ``seed``), and its document frequency (texts holding it)."""
    codes, owner = _codes(Tokens.of(tokens))
    order = np.argsort(codes, kind="stable")  # np.unique(return_inverse=True), 2x slower
    codes = codes[order]
    first = _firsts(codes)
    unique, sid = codes[first], np.empty(len(codes), np.int64)
    sid[order] = np.cumsum(first) - 1
    del codes, order, first
    key = np.sort(owner * len(unique) + sid, kind="stable")  # (text, shingle), text-major; np.unique: 80x slower
    del owner, sid
    key = key[_firsts(key)]  # once each
    owner, sid = np.divmod(key, max(len(unique), 1))
    del key
    x = unique.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = (x ^ (x >> np.uint64(shift))) * np.uint64(mult)
    hashes = ((x ^ (x >> np.uint64(31))) >> np.uint64(32)).astype(np.uint32)
    return owner, hashes[sid], np.bincount(sid, minlength=len(unique))[sid]


def _firsts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in sorted ``values``."""
    first = np.ones(len(values), bool)
    first[1:] = values[1:] != values[:-1]
    return first


def tiers(
    owner: np.ndarray,
    df: np.ndarray,
    live: np.ndarray,
    limit: float,
    *,
    min_rare: int = 3,
    weak: int = 8,
    widen: int = 10,
    depth: int = 3,
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], np.ndarray]:
    """The LSH indexes, each ``(entries, members, required)``: the shingle entries it hashes, the texts it holds
    (with ``min_rare`` such shingles), which texts a pair must hold (None: any); and ``few``, the live texts no
    index holds, left to the exact search (``greedy_dedup_among(..., exhaustive=few)``).

    Tier 1 hashes the shingles in at most ``limit`` texts ("the", a template's fixed words are common). A fixed
    count, not a share of n: a shingle in df texts makes up to df²/2 pairs, quadratic with a cut at 1% of n
    (8.8K candidate pairs at 10K records, 6.9M at 300K on bench_filter's data), linear with df <= c.

    Texts with fewer than ``weak`` rare shingles get a tier cut ``widen`` times wider (at most n/10), with a new
    seed, over every text, where a pair must hold one of them; and so on, up to ``depth`` tiers. On a fixed
    vocabulary those of < 3 rare shingles grow with n (2 at 10K, 16,855 at 1M): searching them against the kept
    pool made the verify step n^1.59 from 300K to 1M. Those of a few lose most to one edit (6 rare shingles, 3
    changed: Jaccard 0.33, missed with p = 0.06): the second, independent chance took LSH pair recall at 100K
    from 0.9971 to 0.9991. Their pairs stay bounded: at most the wider cut per shingle occurrence of theirs.
    """
    need, out, cuts = (
        live.copy(),
        [],
        sorted({min(limit * widen**k, max(limit, len(live) / 10)) for k in range(depth)}),
    )
    for cut in cuts:
        entries = df <= cut
        count = np.bincount(owner[entries], minlength=len(live))
        members = live & (count >= min_rare)
        if (need & members).any():
            out.append((entries, members, need & members if out else None))
        need &= count < weak
        if not need.any():
            break
    return out, live & (count < min_rare)


def band_keys(
    owner: np.ndarray, hashes: np.ndarray, n: int, bands: int, rows: int, num_perm: int = 256, seed: int = 1
) -> np.ndarray:
    """One uint64 key per (band, text), ``bands × n``, from the shingle hashes of each text (``owner``: the
    text of each, ascending, below ``n``); a text without shingles gets the all-ones signature.

    Permutation k maps a hash x to ``(a_k·x + b_k) mod 2^32`` (a_k odd: a bijection of the 32-bit values, and x
    is already random), a signature row is the min over the text's shingles, and a band's rows are mixed by odd
    multipliers (a collision only adds a pair). Permutation-major and 32-bit, a row over a block of shingles is
    contiguous for reduceat: 13x faster than 64-bit multiply-shift laid out text-major (measured).
    """
    rng = np.random.default_rng(seed)
    a = (rng.integers(1, 1 << 63, num_perm, dtype=np.uint64) | np.uint64(1)).astype(np.uint32)
    b = rng.integers(0, 1 << 63, num_perm, dtype=np.uint64).astype(np.uint32)
    mix = np.random.default_rng(7).integers(1, 1 << 63, rows, dtype=np.uint64) | np.uint64(1)
    starts = np.searchsorted(owner, np.arange(n + 1))
    keys = np.empty((bands, n), np.uint64)
    text = 0
    while text < n:  # whole texts per block, about _BLOCK shingles each
        last = min(max(int(np.searchsorted(starts, starts[text] + _BLOCK, side="right")) - 1, text + 1), n)
        lo, hi = int(starts[text]), int(starts[last])
        sig = np.full((bands * rows, last - text), np.iinfo(np.uint32).max, np.uint32)
        if hi > lo:
            hashed = a[: bands * rows, None] * hashes[None, lo:hi]
            hashed += b[: bands * rows, None]
            nonempty = np.flatnonzero(starts[text + 1 : last + 1] > starts[text:last])
            sig[:, nonempty] = np.minimum.reduceat(hashed, starts[text + nonempty] - lo, axis=1)
        sig = sig.reshape(bands, rows, -1)
        block = sig[:, 0].astype(np.uint64) * mix[0]
        for r in range(1, rows):
            block += sig[:, r].astype(np.uint64) * mix[r]
        keys[:, text:last] = block ^ np.arange(bands, dtype=np.uint64)[:, None]
        text = last
    return keys


class Sketch:
    """The LSH view of a corpus: the band keys of each tier (`tiers`), and ``few``, the texts left to the
    exact pool search (70 of 949K at 1M on bench_filter's data; 16,855 with tier 1 alone).

    Comparing a text of few rare shingles with others' rare sets missed 4 of 292 pairs at 3K, and hashing
    every shingle of those texts made 75K-230K candidate pairs at 10K (they are all common words, so they
    collide with everything): hence a second tier with a wider but still fixed cut.
    """

    def __init__(
        self,
        tokens: Tokens | Sequence[Sequence[str]],
        *,
        threshold: float = 0.3,
        num_perm: int = 256,
        max_df: float = 0.01,
        max_count: int = 100,
        seed: int = 1,
    ):
        tokens = Tokens.of(tokens)
        self.bands, self.rows = lsh_params(threshold, num_perm)
        n = len(tokens)
        self.live = tokens.lengths > 0
        owner, hashes, df = shingles(tokens, seed)
        found, self.few = tiers(owner, df, self.live, min(max(max_df * n, 50), max_count))
        self.tiers = [
            (band_keys(owner[e], hashes[e], n, self.bands, self.rows, num_perm, seed + k), members, required)
            for k, (e, members, required) in enumerate(found)
        ]

    def pairs(self) -> np.ndarray:
        """Distinct candidate pairs ``[i, j]``, i < j, sorted."""
        n = len(self.live)
        codes = [
            c
            for keys, members, required in self.tiers
            for c in _bucket_pairs(keys, np.flatnonzero(members), n, required)
        ]
        unique = np.sort(np.concatenate(codes)) if codes else np.empty(0, np.int64)
        unique = unique[_firsts(unique)]
        return np.stack([unique // n, unique % n], axis=1)

    def collides(self, pairs: np.ndarray) -> np.ndarray:
        """For each pair ``[i, j]``, whether it is compared: a candidate pair, or one holding a ``few`` text."""
        a, b = np.asarray(pairs, np.int64).reshape(-1, 2).T
        hit = self.few[a] | self.few[b]
        for keys, members, required in self.tiers:
            same = members[a] & members[b] & (keys[:, a] == keys[:, b]).any(axis=0)
            hit |= same if required is None else same & (required[a] | required[b])
        return hit & self.live[a] & self.live[b]


def _bucket_pairs(keys: np.ndarray, members: np.ndarray, n: int, required: np.ndarray | None) -> list[np.ndarray]:
    """Pair codes ``i·n + j`` (i < j) of ``members`` sharing a key in some band (``keys``: bands × n); with
    ``required``, only pairs that hold at least one required text.

    One band at a time (n keys sorted, not bands × n), vectorised over buckets: after sorting, position p
    pairs with p + d for d = 1, 2, ... while both are in one bucket, one numpy pass per d (a Python loop over
    200K buckets of two was 17 of 26 profiled seconds at 30K). Passes stop at the largest bucket's size.
    """
    codes: list[np.ndarray] = []
    if len(members) < 2:
        return codes
    for band in keys:
        flat = band[members]
        order = np.argsort(flat)
        owner = members[order]
        cuts = np.flatnonzero(np.diff(flat[order])) + 1
        starts, ends = np.r_[0, cuts], np.r_[cuts, len(flat)]
        later = np.repeat(ends, ends - starts) - np.arange(len(flat)) - 1  # members after p in p's bucket
        at = np.flatnonzero(later >= 1)
        d = 1
        while len(at):
            a, b = owner[at], owner[at + d]
            lo, hi = np.minimum(a, b), np.maximum(a, b)
            keep = np.ones(len(lo), bool) if required is None else required[lo] | required[hi]
            codes.append(lo[keep] * n + hi[keep])
            d += 1
            at = at[later[at] >= d]
    return codes


def candidate_pairs(
    tokens: Tokens | Sequence[Sequence[str]],
    *,
    threshold: float = 0.3,
    num_perm: int = 256,
    max_df: float = 0.01,
    max_count: int = 100,
    seed: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pairs ``[i, j]`` (i < j, sorted) that LSH makes candidates, and the ``few`` mask (`Sketch`)."""
    sketch = Sketch(tokens, threshold=threshold, num_perm=num_perm, max_df=max_df, max_count=max_count, seed=seed)
    return sketch.pairs(), sketch.few
