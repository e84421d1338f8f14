"""Benchmark: Self-Instruct's ROUGE-L pool filter, rouge_score (as stanford_alpaca runs it) vs datagen.rouge.

    python bench/bench_rouge.py                      # ~4-5 minutes on 2 cores
    python bench/bench_rouge.py --candidates 5000 --classic-budget 120 --out rouge.json

The workload is Self-Instruct's inner loop: 5,000 candidate instructions arrive one by one at a pool that
starts as 175 seeds; a candidate scoring ROUGE-L F >= 0.7 against any pool item is rejected, otherwise its
10 most similar pool items are recorded and it joins the pool. Candidates are synthetic instructions from a
seeded generator (templates x verbs x objects x topics), about 30% of them planted near-duplicates of an
earlier text with 1-5 small edits, so many land near the threshold.

- classic: stanford_alpaca's ``generate_instruction.py``: the pool pre-tokenized with rouge_score's
  tokenizer, ``rouge_scorer._score_lcs(new_tokens, pool_tokens)`` for every pool item, top-10 by argsort.
  (alpaca rejects on ``> 0.7``; datagen's rule is ``>= 0.7``, and both sides here use it.)
- classic + Pool: the same with alpaca's ``with Pool(num_cpus) as p: p.map(...)`` per candidate.
- ours: ``RougePool.is_near_duplicate`` then, for kept candidates, ``RougePool.top_k(text, 10)``.

The classic sides are pure Python and slow, so each runs on the first candidates until its time budget is
spent. The kept decisions on that prefix must be identical to ours (asserted), and the full-run time is
extrapolated with a per-candidate model ``seconds = a + b * pool_size`` (see `fit`) fitted on the candidates
it did run and summed over the pool sizes of the full run; the output says which numbers are extrapolated.
Other processes on the machine inflate every number: the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.rouge import RougePool, greedy_dedup  # noqa: E402

THRESHOLD = 0.7

# --- a seeded generator of instruction-like text ---------------------------------------------------------

VERBS = [
    "Write",
    "Compose",
    "Create",
    "Draft",
    "Generate",
    "Produce",
    "Design",
    "Outline",
    "Prepare",
    "Sketch",
    "Develop",
    "Craft",
    "Put together",
    "Come up with",
    "Invent",
]
VERBS_L = [
    "explain",
    "describe",
    "identify",
    "summarize",
    "list",
    "analyze",
    "evaluate",
    "compare",
    "discuss",
    "illustrate",
    "predict",
    "justify",
    "classify",
    "rank",
    "estimate",
    "extract",
    "highlight",
]
FORMS = [
    "poem",
    "story",
    "essay",
    "haiku",
    "limerick",
    "tweet",
    "blog post",
    "dialogue",
    "speech",
    "letter",
    "product description",
    "news headline",
    "riddle",
    "recipe",
    "cover letter",
    "slogan",
    "lesson plan",
    "short film script",
    "song chorus",
    "press release",
    "quiz",
    "FAQ section",
    "travel itinerary",
]
ADJS = [
    "short",
    "funny",
    "formal",
    "persuasive",
    "detailed",
    "concise",
    "creative",
    "friendly",
    "dramatic",
    "technical",
    "simple",
    "inspiring",
    "sarcastic",
    "balanced",
    "vivid",
    "catchy",
    "polite",
    "rhyming",
]
TOPIC_ADJS = [
    "renewable",
    "ancient",
    "modern",
    "urban",
    "digital",
    "quantum",
    "medieval",
    "tropical",
    "arctic",
    "financial",
    "social",
    "political",
    "economic",
    "cultural",
    "genetic",
    "artificial",
    "local",
    "global",
    "industrial",
    "marine",
    "solar",
    "remote",
    "public",
    "private",
    "domestic",
    "organic",
    "historical",
    "volcanic",
    "agricultural",
    "electric",
]
TOPIC_NOUNS = [
    "energy",
    "history",
    "architecture",
    "transport",
    "privacy",
    "computing",
    "medicine",
    "farming",
    "education",
    "music",
    "cooking",
    "forests",
    "oceans",
    "elections",
    "markets",
    "languages",
    "migration",
    "festivals",
    "sports",
    "painting",
    "mathematics",
    "astronomy",
    "chemistry",
    "insurance",
    "banking",
    "tourism",
    "fashion",
    "poetry",
    "robotics",
    "vaccines",
    "bridges",
    "railways",
    "deserts",
    "glaciers",
    "volcanoes",
    "rivers",
    "cities",
    "villages",
    "networks",
    "software",
    "hardware",
    "startups",
    "charities",
    "museums",
    "libraries",
    "gardens",
    "insects",
    "birds",
    "whales",
    "coffee",
    "tea",
    "chocolate",
    "bread",
    "cheese",
    "wine",
    "textiles",
    "pottery",
    "photography",
    "cinema",
    "theatre",
    "lighthouses",
    "submarines",
    "satellites",
    "telescopes",
    "microchips",
    "batteries",
    "windmills",
    "canals",
    "castles",
    "temples",
    "pyramids",
    "mountains",
    "islands",
    "wetlands",
    "coral reefs",
    "rainforests",
    "earthquakes",
    "hurricanes",
    "pandemics",
    "antibiotics",
    "nutrition",
    "diabetes",
    "sleep",
    "memory",
    "emotions",
    "friendship",
    "leadership",
    "negotiation",
    "taxation",
    "inflation",
    "unemployment",
    "housing",
    "recycling",
    "plastics",
    "fertilizers",
    "pesticides",
    "bees",
    "wolves",
    "elephants",
    "dinosaurs",
    "fossils",
    "mushrooms",
    "spices",
    "rice",
    "olives",
    "honey",
    "jazz",
    "opera",
    "ballet",
    "sculpture",
    "calligraphy",
    "chess",
    "football",
    "cycling",
    "sailing",
    "mountaineering",
    "journalism",
    "advertising",
    "encryption",
    "databases",
    "compilers",
    "algorithms",
    "spreadsheets",
    "podcasts",
]
PLACES = [
    "Kenya",
    "Peru",
    "Norway",
    "Vietnam",
    "Canada",
    "Egypt",
    "Brazil",
    "India",
    "Japan",
    "Mexico",
    "Iceland",
    "Morocco",
    "Chile",
    "Finland",
    "Greece",
    "Nepal",
    "Ghana",
    "Portugal",
    "Mongolia",
    "New Zealand",
    "the Alps",
    "the Sahara",
    "the Amazon",
    "Siberia",
    "Patagonia",
    "Bavaria",
    "Texas",
    "Scotland",
    "Bali",
    "the Andes",
    "small towns",
    "big cities",
    "the 19th century",
    "the Middle Ages",
]
AUDIENCES = [
    "child",
    "teenager",
    "retiree",
    "beginner",
    "expert",
    "student",
    "teacher",
    "tourist",
    "manager",
    "nurse",
    "farmer",
    "programmer",
    "journalist",
    "scientist",
    "parent",
    "customer",
]
INPUTS = [
    "sentence",
    "paragraph",
    "text",
    "passage",
    "email",
    "review",
    "tweet",
    "article",
    "list of words",
    "code snippet",
    "table",
    "conversation",
    "product review",
    "news article",
    "statement",
]
WHATS = [
    "main idea",
    "key points",
    "tone",
    "author's opinion",
    "most important fact",
    "logical fallacy",
    "grammatical errors",
    "named entities",
    "sentiment",
    "underlying assumption",
    "strongest argument",
]
PLURALS = [
    "tips",
    "examples",
    "ideas",
    "questions",
    "reasons",
    "facts",
    "benefits",
    "risks",
    "steps",
    "strategies",
    "mistakes",
    "arguments",
    "names",
    "titles",
    "slogans",
    "challenges",
]
GOALS = [
    "save money",
    "learn a new language",
    "reduce stress",
    "improve sleep",
    "grow tomatoes",
    "write better emails",
    "prepare for an interview",
    "train a puppy",
    "run a marathon",
    "organize a closet",
    "start a podcast",
    "plan a wedding",
    "fix a leaking tap",
    "speak in public",
]
LABELS = [
    ("positive", "negative"),
    ("true", "false"),
    ("fact", "opinion"),
    ("formal", "informal"),
    ("spam", "not spam"),
    ("question", "statement"),
    ("sarcastic", "sincere"),
]
LANGS = ["French", "Spanish", "German", "Chinese", "Japanese", "Italian", "Portuguese", "Korean"]
NUMS = ["two", "three", "four", "five", "6", "7", "10", "a few", "several"]

TEMPLATES = [
    "{verb} a {adj} {form} about {topic}.",
    "{verb} a {form} for a {audience} describing {topic}.",
    "{verb} {num} {plural} related to {topic}.",
    "Explain the difference between {topic} and {topic2}.",
    "Given the following {input}, {verb_l} the {what}.",
    "Can you {verb_l} a {adj} {form} that teaches a {audience} about {topic}?",
    "Classify the following {input} about {topic} as {label1} or {label2}.",
    "Summarize the {input} about {topic} below in {num} sentences.",
    "List {num} ways to {goal} in {place}.",
    "How would you {goal} if you were a {audience} in {place}?",
    "Describe how {topic} affects {topic2} in {num} sentences.",
    "Translate the {input} about {topic} into {lang}.",
    "Rewrite the {input} about {topic} to make it more {adj}.",
    "Find the {what} in the given {input} on {topic}.",
    "What are the main {plural} of {topic}?",
    "Suggest {num} {adj} {plural} for a {audience} interested in {topic}.",
    "Compare {topic} with {topic2} and {verb_l} the {what}.",
    "Give {num} {plural} a {audience} should know before trying to {goal}.",
    "{verb} a {adj} {form} in which a {audience} tries to {goal}.",
    "Please {verb_l} the role of {topic} in {topic2}.",
    "Is the following {input} {label1} or {label2}? Answer with one word.",
    "Tell me {num} surprising {plural} about {topic}.",
]
SYNONYMS = {
    "write": "compose",
    "short": "brief",
    "explain": "describe",
    "list": "name",
    "give": "provide",
    "main": "key",
    "following": "given",
    "describe": "explain",
    "ways": "methods",
    "tips": "suggestions",
    "funny": "humorous",
    "create": "make",
    "about": "on",
    "three": "3",
    "five": "5",
    "make": "render",
}
FILLERS = ["please", "briefly", "also", "now", "then", "really", "new", "simple", "interesting"]


def _topic(rng: random.Random) -> str:
    adj, noun, noun2 = rng.choice(TOPIC_ADJS), rng.choice(TOPIC_NOUNS), rng.choice(TOPIC_NOUNS)
    place = rng.choice(PLACES)
    return rng.choice(
        [
            f"{adj} {noun}",
            f"{noun} in {place}",
            f"{adj} {noun} and {noun2}",
            f"{noun2} and {noun}",
            f"the {noun} of {place}",
            f"{adj} {noun} in {place}",
        ]
    )


def fresh_instruction(rng: random.Random) -> str:
    """A new instruction from a random template with random slots."""
    label1, label2 = rng.choice(LABELS)
    return rng.choice(TEMPLATES).format(
        verb=rng.choice(VERBS),
        verb_l=rng.choice(VERBS_L),
        form=rng.choice(FORMS),
        adj=rng.choice(ADJS),
        topic=_topic(rng),
        topic2=_topic(rng),
        audience=rng.choice(AUDIENCES),
        input=rng.choice(INPUTS),
        what=rng.choice(WHATS),
        plural=rng.choice(PLURALS),
        goal=rng.choice(GOALS),
        lang=rng.choice(LANGS),
        num=rng.choice(NUMS),
        place=rng.choice(PLACES),
        label1=label1,
        label2=label2,
    )


def near_duplicate(text: str, rng: random.Random) -> str:
    """`text` after 1-5 small edits (synonym, deletion, insertion, swap, casing, punctuation)."""
    words = text.split()
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4, 5])):
        op = rng.randrange(6)
        i = rng.randrange(len(words))
        if op == 0:
            bare = words[i].strip(".,?!").lower()
            words[i] = SYNONYMS.get(bare, rng.choice(FILLERS))
        elif op == 1 and len(words) > 4:
            del words[i]
        elif op == 2:
            words.insert(i, rng.choice(FILLERS))
        elif op == 3 and i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
        elif op == 4:
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i].lower()
        else:
            words[-1] = words[-1].rstrip(".?!") + rng.choice([".", "!", "?", "", " :)"])
    return " ".join(words)


def instruction_stream(n: int, seed: int, earlier: list[str] | None = None, dup_rate: float = 0.3) -> list[str]:
    """`n` instructions, about `dup_rate` of them near-duplicates of an earlier one (or of `earlier`)."""
    rng = random.Random(seed)
    out: list[str] = []
    base = list(earlier or [])
    for _ in range(n):
        if (out or base) and rng.random() < dup_rate:
            source = rng.choice(out) if out and (not base or rng.random() < 0.8) else rng.choice(base)
            out.append(near_duplicate(source, rng))
        else:
            out.append(fresh_instruction(rng))
    return out


# --- the contenders ----------------------------------------------------------------------------------------


def run_ours(seeds: list[str], candidates: list[str]) -> dict:
    """Self-Instruct's loop over RougePool; returns kept indices, top-10 scores, pool sizes, and time."""
    start, cpu = time.perf_counter(), time.process_time()
    pool = RougePool(seeds)
    kept, top10, pool_sizes = [], {}, []
    for i, text in enumerate(candidates):
        pool_sizes.append(len(pool))
        if pool.is_near_duplicate(text, THRESHOLD):
            continue
        top10[i] = [score for _, score in pool.top_k(text, 10)]
        pool.add(text)
        kept.append(i)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
        "kept": kept,
        "top10": top10,
        "pool_sizes": pool_sizes,
    }


