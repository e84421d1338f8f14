"""Benchmark: the filter at size — 10K to 300K (or 1M) synthetic records with planted duplicates, en and zh.

    python bench/bench_filter.py                                  # 10K, 100K, 300K: about 15-25 min on 2 cores
    python bench/bench_filter.py --sizes 2000,10000 --out /tmp/f.json

Each size runs in its own process (so peak RSS is that size's) through the filter's own stage functions:
heuristics, exact dedup, the ROUGE-L stage by both paths (exact pool search up to ``--exact-max`` units,
MinHash-LSH candidates + exact ROUGE-L on them at every size), and the embedding pair search + greedy grouping.

What is measured, per size: seconds of each stage, peak RSS, planted-duplicate recall (planted copies the
exact and ROUGE-L stages reject), kept-set agreement of LSH vs exact ROUGE-L and LSH pair recall (the share of
the exact path's (dropped, kept) pairs that share a LSH band), and the embedding index picked with its recall
measured against exact search. Across sizes: the log-log slope of the ROUGE stage and of the pair search.

The encoder is reported on its own: encoding 300K texts with MiniLM on 2 shared cores takes longer than every
other stage together and is the floor on CPU (a GPU or a cluster scales it out), so the pair search runs on
384-dim hashed bag-of-token vectors (same shape and index as MiniLM's; planted copies land near their source),
and MiniLM's rate is measured on 2,000 texts and multiplied out.

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

FUNCTION = ["the", "a", "of", "and", "to", "in", "for", "with", "about", "on", "how", "what", "is", "your", "an"]
SYLLABLES = ["ka", "lo", "mi", "ren", "tu", "sa", "vo", "pel", "dri", "no", "qua", "zen", "bi", "tor", "fe", "gal"]


def _vocab_en(size: int, rng: random.Random) -> list[str]:
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def make_records(n: int, seed: int = 0, zh_share: float = 0.15, exact_share: float = 0.05,
                 near_share: float = 0.10) -> tuple[list[dict], list[bool]]:
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
            records.append({"instruction": text.upper() if lang == "en" and roll < exact_share else text,
                            "output": render(lang, draw(lang, rng.randint(10, 30)), "." if lang == "en" else "。")})
            planted.append(True)
            continue
        lang = "zh" if rng.random() < zh_share else "en"
        tokens = draw(lang, rng.randint(8, 24) if lang == "en" else rng.randint(10, 30))
        sources.append((lang, tokens))
        records.append({"instruction": render(lang, tokens, "." if lang == "en" else "。"),
                        "output": render(lang, draw(lang, rng.randint(10, 30)), "." if lang == "en" else "。")})
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


def one_size(n: int, exact_max: int, encoder_sample: int, seed: int) -> dict:
    """Everything measured at one size (run in a child process)."""
    from datagen.filter import minhash, semantic
    from datagen.filter.pipeline import FilterConfig, _exact_dedup, _heuristics, _Run, similarity_text
    from datagen.records import Example
    from datagen.rouge import greedy_dedup, greedy_dedup_among, tokenize

    started = time.perf_counter()
    records, planted = make_records(n, seed)
    examples = [Example(**r) for r in records]
    row: dict = {"records": n, "planted_copies": int(sum(planted)), "generate_s": time.perf_counter() - started}
    cfg = FilterConfig(embed_dedup=False)
    run = _Run(cfg, examples)
    _heuristics(run)
    _exact_dedup(run)
    row["heuristics_s"] = run.stages["heuristics"]["seconds"]
    row["exact_dedup_s"] = run.stages["exact_dedup"]["seconds"]
    row["heuristic_rejects"] = run.stages["heuristics"]["rejected"]

    started = time.perf_counter()
    units = run.units()
    texts = [similarity_text(examples[u[0]]) for u in units]
    row["units_s"] = time.perf_counter() - started
    row["units"] = len(units)
    started = time.perf_counter()
    tokens = [tokenize(t) for t in texts]
    row["rouge_tokenize_s"] = time.perf_counter() - started
    started = time.perf_counter()
    sketch = minhash.Sketch(tokens, threshold=cfg.rouge_lsh_threshold, num_perm=cfg.rouge_lsh_num_perm,
                            max_df=cfg.rouge_lsh_max_df)
    row["minhash_s"] = time.perf_counter() - started
    started = time.perf_counter()
    pairs = sketch.pairs()
    row["lsh_pairs_s"] = time.perf_counter() - started
    row["candidate_pairs"] = int(len(pairs))
    started = time.perf_counter()
    kept_l, dropped_l = greedy_dedup_among(tokens, cfg.rouge_threshold, pairs, exhaustive=sketch.few)
    row["pool_searched"] = int(sketch.few.sum())
    row["rouge_verify_s"] = time.perf_counter() - started
    row["rouge_lsh_s"] = row["rouge_tokenize_s"] + row["minhash_s"] + row["lsh_pairs_s"] + row["rouge_verify_s"]
    row["rouge_lsh_dropped"] = len(dropped_l)
    if len(units) <= exact_max:
        started = time.perf_counter()
        kept_e, dropped_e = greedy_dedup(texts, cfg.rouge_threshold)
        row["rouge_exact_s"] = time.perf_counter() - started
        row["rouge_exact_dropped"] = len(dropped_e)
        row["kept_set_equal"] = kept_e == kept_l
        row["kept_set_differences"] = len(set(kept_e) ^ set(kept_l))
        exact_pairs = np.array([(k, x) for x, k, _ in dropped_e], np.int64).reshape(-1, 2)
        row["lsh_pair_recall"] = float(sketch.collides(exact_pairs).mean()) if len(exact_pairs) else 1.0
    gone = {i for u, _, _ in dropped_l for i in units[u]}
    rejected = set(run.rejected) | gone
    copies = [i for i, p in enumerate(planted) if p]
    row["planted_recall"] = sum(i in rejected for i in copies) / max(len(copies), 1)
    row["false_drops"] = sum(1 for i in rejected if not planted[i]) - row["heuristic_rejects"]

    survivors = [units[u][0] for u in kept_l]
    vectors = hashed_vectors([similarity_text(examples[i]) for i in survivors])
    info: dict = {}
    started = time.perf_counter()
    i, j, s = semantic.similar_pairs(vectors, cfg.embed_threshold, ivf_above=cfg.embed_ivf_above,
                                     nprobe=cfg.embed_nprobe, min_recall=cfg.embed_min_recall, info=info)
    row["pair_search_s"] = time.perf_counter() - started
    started = time.perf_counter()
    kept_v, dropped_v = semantic.keep_greedy(len(vectors), i, j, s, list(range(len(vectors))))
    row["embed_group_s"] = time.perf_counter() - started
    row["embed_texts"], row["embed_pairs"], row["embed_dropped"] = len(vectors), int(len(i)), len(dropped_v)
    row["embed_index"] = info

    if encoder_sample:
        from datagen.filter.semantic import encode, load_encoder

        load_encoder(None, "cpu")
        sample = texts[:encoder_sample]
        encode(sample[:64], None, "cpu")
        started = time.perf_counter()
        encode(sample, None, "cpu")
        rate = len(sample) / (time.perf_counter() - started)
        row["encoder_texts_per_s"] = rate
    row["stages_without_encoder_s"] = (row["heuristics_s"] + row["exact_dedup_s"] + row["units_s"]
                                       + row["rouge_lsh_s"] + row["pair_search_s"] + row["embed_group_s"])
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def slope(rows: list[dict], key: str) -> float | None:
    points = [(r["records"], r[key]) for r in rows if r.get(key)]
    if len(points) < 2:
        return None
    (n0, t0), (n1, t1) = points[0], points[-1]
    return round(math.log(t1 / t0) / math.log(n1 / n0), 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,300000")
    parser.add_argument("--exact-max", type=int, default=100_000, help="run the exact ROUGE path up to this many units")
    parser.add_argument("--encoder-sample", type=int, default=2000, help="texts MiniLM encodes to time it (0 = skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bench_filter.json"))
    args = parser.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.exact_max, args.encoder_sample, args.seed)))
        return 0

    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--one", str(n), "--exact-max", str(args.exact_max),
                               "--encoder-sample", str(args.encoder_sample if not rows else 0),
                               "--seed", str(args.seed)], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    rate = rows[0].get("encoder_texts_per_s")
    for row in rows:
        if rate:
            row["encoder_s_estimated"] = round(row["embed_texts"] / rate, 1)
    slopes = {"rouge_lsh": slope(rows, "rouge_lsh_s"), "rouge_exact": slope(rows, "rouge_exact_s"),
              "pair_search": slope(rows, "pair_search_s"), "stages_without_encoder": slope(rows, "stages_without_encoder_s")}
    lines = ["Timings taken on a 2-core machine shared with 7 other jobs (load average in the header): "
             "absolute seconds are inflated, slopes less so.", "",
             "| records | heuristics s | exact dedup s | ROUGE LSH s (minhash / pairs / verify) | ROUGE exact s | "
             "pair search s (index, recall) | all but encoder s | encoder s (est.) | peak RSS MB | planted recall | "
             "LSH pair recall | kept set LSH = exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        idx = r["embed_index"]
        lines.append(
            f"| {r['records']:,} | {r['heuristics_s']:.1f} | {r['exact_dedup_s']:.1f} | {r['rouge_lsh_s']:.1f} "
            f"({r['minhash_s']:.1f} / {r['lsh_pairs_s']:.1f} / {r['rouge_verify_s']:.1f}) | "
            f"{r.get('rouge_exact_s', float('nan')):.1f} | {r['pair_search_s']:.1f} ({idx.get('index')}, "
            f"{idx.get('recall')}) | {r['stages_without_encoder_s']:.1f} | {r.get('encoder_s_estimated', '-')} | "
            f"{r['peak_rss_mb']:.0f} | {r['planted_recall']:.4f} | {r.get('lsh_pair_recall', '-')} | "
            f"{r.get('kept_set_equal', '-')} ({r.get('kept_set_differences', '-')} differ) |")
    lines += ["", "Log-log slopes from the smallest to the largest size: " + ", ".join(
        f"{k} {v}" for k, v in slopes.items() if v is not None) + " (targets: ROUGE and pair search <= 1.2)."]
    markdown = "\n".join(lines)
    print(markdown)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"markdown": markdown, "sizes": rows, "slopes": slopes, "machine": machine},
                                       indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
