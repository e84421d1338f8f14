"""The filter's dedup stages on Ray Data, for corpora one machine is too small for (``filter.engine: ray``).

Run it:  pip install 'datagen[ray]'
         datagen filter big.jsonl --out f/ --config f.yaml     # f.yaml: engine: ray, ray_address: ray://head:10001

Only the insides of three stages move; reading, heuristics, the judge, rejects with reasons and the outputs are
the pipeline's own code (``pipeline.py`` calls the three functions below instead of its local ones):

- exact dedup: duplicate groups of the normalised prompts' 128-bit digests (made as pass 1 reads each record)
  as a ``groupby``;
- ROUGE-L: tokens and band keys (``minhash.band_keys``, per tier of ``minhash.tiers``) as maps, LSH buckets as
  a ``groupby`` on the int64 keys, candidate pairs verified with ``rouge.rouge_l`` as a map; texts LSH cannot place
  (``minhash.tiers``' ``few``) and, for ``rouge_method: exact``, every text, are searched with a broadcast
  ``rouge.RougePool`` per batch. The verified pairs (every pair at or above the threshold) split into connected
  components, and each component runs the project's greedy pass (``rouge.greedy_dedup_among``) in unit order,
  components spread over tasks. No pair crosses components, so this is the global greedy result: the same kept
  set, duplicate_of and score as the local engine (``tests/filter/test_ray_engine.py``);
- embeddings: the encoder as an actor pool (one GPU per actor where the cluster has GPUs, CPU otherwise);
  pair search (``semantic.similar_pairs``) and the keep rule (``semantic.keep_greedy`` / ``keep_one_per_group``)
  on the driver, where the vectors meet.

What stays on the driver: the pipeline's rows (per record its similarity text, digest and scores, not the
record), the ROUGE token ids (shingles drop tokens by corpus-wide document frequency, one counting pass), the
vectors, and the verified pairs.

    >>> _components(5, np.array([[0, 3], [3, 4]]))
    [[0, 3, 4]]
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from datagen.embed import encode, load_encoder
from datagen.errors import ConfigError
from datagen.filter import minhash, semantic
from datagen.rouge import RougePool, Tokens, greedy_dedup_among, rouge_l, tokenize

log = logging.getLogger("datagen.filter")

_ROWS_PER_BLOCK = 2_000  # rows per Ray block: small enough that 2 CPUs share the work of a small corpus


def require() -> None:
    """Fail before any work when ``filter.engine: ray`` is set and Ray Data is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("filter.engine: ray needs Ray Data: pip install 'datagen[ray]' (or set engine: local)")


def connect(address: str | None) -> None:
    """Attach to Ray: the session already open in this process, else ``address`` (``ray://head:10001``,
    ``auto``), else a local instance Ray starts (and stops when the process exits)."""
    import ray
    from ray.data import DataContext

    if not ray.is_initialized():
        log.info("ray: %s", "connecting to the configured cluster" if address else "starting a local instance")
        if address:
            ray.init(address=address)
        else:
            ray.init(include_dashboard=False)
    DataContext.get_current().enable_progress_bars = False


