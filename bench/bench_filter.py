"""Benchmark: the filter at size — 10K to 1M synthetic records with planted duplicates, en and zh.

    python bench/bench_filter.py                                  # 10K, 100K, 300K, 1M
    python bench/bench_filter.py --sizes 2000,10000 --out /tmp/f.json
    python bench/bench_filter.py --sizes 1000000 --skip heuristics,pair_search   # the ROUGE stage alone
    python bench/bench_filter.py --pipeline --sizes 100000,1000000   # `datagen filter` end to end, streaming

Each size runs in its own process (so peak RSS is that size's) through the filter's own stage functions:
heuristics, exact dedup, the ROUGE-L stage by both paths (exact pool search up to ``--exact-max`` units,
MinHash-LSH candidates + exact ROUGE-L on them at every size), and the embedding pair search + greedy grouping.

What is measured, per size: wall AND CPU seconds of each stage (the machine is shared: CPU seconds are what
the code costs, wall what it cost there; the load average is recorded per size), peak RSS, planted-duplicate
recall, kept-set agreement of LSH vs exact ROUGE-L (records kept by one path only, each way) and LSH pair
recall (the share of the exact path's (kept, dropped) pairs that LSH compares), a check that every LSH drop
is >= the threshold to a kept record, and the embedding index picked with its recall against exact search.
Beside ours, the same near-duplicate workload through datasketch's ``MinHashLSH`` used directly (up to
``--peer-max`` units), for a time ratio and its kept-set agreement. Across sizes: log-log slopes, wall and CPU.

The encoder is reported on its own: encoding 300K texts with MiniLM on 2 shared cores takes longer than every
other stage together and is the floor on CPU (a GPU or a cluster scales it out), so the pair search runs on
384-dim hashed bag-of-token vectors (same shape and index as MiniLM's; planted copies land near their source),
and MiniLM's rate is measured on ``--encoder-sample`` texts with one torch thread per core.

Data: instructions of 8-24 tokens drawn from a Zipf vocabulary (function words + 20,000 pseudo-words for
English; 3,500 Han characters for Chinese, 15% of records), answers likewise. 5% of records are exact copies
(case and punctuation changed) and 10% near copies (1-2 tokens replaced, inserted or dropped) of an earlier one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from datagen.rouge import Tokens  # noqa: E402

FUNCTION = ["the", "a", "of", "and", "to", "in", "for", "with", "about", "on", "how", "what", "is", "your", "an"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vo", "pel", "dri", "no", "qua", "zen", "bi", "tor", "fe", "gal"]


def _vocab_en(size: int, rng: random.Random) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def make_records(
    n: int, seed: int = 0, zh_share: float = 0.15, exact_share: float = 0.05, near_share: float = 0.10
) -> tuple[list[dict], list[bool]]:
    """``n`` records and, for each, whether it is a planted copy (exact or near) of an earlier one."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    en = FUNCTION + _vocab_en(20_000, rng)
    zh = [chr(0x4E00 + k) for k in range(3500)]
    weights_en = 1 / np.arange(1, len(en) + 1) ** 1.05
    weights_zh = 1 / np.arange(1, len(zh) + 1) ** 1.0
    cdf_en, cdf_zh = np.cumsum(weights_en / weights_en.sum()), np.cumsum(weights_zh / weights_zh.sum())

    def draw(lang: str, k: int) -> list[str]:  # searchsorted on the CDF: choice(p=...) re-sums p every call
        vocab, cdf = (en, cdf_en) if lang == "en" else (zh, cdf_zh)
        return [vocab[min(i, len(vocab) - 1)] for i in np.searchsorted(cdf, nrng.random(k))]

    def render(lang: str, tokens: list[str], end: str) -> str:
        return ("".join(tokens) if lang == "zh" else " ".join(tokens).capitalize()) + end

    records, planted, sources = [], [], []  # sources: (lang, instruction tokens)
    while len(records) < n:
        roll = rng.random()
        if sources and roll < exact_share + near_share:
            lang, tokens = sources[rng.randrange(len(sources))]
            tokens = list(tokens)
            if roll >= exact_share:  # near copy: 1-2 edits
                for _ in range(rng.randint(1, 2)):
                    op, pos = rng.random(), rng.randrange(len(tokens))
                    if op < 0.4:
                        tokens[pos] = draw(lang, 1)[0]
                    elif op < 0.7:
                        tokens.insert(pos, draw(lang, 1)[0])
                    elif len(tokens) > 8:
                        del tokens[pos]
                    else:
                        tokens[pos] = draw(lang, 1)[0]
            text = render(lang, tokens, rng.choice(["?", ".", "!"] if lang == "en" else ["？", "。"]))
            records.append(
                {
                    "instruction": text.upper() if lang == "en" and roll < exact_share else text,
                    "output": render(lang, draw(lang, rng.randint(10, 30)), "." if lang == "en" else "。"),
                }
            )
            planted.append(True)
            continue
        lang = "zh" if rng.random() < zh_share else "en"
        tokens = draw(lang, rng.randint(8, 24) if lang == "en" else rng.randint(10, 30))
        sources.append((lang, tokens))
        records.append(
            {
                "instruction": render(lang, tokens, "." if lang == "en" else "。"),
                "output": render(lang, draw(lang, rng.randint(10, 30)), "." if lang == "en" else "。"),
            }
        )
        planted.append(False)
    return records, planted


