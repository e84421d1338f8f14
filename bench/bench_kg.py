"""Benchmark: Self-KG on a synthetic 100k-triple graph: load, index, sample 1,000 items, render them.

    python bench/bench_kg.py                                  # ~10-20 s on 2 cores
    python bench/bench_kg.py --triples 300000 --samples 5000 --out kg.json

The graph is seeded and shaped like a real one: ``--entities`` entities (default 25,000) whose out-degree
follows a Zipf-like law (a few hubs, a long tail), ``--relations`` relations (default 40) used with Zipf
frequencies, a quarter of them single-valued (one tail per head), and 1% duplicate rows and 0.5% self-loops
that the loader must merge or drop. It is written as TSV with a header, then timed:

- load:      ``load_graph`` (parse, clean, dedup, build the networkx MultiDiGraph)
- index:     ``FactIndex`` + ``KGSampler`` construction
- sample:    ``KGSampler.sample(N)`` over all four patterns (least-used-first heaps)
- template:  the whole ``self-kg --mode template`` stage (load, sample, render, grounding check, write)

The requirement is load + sample under 60 s on this machine; the JSON says whether it held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.generate.graph import load_graph  # noqa: E402
from datagen.generate.kg_sampling import FactIndex, KGSampler  # noqa: E402
from datagen.generate.self_kg import SelfKGConfig, generate  # noqa: E402


def write_graph(path: Path, triples: int, entities: int, relations: int, seed: int) -> dict[str, int]:
    """A seeded synthetic KG as TSV; returns what was planted (duplicates, self-loops)."""
    rng = random.Random(seed)
    names = [f"entity_{i:06d}" for i in range(entities)]
    rel_names = [f"relation_{i:02d}" for i in range(relations)]
    rel_weights = [1 / (i + 1) for i in range(relations)]
    head_weights = [1 / (i + 1) ** 0.8 for i in range(entities)]
    single = set(rel_names[::4])
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    heads = rng.choices(names, weights=head_weights, k=triples * 2)
    rels = rng.choices(rel_names, weights=rel_weights, k=triples * 2)
    for head, rel in zip(heads, rels):
        if len(rows) >= triples:
            break
        if rel in single and (head, rel) in seen:
            continue
        seen.add((head, rel))
        rows.append((head, rel, names[rng.randrange(entities)]))
    duplicates = rng.sample(rows, len(rows) // 100)
    loops = [(h, rng.choice(rel_names), h) for h in rng.sample(names, len(rows) // 200)]
    everything = rows + duplicates + loops
    rng.shuffle(everything)
    with path.open("w", encoding="utf-8") as handle:
        handle.write("head\trelation\ttail\n")
        handle.writelines(f"{h}\t{r}\t{t}\n" for h, r, t in everything)
    return {"rows": len(everything), "planted_duplicates": len(duplicates), "planted_self_loops": len(loops)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triples", type=int, default=100_000)
    parser.add_argument("--entities", type=int, default=25_000)
    parser.add_argument("--relations", type=int, default=40)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.tsv"
        planted = write_graph(path, args.triples, args.entities, args.relations, args.seed)

        started = time.perf_counter()
        G = load_graph(path)
        load_s = time.perf_counter() - started

        started = time.perf_counter()
        index = FactIndex(G)
        sampler = KGSampler(G, seed=args.seed, index=index)
        index_s = time.perf_counter() - started

        started = time.perf_counter()
        samples = sampler.sample(args.samples)
        sample_s = time.perf_counter() - started
        coverage = sampler.coverage()

        started = time.perf_counter()
        stats = asyncio.run(
            generate(SelfKGConfig(graph=path, out=Path(tmp) / "out", num=args.samples, seed=args.seed))
        )
        template_s = time.perf_counter() - started

    result = {
        "benchmark": "self-kg graph load + sampling",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "graph": {
            **planted,
            **{
                k: G.graph["stats"][k]
                for k in ("triples", "entities", "relations", "duplicates_merged", "self_loops_dropped")
            },
        },
        "samples": {"requested": args.samples, "drawn": len(samples), "by_pattern": coverage["by_pattern"]},
        "coverage": {k: coverage[k]["share"] for k in ("entities", "relations", "triples")},
        "seconds": {
            "load": round(load_s, 3),
            "index": round(index_s, 3),
            "sample": round(sample_s, 3),
            "load_plus_sample": round(load_s + index_s + sample_s, 3),
            "template_stage_end_to_end": round(template_s, 3),
        },
        "template_stage": {
            "kept": stats["kept"],
            "rejected": stats["rejected"],
            "rejects_by_reason": stats["rejects_by_reason"],
        },
        "requirement": {"load_plus_sample_under_s": 60, "met": load_s + index_s + sample_s < 60},
    }
    result["markdown"] = (
        f"{result['graph']['triples']:,} triples ({result['graph']['entities']:,} entities, "
        f"{result['graph']['relations']} relations): load {load_s:.1f} s + index {index_s:.1f} s + sample "
        f"{len(samples):,} items {sample_s:.1f} s = **{load_s + index_s + sample_s:.1f} s** (requirement: < 60 s); "
        f"the whole template-mode stage {template_s:.1f} s."
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
