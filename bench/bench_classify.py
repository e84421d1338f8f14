"""Benchmark: the classification decision (is a task classification?) against human labels.

    python bench/bench_classify.py                      # the embedded SmolLM2 as the model vote (~2-5 min on 2 cores)
    python bench/bench_classify.py --no-model-vote --out classify.json   # cues + neighbours only (~30 s)

Two measurements, each for the combined decision and for every vote alone (cue where it speaks, neighbours,
model):

- **seeds, leave-one-out**: every labelled seed (seeds/seed_tasks.jsonl + seeds/seed_tasks.zh.jsonl) is
  classified with the other seeds as its neighbours.
- **held-out**: tests/fixtures/classify/heldout.jsonl, tasks written for this (en + zh, ~40% classification)
  and never used as neighbours. Targets: accuracy ≥ 90%, recall on classification tasks ≥ 75%.

Every miss on the held-out set is listed with its evidence.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.generate import classify  # noqa: E402
from datagen.text import detect_lang  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "tests" / "fixtures" / "classify" / "heldout.jsonl"
TARGETS = {"accuracy": 0.90, "recall": 0.75}


async def _model_votes(texts: list[str], base_url: str, style: str) -> list[bool | None]:
    from datagen.llm.client import LLMClient, LLMConfig
    from datagen.llm.endpoint import endpoint

    with endpoint(LLMConfig(base_urls=(base_url,), cache=False)) as cfg:
        async with LLMClient(cfg) as llm:
            return await classify.ask_model(llm, texts, style)


def _votes(texts: list[str], index: classify.NeighbourIndex, models: list[bool | None]) -> list[classify.Decision]:
    return classify.decide(texts, index, models)


def _report(labels: list[bool], texts: list[str], decisions: list[classify.Decision], with_model: bool) -> dict:
    out: dict = {}
    for lang in ("all", "en", "zh"):
        idx = [i for i, t in enumerate(texts) if lang == "all" or detect_lang(t) == lang]
        y = [labels[i] for i in idx]
        part = {
            "combined": classify.agreement(y, [decisions[i].is_classification for i in idx]),
            "cue": classify.agreement(y, [decisions[i].cue for i in idx]),
            "neighbour": classify.agreement(
                y,
                [
                    None if decisions[i].neighbour is None else decisions[i].neighbour >= classify.NEIGHBOUR_CENTRE
                    for i in idx
                ],
            ),
        }
        if with_model:
            part["model"] = classify.agreement(y, [decisions[i].model for i in idx])
        for found in part.values():
            found.pop("confusion", None)
        out[lang] = part
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--model-vote",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask the model (default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--base-url", default="embedded")
    parser.add_argument("--style", default="completion", choices=("completion", "chat"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    started = time.monotonic()
    seeds = classify.labelled_tasks(classify.DEFAULT_NEIGHBOURS)
    heldout = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    index = classify.NeighbourIndex(seeds)
    seed_texts, held_texts = [t for t, _ in seeds], [r["instruction"] for r in heldout]
    models_seeds: list[bool | None] = [None] * len(seeds)
    models_held: list[bool | None] = [None] * len(heldout)
    model_seconds = None
    if args.model_vote:
        t0 = time.monotonic()
        answers = asyncio.run(_model_votes(seed_texts + held_texts, args.base_url, args.style))
        models_seeds, models_held = answers[: len(seeds)], answers[len(seeds) :]
        model_seconds = round(time.monotonic() - t0, 1)
    # The index skips a neighbour equal to the query: classifying the seeds against the seeds is leave-one-out.
    seeds_found = _report([y for _, y in seeds], seed_texts, _votes(seed_texts, index, models_seeds), args.model_vote)
    held_decisions = _votes(held_texts, index, models_held)
    held_labels = [r["is_classification"] for r in heldout]
    held_found = _report(held_labels, held_texts, held_decisions, args.model_vote)
    overall = held_found["all"]["combined"]
    met = {k: (overall[k] or 0) >= v for k, v in TARGETS.items()}
    misses = [
        {"instruction": t, "label": y, **d.evidence(top=1)}
        for t, y, d in zip(held_texts, held_labels, held_decisions)
        if d.is_classification != y
    ]

    def line(name: str, found: dict) -> str:
        return (
            f"| {name} | {found['evaluated']} | {found['accuracy']:.1%} | "
            f"{(found['recall'] or 0):.1%} | {(found['precision'] or 0):.1%} | {found['unanswered']} |"
        )

    md = [
        "Model vote: "
        + (
            f"`{args.base_url}` ({model_seconds} s for {len(seeds) + len(heldout)} prompts)"
            if args.model_vote
            else "off (cues + neighbours only)"
        ),
        "",
        "| set / vote | n | accuracy | recall (clf) | precision (clf) | abstained |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for set_name, found in (("seeds LOO", seeds_found), ("held-out", held_found)):
        for lang in ("all", "en", "zh"):
            for vote, numbers in found[lang].items():
                md.append(line(f"{set_name} {lang} · {vote}", numbers))
    md += [
        "",
        f"Held-out targets (accuracy ≥ {TARGETS['accuracy']:.0%}, recall ≥ {TARGETS['recall']:.0%}): "
        + ("met" if all(met.values()) else "NOT met"),
        "",
    ]
    if misses:
        md += ["Held-out misses:", ""] + [
            f"- {m['instruction']} — label {m['label']}; cue {m['cue']['vote']} ({m['cue']['match']}), neighbours "
            f"{m['neighbour']['score']}, model {m['model']['vote']}"
            for m in misses
        ]
    result = {
        "seeds_loo": seeds_found,
        "heldout": held_found,
        "targets": TARGETS,
        "targets_met": met,
        "misses": misses,
        "model_vote": args.base_url if args.model_vote else None,
        "model_seconds": model_seconds,
        "seconds": round(time.monotonic() - started, 1),
        "markdown": "\n".join(md),
    }
    print(result["markdown"])
    if args.out:
        args.out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