def hashed_vectors(texts: list[str], dim: int = 384) -> np.ndarray:
    """L2-normalised sums of a fixed random vector per token: a stand-in for MiniLM with the same shape."""
    from datagen.rouge import tokenize

    table: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    out = np.zeros((len(texts), dim), np.float32)
    for k, text in enumerate(texts):
        for token in tokenize(text):
            vec = table.get(token)
            if vec is None:
                vec = table[token] = rng.standard_normal(dim).astype(np.float32)
            out[k] += vec
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-9)


class _Clock:
    """Wall and CPU seconds of a block, written as ``{name}_s`` and ``{name}_cpu_s`` into a row.

    CPU seconds (this process's user + system, ``time.process_time``) beside wall: the machine is shared, and
    wall time then measures the neighbours as much as the code.
    """

    def __init__(self, row: dict, name: str):
        self.row, self.name = row, name

    def __enter__(self) -> "_Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.row[f"{self.name}_s"] = time.perf_counter() - self.wall
        self.row[f"{self.name}_cpu_s"] = time.process_time() - self.cpu


def peer_datasketch(
    tokens: Tokens, threshold: float, jaccard: float = 0.5, num_perm: int = 128
) -> tuple[list[int], list[int]]:
    """The same near-duplicate workload through datasketch's ``MinHashLSH`` used directly, the way its docs
    show: a ``MinHash`` of each text's token set (``MinHash.bulk``), query the LSH for earlier kept texts,
    keep the text (and insert it) unless a candidate scores ROUGE-L F >= ``threshold`` (exact, rapidfuzz).
    Jaccard 0.5 on token sets: ROUGE-L 0.7 pairs have token-set Jaccard >= 0.54 (datagen/filter/minhash.py).
    """
    from datasketch import MinHash, MinHashLSH
    from rapidfuzz import process
    from rapidfuzz.distance import LCSseq

    lsh = MinHashLSH(threshold=jaccard, num_perm=num_perm)
    hashes = MinHash.bulk(
        [[str(t).encode() for t in set(tokens[k].tolist())] for k in range(len(tokens))], num_perm=num_perm
    )
    kept, dropped = [], []
    for k, m in enumerate(hashes):
        cands = lsh.query(m) if tokens.lengths[k] else []
        if cands:
            lcs = process.cdist(tokens.seqs([k]), tokens.seqs(cands), scorer=LCSseq.similarity)[0]
            f = 2 * lcs / (tokens.lengths[k] + tokens.lengths[cands])
            if (f >= threshold - 1e-9).any():
                dropped.append(k)
                continue
        lsh.insert(k, m)
        kept.append(k)
    return kept, dropped


