"""Benchmark: the filter's embedding near-duplicate stage on 20,000 instructions, end to end.

    python bench/bench_filter.py                          # ~2-4 minutes on 2 CPU cores
    python bench/bench_filter.py --records 5000 --device cpu --out /tmp/bench_filter.json

End to end is what ``datagen filter`` spends in stage 4 once the model is loaded: the [UNK] check, encoding
with the bundled all-MiniLM-L6-v2 (batch 64), faiss pair search (IndexFlatIP below 100k texts) and union-find
grouping. Reported: records/s over that span, the seconds of each part, and the share of time spent outside
the encoder (target < 15%: the encoder is the irreducible cost, everything else is our overhead). Model
loading is timed separately: it is paid once per process.

The texts are synthetic instructions from a seeded generator (verbs x forms x adjectives x topics, 8-20
words), about 10% of them planted rewordings of an earlier one (a synonym verb, "please", different
punctuation), and by default 10% Chinese, which the English-only model cannot read and the stage skips.
Other processes on the machine inflate every number; the encoder dominates, so records/s tracks the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from datagen.filter.semantic import DEFAULT_MODEL, embed_dedup, load_encoder  # noqa: E402

VERBS = [("Write", "Compose"), ("Explain", "Describe"), ("List", "Name"), ("Summarize", "Sum up"),
         ("Create", "Design"), ("Suggest", "Recommend"), ("Compare", "Contrast"), ("Draft", "Prepare")]
FORMS = ["a short essay", "a blog post", "a list of tips", "a lesson plan", "a product description", "a speech",
         "a news headline", "a poem", "a dialogue", "a step-by-step guide", "an FAQ section", "a cover letter",
         "a tweet", "a travel itinerary", "a quiz", "a press release"]
ADJS = ["concise", "friendly", "detailed", "persuasive", "funny", "formal", "simple", "vivid", "balanced"]
TOPICS = ["renewable energy", "ancient Rome", "urban gardening", "quantum computing", "ocean tides",
          "personal finance", "remote work", "volcanoes", "the history of tea", "machine learning",
          "healthy breakfasts", "marathon training", "coral reefs", "public libraries", "electric cars",
          "medieval castles", "sleep hygiene", "job interviews", "solar eclipses", "bird migration",
          "climate change", "the printing press", "space exploration", "board games", "honey bees"]
AUDIENCES = ["for high school students", "for a busy parent", "for a software engineer", "for retirees",
             "for a first-time visitor", "for small business owners", "for children aged ten", "for beginners"]
ZH_VERBS = ["写一篇", "解释", "总结", "列出", "介绍", "比较"]
ZH_TOPICS = ["可再生能源", "古罗马历史", "阳台种菜", "量子计算", "潮汐现象", "个人理财", "远程办公", "火山喷发",
             "茶的历史", "机器学习", "健康早餐", "马拉松训练", "珊瑚礁", "公共图书馆", "电动汽车"]
ZH_AUDIENCES = ["给中学生看", "给忙碌的父母", "给软件工程师", "给退休老人", "给第一次来的游客", "给初学者"]


def make_texts(n: int, zh_share: float, dup_share: float, seed: int) -> list[str]:
    """``n`` instruction texts: distinct English ones, planted rewordings of earlier ones, some Chinese."""
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < n:
        roll = rng.random()
        if texts and roll < dup_share:
            base = rng.choice(texts)
            for plain, synonym in VERBS:  # reword the verb, if it has one, then vary the surface
                if base.startswith(plain + " "):
                    base = synonym + base[len(plain):]
                    break
            texts.append(rng.choice(["Please " + base[0].lower() + base[1:], base.rstrip(".") + "!", base.upper()]))
        elif roll < dup_share + zh_share:
            texts.append(f"{rng.choice(ZH_AUDIENCES)}{rng.choice(ZH_VERBS)}关于{rng.choice(ZH_TOPICS)}的"
                         f"{rng.choice(['短文', '要点', '说明', '建议'])}，不超过{rng.randint(2, 9)}百字。")
        else:
            verb = rng.choice(VERBS)[0]
            texts.append(f"{verb} {rng.choice(FORMS)} about {rng.choice(TOPICS)} {rng.choice(AUDIENCES)}, "
                         f"in a {rng.choice(ADJS)} tone, under {rng.randint(1, 9) * 50} words.")
    return texts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--zh-share", type=float, default=0.1, help="share of Chinese texts (skipped by MiniLM)")
    parser.add_argument("--dup-share", type=float, default=0.1, help="share of planted rewordings")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: what sentence-transformers picks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/bench_filter.json"),
                        help="write the results as JSON here")
    args = parser.parse_args(argv)

    texts = make_texts(args.records, args.zh_share, args.dup_share, args.seed)
    started = time.perf_counter()
    encoder = load_encoder(None, args.device)
    load_s = time.perf_counter() - started
    encoder.encode(texts[:64], batch_size=args.batch_size, show_progress_bar=False)  # warm up kernels

    started = time.perf_counter()
    result = embed_dedup(texts, priority=list(range(len(texts))), threshold=args.threshold, device=args.device,
                         batch_size=args.batch_size)
    total_s = time.perf_counter() - started
    stats = result.stats
    outside_s = total_s - stats["encode_s"]
    row = {
        "records": len(texts), "model": DEFAULT_MODEL, "device": str(encoder.device), "threshold": args.threshold,
        "batch_size": args.batch_size, "records_per_s": len(texts) / total_s, "total_s": total_s,
        "load_s": load_s, "tokenize_s": stats["tokenize_s"], "encode_s": stats["encode_s"],
        "search_s": stats["search_s"], "group_s": stats["group_s"], "outside_encoder_s": outside_s,
        "outside_encoder_share": outside_s / total_s, "encoded": len(texts) - stats["unreadable"],
        "unreadable": stats["unreadable"], "pairs": stats["pairs"], "dropped": len(result.dropped),
        "groups": stats["groups"], "largest_group": stats["largest_group"], "index": stats["index"],
    }
    machine = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
               "torch_threads": _torch_threads()}

    print(f"Embedding dedup, {row['records']:,} instructions ({row['encoded']:,} encoded, {row['unreadable']:,} "
          f"Chinese skipped), {row['model']} on {row['device']}, cosine >= {row['threshold']}; "
          f"model load {load_s:.1f} s (once per process)\n")
    print("| records/s | total s | encode s | [UNK] check s | search s | group s | outside encoder | "
          "pairs | dropped | largest group |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {row['records_per_s']:,.0f} | {total_s:.2f} | {row['encode_s']:.2f} | {row['tokenize_s']:.3f} | "
          f"{row['search_s']:.3f} | {row['group_s']:.3f} | {row['outside_encoder_share']:.1%} | {row['pairs']:,} | "
          f"{row['dropped']:,} | {row['largest_group']} |")
    print(f"\n{machine['cpus']} CPUs, torch threads {machine['torch_threads']}, Python {machine['python']}; "
          f"target: outside encoder < 15% -> {'met' if row['outside_encoder_share'] < 0.15 else 'NOT met'}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"embed_dedup": row, "machine": machine}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _torch_threads() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
