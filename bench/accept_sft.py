"""Acceptance check for the trainer: LoRA on the embedded SmolLM2-135M, on CPU, must make it fit a toy set.

    python bench/accept_sft.py                        # ~1.5 min on 2 idle CPU cores (16 min on a busy one)
    python bench/accept_sft.py --steps 30 --records 64 --out outputs/accept-sft --json accept.json

The slow test ``tests/train/test_eval_merge.py::test_acceptance_lora_on_smollm2_fits_a_toy_set`` runs the same.

What it does, through the same functions ``datagen train`` and ``datagen eval`` call:

1. writes a memorisable toy set: 64 made-up facts ("What is the code name of project Amber?" ->
   "Project Amber has the code name Lantern."), which the base model cannot know;
2. trains a LoRA adapter (r=16, all-linear) for --steps optimizer steps, holding 1/8 of the records out;
3. scores base and tuned model (greedy) on --eval-samples training records (memorisation) and on the
   held-out records (the answer format generalises, the made-up words cannot).

It passes when the held-out eval loss goes down and the tuned model's ROUGE-L F on the training records is
above the base model's. Prints a markdown table and writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from datagen.formats import read_any  # noqa: E402
from datagen.records import write_json, write_jsonl  # noqa: E402
from datagen.train.config import TrainConfig  # noqa: E402
from datagen.train.evaluate import EvalConfig, evaluate  # noqa: E402
from datagen.train.sft import train  # noqa: E402

PROJECTS = (
    "Amber Birch Cedar Delta Ember Falcon Garnet Harbor Indigo Juniper Kestrel Lotus Maple Nebula Onyx Pebble "
    "Quartz Raven Saffron Tundra Umber Violet Willow Xenon Yarrow Zephyr Aspen Basil Cobalt Dune Echo Fern "
    "Glacier Hazel Iris Jade Koala Lilac Meadow Nimbus Orchid Prairie Quill Ripple Sierra Thistle Urchin "
    "Vortex Walnut Yonder Zinnia Acorn Bramble Coral Drift Elm Fjord Grove Heron Isle Jasper Kelp Lark "
    "Moss"
).split()
CODE_WORDS = (
    "Lantern Compass Anvil Beacon Cipher Dynamo Ember Fathom Gadget Harpoon Ingot Javelin Kettle Lever "
    "Magnet Nozzle Oracle Piston Quiver Rudder Sextant Trellis Utensil Valve Winch Yoke Zipper"
).split()


def toy_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n made-up facts in alpaca format; the same n and seed give the same file."""
    rng = random.Random(seed)
    return [
        {
            "instruction": f"What is the code name of project {project}?",
            "input": "",
            "output": f"Project {project} has the code name {rng.choice(CODE_WORDS)}.",
        }
        for project in PROJECTS[:n]
    ]


def run_acceptance(
    out: Path,
    steps: int = 30,
    records: int = 64,
    batch_size: int = 4,
    learning_rate: float = 1e-3,
    eval_samples: int = 16,
    max_new_tokens: int = 20,
    base: str = "embedded",
    held_out: bool = True,
) -> dict:
    """Train and evaluate as described above (``held_out=False`` skips generating on the held-out records)."""
    data = out / "toy.jsonl"
    write_jsonl(data, toy_records(records))
    cfg = TrainConfig(
        base=base,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        eval_fraction=0.125,
        max_seq_len=256,
        warmup_ratio=0.1,
        save_steps=10_000,
        resume_from_checkpoint=False,
    )
    started = time.time()
    summary = train(data, out / "run", cfg)
    train_wall = time.time() - started
    adapter = Path(summary["adapter"])
    held_out_ids = {e.id for e in read_any(out / "run" / "eval.jsonl")}
    train_set = out / "train-sample.jsonl"
    write_jsonl(train_set, [e for e in read_any(data) if e.id not in held_out_ids][:eval_samples])
    started = time.time()
    seen = evaluate(train_set, out / "eval-train", EvalConfig(adapter=adapter, max_new_tokens=max_new_tokens))
    held = (
        evaluate(
            out / "run" / "eval.jsonl",
            out / "eval-held-out",
            EvalConfig(adapter=adapter, max_new_tokens=max_new_tokens),
        )
        if held_out
        else None
    )
    first = json.loads((out / "eval-train" / "samples.jsonl").read_text().splitlines()[0])
    result = {
        "steps": summary["global_step"],
        "records": records,
        "train_rows": summary["train_rows"],
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "steps_per_second": summary["steps_per_second"],
        "tokens_per_second": summary["tokens_per_second"],
        "train_wall_s": round(train_wall, 1),
        "eval_wall_s": round(time.time() - started, 1),
        "peak_rss_mb": summary["peak_rss_mb"],
        "eval_loss_before": summary["eval_loss_before"],
        "eval_loss_after": summary["eval_loss_after"],
        "train_samples": seen["samples"],
        "train_records_rougeL_f": [seen["base"]["rougeL"]["fmeasure"], seen["tuned"]["rougeL"]["fmeasure"]],
        "train_records_loss": [seen["base"]["loss"], seen["tuned"]["loss"]],
        "sample": {k: first[k] for k in ("reference", "base", "tuned")},
    }
    if held is not None:
        result.update(
            {
                "held_out_samples": held["samples"],
                "held_out_rougeL_f": [held["base"]["rougeL"]["fmeasure"], held["tuned"]["rougeL"]["fmeasure"]],
                "held_out_loss": [held["base"]["loss"], held["tuned"]["loss"]],
            }
        )
    result["passed"] = bool(
        result["eval_loss_after"] < result["eval_loss_before"]
        and result["train_records_rougeL_f"][1] > result["train_records_rougeL_f"][0]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--records", type=int, default=64, choices=range(8, len(PROJECTS) + 1), metavar="N")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--eval-samples", type=int, default=16, help="training records to generate on")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--base", default="embedded")
    parser.add_argument("--out", type=Path, default=Path("outputs/accept-sft"))
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    r = run_acceptance(
        args.out,
        args.steps,
        args.records,
        args.batch_size,
        args.learning_rate,
        args.eval_samples,
        args.max_new_tokens,
        args.base,
    )
    print(
        f"| metric | base | tuned |\n|---|---|---|\n"
        f"| held-out eval loss (trainer) | {r['eval_loss_before']:.4f} | {r['eval_loss_after']:.4f} |\n"
        f"| ROUGE-L F, {r['train_samples']} training records | {r['train_records_rougeL_f'][0]:.4f} | "
        f"{r['train_records_rougeL_f'][1]:.4f} |\n"
        f"| reference loss, training records | {r['train_records_loss'][0]:.4f} | {r['train_records_loss'][1]:.4f} |\n"
        f"| ROUGE-L F, {r['held_out_samples']} held-out records | {r['held_out_rougeL_f'][0]:.4f} | "
        f"{r['held_out_rougeL_f'][1]:.4f} |\n"
        f"| reference loss, held-out records | {r['held_out_loss'][0]:.4f} | {r['held_out_loss'][1]:.4f} |\n"
    )
    print(
        f"{r['steps']} steps at {r['steps_per_second']:.3f} steps/s ({r['tokens_per_second']} tokens/s), "
        f"train {r['train_wall_s']} s, eval {r['eval_wall_s']} s, peak RSS {r['peak_rss_mb']} MB"
    )
    print(f"sample: {json.dumps(r['sample'], ensure_ascii=False)}")
    print("PASS" if r["passed"] else "FAIL")
    if args.json:
        write_json(args.json, r)
    sys.exit(0 if r["passed"] else 1)


if __name__ == "__main__":
    main()