def one_size(
    n: int, exact_max: int, encoder_sample: int, seed: int, peer_max: int, skip: frozenset[str] = frozenset()
) -> dict:
    """Everything measured at one size (run in a child process); ``skip`` names stages not run
    ("heuristics", "pair_search": for a ROUGE-only measurement at a size where the rest takes too long)."""
    import tempfile

    from datagen.filter import minhash, semantic
    from datagen.filter.pipeline import FilterConfig, _exact_dedup, _Run, _scan
    from datagen.rouge import Tokens, greedy_dedup, greedy_dedup_among, rouge_l

    row: dict = {"records": n, "load_average_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    tmp = tempfile.TemporaryDirectory(prefix="bench_filter_")
    path = Path(tmp.name) / "records.jsonl"
    with _Clock(row, "generate"):
        planted = write_records(n, seed, path)
    row["planted_copies"] = int(sum(planted))
    cfg = FilterConfig(inputs=(path,), embed_dedup=False, heuristics="heuristics" not in skip)
    run = _Run(cfg)
    with _Clock(row, "heuristics"):  # the filter's pass 1: read each record, run the heuristics, keep its row
        _scan(run, None)
    if "heuristics" in skip:
        run.stages["heuristics"] = {"rejected": 0}
    tmp.cleanup()
    with _Clock(row, "exact_dedup"):
        run.stage("exact_dedup", 0.0, **_exact_dedup(run))  # the stage returns its figures; stage() closes it
    row["heuristic_rejects"] = run.stages["heuristics"]["rejected"]

    with _Clock(row, "units"):
        units, texts = run.units()
    row["units"] = len(units)
    with _Clock(row, "rouge_tokenize"):
        tokens = Tokens.of(texts)
    with _Clock(row, "minhash"):
        sketch = minhash.Sketch(
            tokens,
            threshold=cfg.rouge_lsh_threshold,
            num_perm=cfg.rouge_lsh_num_perm,
            max_df=cfg.rouge_lsh_max_df,
            max_count=cfg.rouge_lsh_max_count,
        )
    with _Clock(row, "lsh_pairs"):
        pairs = sketch.pairs()
    row["candidate_pairs"] = int(len(pairs))
    row["lsh_bands_rows"] = f"{sketch.bands}x{sketch.rows}"
    with _Clock(row, "rouge_verify"):
        kept_l, dropped_l = greedy_dedup_among(tokens, cfg.rouge_threshold, pairs, exhaustive=sketch.few)
    del pairs
    row["pool_searched"] = int(sketch.few.sum())
    row["second_tier"] = int(sum(required.sum() for _, _, required in sketch.tiers if required is not None))
    for unit in ("s", "cpu_s"):
        row[f"rouge_lsh_{unit}"] = sum(
            row[f"{k}_{unit}"] for k in ("rouge_tokenize", "minhash", "lsh_pairs", "rouge_verify")
        )
    row["rouge_lsh_dropped"] = len(dropped_l)
    # Every LSH drop is verified: at or above the threshold to the kept text it names (checked on a sample).
    kept_set = set(kept_l)
    check = dropped_l[:: max(1, len(dropped_l) // 2000)]
    row["lsh_drops_checked"] = len(check)
    row["lsh_drops_below_threshold_or_to_dropped"] = sum(
        1 for x, k, _ in check if k not in kept_set or rouge_l(texts[x], texts[k]) < cfg.rouge_threshold - 1e-9
    )
    if len(units) <= exact_max:
        with _Clock(row, "rouge_exact"):
            kept_e, dropped_e = greedy_dedup(texts, cfg.rouge_threshold)
        row["rouge_exact_dropped"] = len(dropped_e)
        row["kept_set_equal"] = kept_e == kept_l
        row["kept_only_by_lsh"] = len(set(kept_l) - set(kept_e))  # a pair LSH missed (or what follows from one)
        row["kept_only_by_exact"] = len(set(kept_e) - set(kept_l))
        exact_pairs = np.array([(k, x) for x, k, _ in dropped_e], np.int64).reshape(-1, 2)
        row["lsh_pair_recall"] = float(sketch.collides(exact_pairs).mean()) if len(exact_pairs) else 1.0
    gone = {i for u, _, _ in dropped_l for i in units[u]}
    rejected = set(run.rejected) | gone
    copies = [i for i, p in enumerate(planted) if p]
    row["planted_recall"] = sum(i in rejected for i in copies) / max(len(copies), 1)
    row["unplanted_dropped"] = sum(1 for i in rejected if not planted[i]) - row["heuristic_rejects"]
    del sketch, gone, rejected

    survivors = [units[u][0] for u in kept_l] if "pair_search" not in skip else []
    vectors = hashed_vectors([run.sims[i] for i in survivors])
    info: dict = {}
    with _Clock(row, "pair_search"):
        i, j, s = semantic.similar_pairs(
            vectors,
            cfg.embed_threshold,
            ivf_above=cfg.embed_ivf_above,
            nprobe=cfg.embed_nprobe,
            min_recall=cfg.embed_min_recall,
            info=info,
        )
    if skip:
        row["skipped"] = sorted(skip)
    with _Clock(row, "embed_group"):
        kept_v, dropped_v = semantic.keep_greedy(len(vectors), i, j, s, list(range(len(vectors))))
    row["embed_texts"], row["embed_pairs"], row["embed_dropped"] = len(vectors), int(len(i)), len(dropped_v)
    row["embed_index"] = info
    del vectors
    for unit in ("s", "cpu_s"):
        row[f"stages_without_encoder_{unit}"] = sum(
            row[f"{k}_{unit}"]
            for k in ("heuristics", "exact_dedup", "units", "rouge_lsh", "pair_search", "embed_group")
        )
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if encoder_sample:
        import torch

        from datagen.filter.semantic import encode, load_encoder

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        row["torch_threads_default"] = torch.get_num_threads()
        torch.set_num_threads(cores)  # one per core: more threads than cores on a shared machine only thrash
        row["torch_threads"] = torch.get_num_threads()
        load_encoder(None, "cpu")
        sample = texts[:encoder_sample]
        encode(sample[:64], None, "cpu")
        clock = {}
        with _Clock(clock, "encode"):
            encode(sample, None, "cpu")
        row["encoder_sample"] = len(sample)
        row["encoder_texts_per_s"] = len(sample) / clock["encode_s"]
        row["encoder_texts_per_cpu_s"] = len(sample) / clock["encode_cpu_s"]
    if len(units) <= peer_max:
        with _Clock(row, "peer_datasketch"):
            kept_p, dropped_p = peer_datasketch(tokens, cfg.rouge_threshold)
        row["peer_dropped"] = len(dropped_p)
        if len(units) <= exact_max:
            row["peer_kept_equal_exact"] = kept_p == kept_e
            row["peer_kept_differences"] = len(set(kept_p) ^ set(kept_e))
        row["peer_kept_differences_vs_lsh"] = len(set(kept_p) ^ set(kept_l))
        row["peer_time_ratio"] = row["peer_datasketch_s"] / row["rouge_lsh_s"]
        row["peer_cpu_ratio"] = row["peer_datasketch_cpu_s"] / row["rouge_lsh_cpu_s"]
    row["load_average_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def write_records(n: int, seed: int, path: Path) -> list[bool]:
    """The bench's records as a JSONL file, what the filter reads; returns which are planted copies."""
    records, planted = make_records(n, seed)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return planted


def pipeline_size(path: Path, out: Path) -> dict:
    """``run_filter`` end to end on a JSONL file, in a process that holds nothing else, so its peak RSS is
    the filter's: streaming read, heuristics, exact dedup, the ROUGE-L stage (LSH past ``rouge_lsh_above``),
    streaming write. Embedding dedup and the relevance rule are off: both are the encoder (measured on its
    own; at 1M it is hours of CPU), and the pair search on vectors of this size is measured by ``one_size``."""
    import asyncio

    from datagen.filter.pipeline import FilterConfig, run_filter

    row: dict = {
        "input_mb": round(path.stat().st_size / 2**20, 1),
        "load_average_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    cfg = FilterConfig(inputs=(path,), out=out, embed_dedup=False, relevance=False)
    with _Clock(row, "pipeline"):
        stats = asyncio.run(run_filter(cfg))
    row.update(
        records=stats["records_in"],
        curated=stats["curated"],
        rejected=stats["rejected"],
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        stage_s={name: s.get("seconds") for name, s in stats["stages"].items() if s.get("enabled")},
        rouge_method=stats["stages"]["rouge_dedup"].get("method"),
        load_average_after=" ".join(f"{x:.2f}" for x in os.getloadavg()),
    )
    return row


def run_pipeline(sizes: list[int], seed: int) -> list[dict]:
    """For each size: write the records (one process), then filter them (another); a row per size."""
    import tempfile

    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench_filter_") as tmp:
            data = Path(tmp) / "records.jsonl"
            subprocess.run(
                [sys.executable, __file__, "--write", str(n), "--seed", str(seed), "--data", str(data)], check=True
            )
            done = subprocess.run(
                [sys.executable, __file__, "--pipeline-one", str(data), "--data", str(Path(tmp) / "out")],
                capture_output=True,
                text=True,
            )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def render_pipeline(rows: list[dict]) -> str:
    lines = [
        "`datagen filter` end to end (`run_filter` on a JSONL file; embedding dedup and relevance off: the "
        "encoder is measured on its own). Wall / CPU seconds; peak RSS of the filter's process.",
        "",
        "| records | input MB | load avg | wall / CPU s | peak RSS MB | ROUGE method | kept | seconds per stage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_s"].items() if v is not None)
        lines.append(
            f"| {r['records']:,} | {r['input_mb']} | {r['load_average_before'].split()[0]} | "
            f"{r['pipeline_s']:.1f} / {r['pipeline_cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['rouge_method']} | {r['curated']:,} | {stages} |"
        )
    return "\n".join(lines)


def slope(rows: list[dict], key: str, lo: int | None = None, hi: int | None = None) -> float | None:
    """Log-log slope of ``key`` between the sizes ``lo`` and ``hi`` (default: the smallest and the largest)."""
    points = {r["records"]: r[key] for r in rows if r.get(key)}
    lo = min(points, default=None) if lo is None else lo
    hi = max(points, default=None) if hi is None else hi
    if lo not in points or hi not in points or lo == hi:
        return None
    return round(math.log(points[hi] / points[lo]) / math.log(hi / lo), 3)


SLOPED = {
    "rouge_lsh": "ROUGE stage (LSH)",
    "lsh_pairs": "LSH pairs",
    "rouge_verify": "ROUGE verify",
    "rouge_exact": "ROUGE exact",
    "pair_search": "pair search",
    "stages_without_encoder": "all but encoder",
}


def render(rows: list[dict], slopes: dict) -> str:
    """The markdown table: per size, wall / CPU seconds of each stage, RSS, recall and agreement."""

    def wc(r: dict, k: str) -> str:
        return f"{r[k + '_s']:.1f} / {r[k + '_cpu_s']:.1f}" if k + "_s" in r else "-"

    lines = [
        f"Timings on {os.cpu_count()} cores: each cell is wall / CPU seconds (CPU = this process's user + system "
        "time, which other work on the machine does not inflate); the load average when each size started is in "
        "its row.",
        "",
        "| records | load avg | heuristics | exact dedup | ROUGE LSH (minhash / pairs / verify) | LSH pairs | "
        "ROUGE exact | pair search (index, nprobe, recall) | all but encoder | peak RSS MB | planted recall | "
        "LSH pair recall | kept LSH vs exact (only LSH / only exact) | datasketch (ratio wall, CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        idx = r["embed_index"]
        peer = (
            f"{wc(r, 'peer_datasketch')} ({r['peer_time_ratio']:.2f}x, {r['peer_cpu_ratio']:.2f}x)"
            if "peer_datasketch_s" in r
            else "-"
        )
        agree = (
            f"{'equal' if r['kept_set_equal'] else 'differ'} ({r['kept_only_by_lsh']} / {r['kept_only_by_exact']})"
            if "kept_set_equal" in r
            else "-"
        )
        lines.append(
            f"| {r['records']:,} | {r['load_average_before'].split()[0]} | {wc(r, 'heuristics')} | "
            f"{wc(r, 'exact_dedup')} | {wc(r, 'rouge_lsh')} ({r['minhash_cpu_s']:.1f} / {r['lsh_pairs_cpu_s']:.1f} / "
            f"{r['rouge_verify_cpu_s']:.1f} CPU) | {r['candidate_pairs']:,} | {wc(r, 'rouge_exact')} | "
            f"{wc(r, 'pair_search')} ({idx.get('index')}, {idx.get('ivf_nprobe', '-')}, {idx.get('recall')}) | "
            f"{wc(r, 'stages_without_encoder')} | {r['peak_rss_mb']:.0f} | {r['planted_recall']:.4f} | "
            f"{r.get('lsh_pair_recall', '-')} | {agree} | {peer} |"
        )
    lines += [
        "",
        "| log-log slope | " + " | ".join(f"{a}→{b}" for a, b in slopes["spans"]) + " |",
        "|---|" + "---|" * len(slopes["spans"]),
    ]
    for key, label in SLOPED.items():
        for unit in ("wall", "cpu"):
            cells = [slopes[unit].get(f"{key}:{a}:{b}") for a, b in slopes["spans"]]
            if any(c is not None for c in cells):
                lines.append(f"| {label} ({unit}) | " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    enc = next((r for r in rows if r.get("encoder_texts_per_s")), None)
    if enc:
        lines += [
            "",
            f"Encoder (MiniLM, CPU, on its own): {enc['encoder_texts_per_s']:.1f} texts/s wall, "
            f"{enc['encoder_texts_per_cpu_s']:.1f} texts per CPU second, {enc['encoder_sample']} texts, "
            f"torch threads {enc['torch_threads']} (default {enc['torch_threads_default']}).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,300000,1000000")
    parser.add_argument(
        "--exact-max", type=int, default=100_000, help="run the exact ROUGE path up to this many units"
    )
    parser.add_argument("--peer-max", type=int, default=300_000, help="run datasketch's LSH up to this many units")
    parser.add_argument("--encoder-sample", type=int, default=1000, help="texts MiniLM encodes to time it (0 = skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", default="", help="stages not run, comma-separated: heuristics, pair_search")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="run `run_filter` end to end on each size (streaming, peak RSS of the filter alone)",
    )
    parser.add_argument("--write", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-one", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bench_filter.json"))
    args = parser.parse_args(argv)
    if args.one is not None:
        skip = frozenset(x for x in args.skip.split(",") if x)
        print(json.dumps(one_size(args.one, args.exact_max, args.encoder_sample, args.seed, args.peer_max, skip)))
        return 0
    if args.write is not None:
        write_records(args.write, args.seed, args.data)
        return 0
    if args.pipeline_one is not None:
        print(json.dumps(pipeline_size(args.pipeline_one, args.data)))
        return 0
    if args.pipeline:
        rows = run_pipeline([int(x) for x in args.sizes.split(",")], args.seed)
        markdown = render_pipeline(rows)
        print(markdown)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"markdown": markdown, "pipeline": rows}, indent=2) + "\n")
        return 0

    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                str(n),
                "--exact-max",
                str(args.exact_max),
                "--encoder-sample",
                str(args.encoder_sample if not rows else 0),
                "--peer-max",
                str(args.peer_max),
                "--seed",
                str(args.seed),
                "--skip",
                args.skip,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    sizes = [r["records"] for r in rows]
    spans = [(a, b) for a, b in zip(sizes, sizes[1:])] + ([(sizes[0], sizes[-1])] if len(sizes) > 2 else [])
    spans += [(sizes[0], n) for n in sizes[2:-1]]
    slopes: dict = {"spans": spans, "wall": {}, "cpu": {}}
    for key in SLOPED:
        for a, b in spans:
            slopes["wall"][f"{key}:{a}:{b}"] = slope(rows, f"{key}_s", a, b)
            slopes["cpu"][f"{key}:{a}:{b}"] = slope(rows, f"{key}_cpu_s", a, b)
    markdown = render(rows, slopes)
    print(markdown)
    machine = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"markdown": markdown, "sizes": rows, "slopes": slopes, "machine": machine}, indent=2) + "\n"
        )
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