def run_classic(seeds: list[str], candidates: list[str], budget_s: float, processes: int = 0) -> dict:
    """stanford_alpaca's loop with rouge_score, until `budget_s` seconds are spent; per-candidate times."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    all_tokens = [scorer._tokenizer.tokenize(s) for s in seeds]
    kept, top10, seconds, pool_sizes = [], {}, [], []
    start, cpu = time.perf_counter(), time.process_time()
    for i, text in enumerate(candidates):
        if time.perf_counter() - start > budget_s:
            break
        t0 = time.perf_counter()
        new_tokens = scorer._tokenizer.tokenize(text)
        if processes:
            with Pool(processes) as p:  # as alpaca does: a fresh Pool per candidate
                scores = p.map(partial(rouge_scorer._score_lcs, new_tokens), all_tokens)
        else:
            scores = [rouge_scorer._score_lcs(new_tokens, t) for t in all_tokens]
        scores = [s.fmeasure for s in scores]
        most_similar = [scores[j] for j in np.argsort(scores)[-10:][::-1]]
        pool_sizes.append(len(all_tokens))
        if max(scores) < THRESHOLD:
            top10[i] = most_similar
            kept.append(i)
            all_tokens.append(new_tokens)
        seconds.append(time.perf_counter() - t0)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
        "done": len(seconds),
        "kept": kept,
        "top10": top10,
        "per_candidate": seconds,
        "pool_sizes": pool_sizes,
    }


def fit(classic: dict, slope: float | None = None) -> tuple[float, float]:
    """(a, b) in seconds = a + b*pool_size per candidate, from the candidates a classic run did.

    Single process: a = 0 and b = total seconds / total pairs scored; all its work is per pair, and a
    ratio is steadier than a regression slope when other processes load the machine unevenly.
    With a Pool: b is given (the single-process b / processes, i.e. perfect parallelism, which is
    generous to it) and a, the Pool's start-up per candidate, is the mean of what b leaves unexplained.
    """
    x = np.array(classic["pool_sizes"], float)
    y = np.array(classic["per_candidate"])
    if slope is None:
        return 0.0, float(y.sum() / max(x.sum(), 1.0))
    return float(max(np.mean(y - slope * x), 0.0)), slope


def extrapolate(a: float, b: float, full_pool_sizes: list[int]) -> float:
    """Full-run seconds: the fitted per-candidate time summed over the pool sizes of the full run."""
    return float(sum(max(a + b * s, 0.0) for s in full_pool_sizes))


def check_same(ours: dict, classic: dict) -> None:
    """Kept sets on the classic prefix are identical, and so are the top-10 score lists of kept items."""
    done = classic["done"]
    ours_kept = [i for i in ours["kept"] if i < done]
    assert ours_kept == classic["kept"], "kept sets differ"
    for i in classic["kept"]:
        assert np.allclose(sorted(ours["top10"][i]), sorted(classic["top10"][i]), rtol=0, atol=1e-12), i


def scaling(sizes: list[int], queries: int, seed: int) -> list[dict]:
    """Ours alone: build a pool of each size, then time each query kind per query."""
    rows = []
    texts = instruction_stream(max(sizes), seed)
    probes = instruction_stream(queries, seed + 1, earlier=texts)
    for size in sizes:
        t0 = time.perf_counter()
        pool = RougePool(texts[:size])
        build = time.perf_counter() - t0
        row = {"pool": size, "build_s": build}
        for name, fn in [
            ("is_near_duplicate", lambda q: pool.is_near_duplicate(q, THRESHOLD)),
            ("find_duplicate", lambda q: pool.find_duplicate(q, THRESHOLD)),
            ("top_k10", lambda q: pool.top_k(q, 10)),
        ]:
            t0 = time.perf_counter()
            for q in probes:
                fn(q)
            row[f"{name}_ms"] = (time.perf_counter() - t0) / len(probes) * 1e3
        t0 = time.perf_counter()
        kept, _ = greedy_dedup(texts[:size], THRESHOLD)
        row["greedy_dedup_s"] = time.perf_counter() - t0
        row["greedy_dedup_kept"] = len(kept)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=175)
    parser.add_argument(
        "--classic-budget", type=float, default=120.0, help="seconds for the single-process classic run (0 skips)"
    )
    parser.add_argument(
        "--pool-budget",
        type=float,
        default=45.0,
        help="seconds for the classic run with a multiprocessing.Pool per candidate (0 skips)",
    )
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--sizes", default="1000,5000,20000,50000", help="pool sizes for the scaling table")
    parser.add_argument("--queries", type=int, default=300, help="queries per pool size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)

    seeds = instruction_stream(args.seeds, args.seed, dup_rate=0.0)
    candidates = instruction_stream(args.candidates, args.seed + 1, earlier=seeds)

    ours = run_ours(seeds, candidates)
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg(),
        },
        "workload": {
            "seeds": len(seeds),
            "candidates": len(candidates),
            "threshold": THRESHOLD,
            "kept": len(ours["kept"]),
            "pairs_full_run": sum(ours["pool_sizes"]),
        },
        "ours_s": ours["seconds"],
        "ours_cpu_s": ours["cpu_s"],
    }
    lines = [
        "| method | candidates run | kept | seconds (measured) | seconds, full run | speed-up |",
        "|---|---|---|---|---|---|",
        f"| datagen RougePool | {len(candidates)} | {len(ours['kept'])} | {ours['seconds']:.2f} | "
        f"{ours['seconds']:.2f} | 1× |",
    ]
    single_slope = 0.0  # per-pair seconds of the single-process run
    cpu_line = ""
    for name, budget, processes in [
        ("classic (rouge_score, alpaca loop)", args.classic_budget, 0),
        (f"classic + Pool({args.processes}) per candidate", args.pool_budget, args.processes),
    ]:
        if budget <= 0:
            continue
        classic = run_classic(seeds, candidates, budget, processes)
        check_same(ours, classic)
        complete = classic["done"] == len(candidates)
        a, b = fit(classic, single_slope / processes if processes and single_slope else None)
        single_slope = single_slope or b
        full = classic["seconds"] if complete else extrapolate(a, b, ours["pool_sizes"])
        key = "classic_pool" if processes else "classic"
        result[key] = {
            "candidates_run": classic["done"],
            "kept": len(classic["kept"]),
            "seconds": classic["seconds"],
            "fit_s_per_candidate": a,
            "fit_s_per_pool_item": b,
            "cpu_s": classic["cpu_s"],
            "full_run_s": full,
            "extrapolated": not complete,
            "speedup": full / ours["seconds"],
            "identical_kept": True,
        }
        if not processes:  # CPU seconds, which other processes' load does not inflate (the Pool's are in children)
            cpu_full = classic["cpu_s"] * sum(ours["pool_sizes"]) / max(sum(classic["pool_sizes"]), 1)
            result[key] |= {"full_run_cpu_s": cpu_full, "speedup_cpu": cpu_full / ours["cpu_s"]}
            cpu_line = (
                f"\nCPU seconds (not inflated by other load): ours {ours['cpu_s']:.2f}, classic "
                f"{classic['cpu_s']:.1f} on {classic['done']} candidates, {cpu_full:.0f} for the full run"
                f"{'' if complete else ' (extrapolated)'}: {cpu_full / ours['cpu_s']:.0f}×."
            )
        note = "" if complete else " (extrapolated)"
        lines.append(
            f"| {name} | {classic['done']} | {len(classic['kept'])} | {classic['seconds']:.1f} | "
            f"{full:.0f}{note} | {full / ours['seconds']:.0f}× |"
        )
    print(
        f"Self-Instruct filter: {len(seeds)} seeds + {len(candidates)} candidates, ROUGE-L >= {THRESHOLD} rejected; "
        f"kept sets identical on every classic prefix.\n"
    )
    print("\n".join(lines))
    print(cpu_line)

    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = scaling(sizes, args.queries, args.seed + 2)
    result["scaling"] = rows
    print(
        f"\nDatagen alone, per query ({args.queries} queries, ~30% near-duplicates); "
        "greedy_dedup over the pool's own texts:\n"
    )
    print("| pool | build s | is_near_duplicate ms | find_duplicate ms | top_k(10) ms | greedy_dedup s (kept) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['pool']:,} | {r['build_s']:.2f} | {r['is_near_duplicate_ms']:.3f} | "
            f"{r['find_duplicate_ms']:.3f} | {r['top_k10_ms']:.3f} | "
            f"{r['greedy_dedup_s']:.2f} ({r['greedy_dedup_kept']:,}) |"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
