"""A small hand-made run folder (no model, no server) holding every file the report reads.

python -m tests.pipeline.report_run DIR     # writes DIR/report.html from it (what docs/ screenshots show)
"""

from __future__ import annotations

import sys
from pathlib import Path

from datagen.records import Example, write_json, write_jsonl

KEPT = {
    "self-instruct": [
        ("Write a short poem about the sea.", "Waves fold over, grey and slow, / the gulls keep count."),
        ("Classify the sentiment of the review.", "Positive"),
        ("Give me a list of three fruits rich in vitamin C.", "Oranges, kiwis and strawberries."),
        ("请把下面这句话翻译成英文。", "The weather is nice today."),
        ("写一首关于秋天的诗。", "秋风起，落叶黄。"),
    ],
    "self-qa": [
        ("What does the document say photosynthesis produces?", "Glucose and oxygen, from light, water and CO2."),
        ("Explain why leaves change colour in autumn.", "Chlorophyll breaks down and the yellow pigments show."),
    ],
    "self-kg": [
        ("Which family does the rose belong to?", "The rose belongs to Rosaceae."),
        ("列出玫瑰所属的科。", "玫瑰属于蔷薇科。"),
    ],
}
REJECTS = {  # stage -> (reason, rule stage, detail, [(instruction, answer), ...])
    "self_instruct": [
        (
            "unparseable",
            "self-instruct",
            "no 'Input:'/'Output:' block",
            [
                ("Write a haiku about rain.", "Sure! Here is a task for you: ..."),
                ("Sort the numbers.", "Example 1 Example 2"),
            ],
        )
    ],
    "filter": [
        (
            "too_short_output",
            "heuristics",
            "1 word(s) for an open task",
            [
                ("Describe the water cycle.", "Rain."),
                ("Explain how a bill becomes law.", "Congress."),
                ("Outline a plan for learning Spanish.", "Practice."),
                ("Write a story about a fox.", "Fox."),
                ("Describe your ideal weekend.", "Relaxing."),
            ],
        ),
        (
            "copied_label",
            "heuristics",
            "answer copies an in-context label",
            [
                ("Classify the sentiment of this tweet.", "Class label: positive"),
                ("Is the email spam?", "Output: not spam"),
                ("Label the animal.", "Class label: mammal"),
                ("Classify the news topic.", "Class label: sports"),
            ],
        ),
        (
            "rouge_duplicate",
            "rouge",
            {"of": "dg-1234", "rouge_l": 0.82},
            [
                ("Write a short poem about the ocean.", "Blue waves..."),
                ("Give me a list of three citrus fruits.", "Lemons, limes, oranges."),
            ],
        ),
    ],
}


def make_run(run: Path) -> Path:
    """Write the run folder; returns it."""
    curated = [Example(instruction=i, output=o, meta={"method": m}) for m, rows in KEPT.items() for i, o in rows]
    curated.append(
        Example(
            instruction="Plan a weekend trip.",
            output="Day 1: the coast.",
            messages=[
                {"role": "user", "content": "Plan a weekend trip."},
                {"role": "assistant", "content": "Day 1: the coast."},
                {"role": "user", "content": "Make it cheaper."},
                {"role": "assistant", "content": "Take the train and camp."},
            ],
            meta={"method": "self-instruct-multiturn"},
        )
    )
    for stage, method in (
        ("self_instruct", "self-instruct"),
        ("self_instruct_multiturn", "self-instruct-multiturn"),
        ("self_qa", "self-qa"),
        ("self_kg", "self-kg"),
    ):
        write_jsonl(run / stage / "records.jsonl", [r for r in curated if r.meta["method"] == method])
    for stage, rules in REJECTS.items():
        rows = []
        for reason, rule_stage, detail, pairs in rules:
            rows += [
                Example(instruction=i, output=o, reject={"stage": rule_stage, "reason": reason, "detail": detail})
                for i, o in pairs
            ]
        write_jsonl(run / stage / "rejects.jsonl", rows)
    write_json(
        run / "self_instruct" / "stats.json",
        {
            "stage": "self-instruct",
            "target_reached": False,
            "classifier_agreement": {
                "evaluated": 16,
                "agree": 14,
                "rate": 0.875,
                "unparsed": 1,
                "confusion": {"label=True/predicted=True": 6},
            },
            "rejects_by_reason": {"unparseable": 2},
        },
    )
    write_jsonl(run / "filter" / "curated.jsonl", curated)
    by_reason = {reason: len(pairs) for reason, _, _, pairs in REJECTS["filter"]}
    write_json(
        run / "train" / "loss_curve.json",
        {
            "train": [{"step": s, "loss": 3.0 - 0.1 * s} for s in range(1, 11)],
            "eval": [{"step": 0, "eval_loss": 2.9}, {"step": 5, "eval_loss": 2.5}, {"step": 10, "eval_loss": 2.2}],
        },
    )
    write_json(
        run / "eval" / "eval.json",
        {"base": {"rougeL": {"f": 0.16}, "loss": 2.9}, "tuned": {"rougeL": {"f": 0.27}, "loss": 2.2}},
    )
    write_jsonl(
        run / "eval" / "samples.jsonl",
        [
            {
                "id": "e1",
                "prompt": [{"role": "user", "content": "Name a primary colour."}],
                "reference": "Red.",
                "base": "Colours are nice.",
                "tuned": "Red.",
            },
            {
                "id": "e2",
                "prompt": [{"role": "user", "content": "把“你好”翻译成英文。"}],
                "reference": "Hello.",
                "base": "你好",
                "tuned": "Hello.",
            },
        ],
    )
    n_curated = len(curated)
    write_json(
        run / "manifest.json",
        {
            "name": "hand-made",
            "complete": True,
            "seconds": 12.5,
            "config": {
                "self_instruct": {"num_instructions": 20},
                "self_qa": {"max_chunks": 1, "questions_per_chunk": 2},
                "self_kg": {"num": 2},
                "self_instruct_multiturn": {"num_conversations": 1},
                "filter": {},
            },
            "stages": {
                "self_instruct": {
                    "kept": 5,
                    "rejected": 2,
                    "rejects_by_reason": {"unparseable": 2},
                    "llm": {"succeeded": 9, "cached": 0, "failed": 0, "prompt_tokens": 900, "completion_tokens": 300},
                    "seconds": 4.0,
                },
                "self_instruct_multiturn": {"kept": 1, "rejected": 0, "seconds": 1.0},
                "self_qa": {"kept": 2, "rejected": 0, "seconds": 1.0},
                "self_kg": {"kept": 2, "rejected": 0, "seconds": 0.1},
                "filter": {
                    "kept": n_curated,
                    "rejected": sum(by_reason.values()),
                    "rejects_by_reason": by_reason,
                    "seconds": 2.0,
                },
            },
        },
    )
    return run


if __name__ == "__main__":
    from datagen.report import write_report

    print(write_report(make_run(Path(sys.argv[1]))))