def _dataset(columns: dict[str, Any]) -> Any:
    import pyarrow as pa
    import ray.data

    table = pa.table(columns)
    return ray.data.from_arrow(table, override_num_blocks=max(1, -(-table.num_rows // _ROWS_PER_BLOCK)))


def _partitions(n: int) -> int:
    return max(1, min(64, n // 50_000 + 1))


def _rows(ds: Any, *columns: str) -> dict[str, np.ndarray]:
    """The dataset's columns gathered on the driver (empty arrays for an empty result)."""
    import pyarrow as pa
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    table = pa.concat_tables(tables) if tables else None
    if table is None:
        return {c: np.empty(0, np.int64) for c in columns}
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


# ---------------------------------------------------------------------------------------------- exact dedup


def _shared(batch: Any) -> Any:
    """The aggregated rows of keys held by two or more rows."""
    import pyarrow.compute as pc

    return batch.filter(pc.greater(batch["n"], 1))


def _with_keys(batch: Any, keys_ref: list) -> Any:
    import pyarrow.compute as pc

    return batch.filter(pc.is_in(batch["key"], value_set=_get(keys_ref))).select(["key", "i"])


def _groups(ds: Any, n: int) -> list[np.ndarray]:
    """The ``i`` (ascending, distinct) of each ``key`` held by two or more rows of ``ds``.

    A group-by with arrow-native aggregates (count, min, max): a pair is its min and max. Only the keys of
    three or more rows are looked up again (a filter on those keys). Both ``map_groups`` (a Python call per
    group: 136 s for 590K LSH buckets on 2 cores) and ``AsList`` (70 s for 600K rows) were far slower.
    """
    import pyarrow as pa
    import ray
    from ray.data.aggregate import Count, Max, Min

    aggregated = ds.groupby("key", num_partitions=_partitions(n)).aggregate(
        Count(alias_name="n"), Min("i", alias_name="lo"), Max("i", alias_name="hi")
    )
    shared = _rows(aggregated.map_batches(_shared, batch_format="pyarrow"), "key", "n", "lo", "hi")
    two = shared["n"] == 2
    groups = [np.unique([lo, hi]) for lo, hi in zip(shared["lo"][two].tolist(), shared["hi"][two].tolist())]
    if (~two).any():
        keys_ref = [ray.put(pa.array(shared["key"][~two]))]
        rows = _rows(ds.map_batches(_with_keys, batch_format="pyarrow", fn_kwargs={"keys_ref": keys_ref}), "key", "i")
        members: dict[Any, list[int]] = {}
        for key, i in zip(rows["key"].tolist(), rows["i"].tolist()):
            members.setdefault(key, []).append(i)
        groups.extend(np.unique(np.asarray(m, np.int64)) for m in members.values())
    return [g.astype(np.int64) for g in groups if len(g) > 1]


def exact_groups(keys: Sequence[str], address: str | None = None) -> list[list[int]]:
    """Groups (ascending indices, two or more each) of equal ``keys``: the pipeline's digests of each record's
    normalised exact-dedup text (``pipeline._digest``); keys alone in their group are left out."""
    if len(keys) < 2:
        return []
    connect(address)
    ds = _dataset({"i": np.arange(len(keys)), "key": list(keys)})
    return sorted(g.tolist() for g in _groups(ds, len(keys)))


# ---------------------------------------------------------------------------------------------- ROUGE-L


def _tokenize(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"i": batch["i"], "tokens": [tokenize(t) for t in batch["text"]]}


def _band_keys(batch: dict[str, np.ndarray], num_perm: int, bands: int, rows: int, seed: int) -> dict[str, np.ndarray]:
    """One row per (text, band): ``minhash.band_keys`` of each text's shingle hashes, as int64 bucket keys."""
    sets = list(batch["shingles"])
    owner = np.repeat(np.arange(len(sets)), [len(h) for h in sets])
    hashes = np.concatenate(sets).astype(np.uint32) if sets else np.empty(0, np.uint32)
    keys = minhash.band_keys(owner, hashes, len(sets), bands, rows, num_perm, seed)
    return {"i": np.repeat(batch["i"], bands), "key": np.ascontiguousarray(keys.T).ravel().view(np.int64)}


def _verify(batch: dict[str, np.ndarray], texts_ref: list, threshold: float) -> dict[str, np.ndarray]:
    texts = _get(texts_ref)
    scores = np.fromiter((rouge_l(texts[a], texts[b]) for a, b in zip(batch["a"], batch["b"])), float, len(batch["a"]))
    keep = scores >= threshold
    return {"a": batch["a"][keep], "b": batch["b"][keep], "score": scores[keep]}


_CACHE: dict[str, Any] = {}


def _get(ref: list) -> Any:
    """The broadcast object behind ``[ref]``, fetched once per worker process."""
    import ray

    key = ref[0].hex()
    if key not in _CACHE:
        if len(_CACHE) > 8:  # a worker serves one run at a time; older runs' objects go
            _CACHE.clear()
        _CACHE[key] = ray.get(ref[0])
    return _CACHE[key]


def _pool_pairs(
    batch: dict[str, np.ndarray], texts_ref: list, pool_ref: list, threshold: float
) -> dict[str, np.ndarray]:
    """Pairs of each text with the searched texts (``pool_ref``: their indices) scoring >= ``threshold``.

    ``RougePool.top_k`` ranks the pool exactly; k grows until the last item ranked is below the threshold.
    """
    texts, members = _get(texts_ref), _get(pool_ref)
    key = "pool:" + pool_ref[0].hex()
    if key not in _CACHE:
        _CACHE[key] = RougePool([texts[m] for m in members])
    pool = _CACHE[key]
    a, b, s = [], [], []
    for i in batch["i"].tolist():
        k = 16
        while True:
            best = pool.top_k(texts[i], k)
            if len(best) < k or best[-1][1] < threshold:
                break
            k *= 4
        for idx, score in best:
            j = int(members[idx])
            if score >= threshold and j != i:
                a.append(min(i, j))
                b.append(max(i, j))
                s.append(score)
    return {"a": np.asarray(a, np.int64), "b": np.asarray(b, np.int64), "score": np.asarray(s, float)}


def _components(n: int, pairs: np.ndarray) -> list[list[int]]:
    """Connected components of two or more members (ascending), from pairs ``[i, j]``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(pairs):
        return []
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    members = np.flatnonzero(sizes[labels] > 1)
    groups: dict[int, list[int]] = {}
    for x in members.tolist():
        groups.setdefault(int(labels[x]), []).append(x)
    return sorted(groups.values())


def _greedy_component(batch: dict[str, np.ndarray], texts_ref: list, threshold: float) -> dict[str, np.ndarray]:
    """The greedy pass inside each component, in unit order, on its verified pairs."""
    texts = _get(texts_ref)
    x_out, dup_out, s_out = [], [], []
    for members, a, b in zip(batch["members"], batch["a"], batch["b"]):
        members = np.asarray(members, np.int64)
        local = {int(m): k for k, m in enumerate(members)}
        pairs = [(local[int(i)], local[int(j)]) for i, j in zip(a, b)]
        _, dropped = greedy_dedup_among([tokenize(texts[m]) for m in members], threshold, pairs)
        for x, dup, score in dropped:
            x_out.append(members[x])
            dup_out.append(members[dup])
            s_out.append(score)
    return {"x": np.asarray(x_out, np.int64), "dup": np.asarray(dup_out, np.int64), "score": np.asarray(s_out, float)}


def rouge_dedup(
    texts: Sequence[str],
    threshold: float,
    *,
    method: str,
    lsh_threshold: float = 0.3,
    num_perm: int = 256,
    max_df: float = 0.01,
    max_count: int = 100,
    address: str | None = None,
) -> tuple[list[tuple[int, int, float]], dict[str, Any]]:
    """``greedy_dedup``'s answer (dropped ``(index, duplicate_of, score)``) for ``texts`` in order, on Ray,
    and stats. ``method`` is the resolved ``rouge_method``: ``lsh`` verifies LSH candidate pairs (and searches
    the texts LSH cannot place exhaustively, as the local LSH path does); ``exact`` searches every text
    against all others, so every pair at or above ``threshold`` is found."""
    import ray

    n = len(texts)
    if n < 2:
        return [], {"engine": "ray"}
    connect(address)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    ds = _dataset({"i": np.arange(n), "text": list(texts)})
    texts_ref = [ray.put(list(texts))]
    pair_sets = []
    stats: dict[str, Any] = {"engine": "ray"}
    if method == "lsh":
        tokens = Tokens.of(
            [list(t) for t in _rows(ds.map_batches(_tokenize, batch_format="numpy"), "tokens")["tokens"]]
        )
        owner, hashes, df = minhash.shingles(tokens)
        found, few = minhash.tiers(owner, df, tokens.lengths > 0, min(max(max_df * n, 50), max_count))
        bands, rows = minhash.lsh_params(lsh_threshold, num_perm)
        codes = [np.empty(0, np.int64)]
        for k, (entries, members, required) in enumerate(found):  # the local Sketch's tiers, seeds and keys
            starts, held = np.searchsorted(owner[entries], np.arange(n + 1)), hashes[entries]
            placed = np.flatnonzero(members)
            sets = _dataset({"i": placed, "shingles": [held[starts[m] : starts[m + 1]] for m in placed]})
            keys = sets.map_batches(
                _band_keys,
                batch_format="numpy",
                fn_kwargs={"num_perm": num_perm, "bands": bands, "rows": rows, "seed": 1 + k},
            )
            for group in _groups(keys, n):  # every pair a < b of each bucket (holding a required text)
                a, b = (group[x] for x in np.triu_indices(len(group), 1))
                keep = np.ones(len(a), bool) if required is None else required[a] | required[b]
                codes.append(a[keep] * n + b[keep])
        codes = np.unique(np.concatenate(codes))
        stats.update(candidate_pairs=int(len(codes)), pool_searched=int(few.sum()))
        timings["lsh_s"] = time.perf_counter() - started
        if len(codes):
            cand = _dataset({"a": codes // n, "b": codes % n})
            pair_sets.append(
                cand.map_batches(
                    _verify, batch_format="numpy", fn_kwargs={"texts_ref": texts_ref, "threshold": threshold}
                )
            )
        searched = np.flatnonzero(few)
    else:
        searched = np.arange(n)
    if len(searched):
        pool_ref = [ray.put(searched)]
        pair_sets.append(
            ds.select_columns(["i"]).map_batches(
                _pool_pairs,
                batch_format="numpy",
                fn_kwargs={"texts_ref": texts_ref, "pool_ref": pool_ref, "threshold": threshold},
            )
        )
    started = time.perf_counter()
    verified = [_rows(p, "a", "b", "score") for p in pair_sets]
    a = np.concatenate([v["a"] for v in verified]).astype(np.int64) if verified else np.empty(0, np.int64)
    b = np.concatenate([v["b"] for v in verified]).astype(np.int64) if verified else np.empty(0, np.int64)
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if len(a) else np.empty((0, 2), np.int64)
    timings["verify_s"] = time.perf_counter() - started
    started = time.perf_counter()
    components = _components(n, pairs)
    dropped: list[tuple[int, int, float]] = []
    if components:
        label = np.full(n, -1, np.int64)
        for c, members in enumerate(components):
            label[members] = c
        by_component: list[list[tuple[int, int]]] = [[] for _ in components]
        for i, j in pairs.tolist():
            by_component[label[i]].append((i, j))
        import pyarrow as pa

        table = {
            "members": pa.array(components, pa.list_(pa.int64())),
            "a": pa.array([[i for i, _ in ps] for ps in by_component], pa.list_(pa.int64())),
            "b": pa.array([[j for _, j in ps] for ps in by_component], pa.list_(pa.int64())),
        }
        result = _rows(
            _dataset(table).map_batches(
                _greedy_component, batch_format="numpy", fn_kwargs={"texts_ref": texts_ref, "threshold": threshold}
            ),
            "x",
            "dup",
            "score",
        )
        dropped = sorted((int(x), int(d), float(s)) for x, d, s in zip(result["x"], result["dup"], result["score"]))
    timings["greedy_s"] = time.perf_counter() - started
    stats.update(
        verified_pairs=int(len(pairs)),
        components=len(components),
        largest_component=max(map(len, components), default=0),
        **{k: round(v, 4) for k, v in timings.items()},
    )
    return dropped, stats


# ---------------------------------------------------------------------------------------------- embeddings


class _Encoder:
    """One encoder per actor, loaded once (``datagen.embed``); returns the vectors of the readable texts."""

    def __init__(self, model: str | None, device: str | None, batch_size: int, max_unknown: float):
        self.model, self.device, self.batch_size, self.max_unknown = model, device, batch_size, max_unknown
        self.encoder = load_encoder(model, device, "filter.embed_model")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        readable = np.flatnonzero(semantic.unknown_share(self.encoder, texts) <= self.max_unknown)
        vectors = encode([texts[k] for k in readable], self.model, self.device, self.batch_size)
        return {"i": batch["i"][readable], "vector": list(vectors)}


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
    address: str | None = None,
) -> semantic.EmbedResult:
    """``semantic.embed_dedup`` with the encoder as a Ray actor pool; the same arguments and result."""
    import ray
    from ray.data import ActorPoolStrategy

    if grouping not in semantic.GROUPINGS:
        raise ConfigError(f"filter.embed_grouping must be one of {list(semantic.GROUPINGS)}, got {grouping!r}")
    connect(address)
    n = len(texts)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    cpus = int(ray.cluster_resources().get("CPU", 1))
    # One actor per GPU; on CPUs, half the cores (torch already spreads one encode over a few threads).
    size = max(1, gpus) if gpus else max(1, cpus // 2)
    encoded = _dataset({"i": np.arange(n), "text": list(texts)}).map_batches(
        _Encoder,
        batch_format="numpy",
        batch_size=max(batch_size, 256),
        compute=ActorPoolStrategy(min_size=1, max_size=size),
        num_gpus=1 if gpus else 0,
        fn_constructor_kwargs={"model": model, "device": device, "batch_size": batch_size, "max_unknown": max_unknown},
    )
    rows = _rows(encoded, "i", "vector")
    order = np.argsort(rows["i"], kind="stable")
    readable = rows["i"][order].astype(np.int64)
    vectors = np.ascontiguousarray(
        np.stack(rows["vector"][order]) if len(readable) else np.zeros((0, 1)), dtype=np.float32
    )
    timings["encode_s"] = time.perf_counter() - started
    result = semantic.group_vectors(
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
    result.stats = {"engine": "ray", "actors": size, "gpus_per_actor": 1 if gpus else 0, **result.stats}
    return result
