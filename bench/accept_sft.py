"""Acceptance check for the trainer: LoRA on the embedded SmolLM2-135M, on CPU, must make it fit a toy set.

    python bench/accept_sft.py                        # ~30 steps; minutes on 2 CPU cores (hence not a test)
    python bench/accept_sft.py --steps 30 --records 64 --out outputs/accept-sft --json accept.json

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

PROJECTS = ("Amber Birch Cedar Delta Ember Falcon Garnet Harbor Indigo Juniper Kestrel Lotus Maple Nebula Onyx Pebble "
            "Quartz Raven Saffron Tundra Umber Violet Willow Xenon Yarrow Zephyr Aspen Basil Cobalt Dune Echo Fern "
            "Glacier Hazel Iris Jade Koala Lilac Meadow Nimbus Orchid Prairie Quill Ripple Sierra Thistle Urchin "
            "Vortex Walnut Yonder Zinnia Acorn Bramble Coral Drift Elm Fjord Grove Heron Isle Jasper Kelp Lark "
            "Moss").split()
CODE_WORDS = ("Lantern Compass Anvil Beacon Cipher Dynamo Ember Fathom Gadget Harpoon Ingot Javelin Kettle Lever "
              "Magnet Nozzle Oracle Piston Quiver Rudder Sextant Trellis Utensil Valve Winch Yoke Zipper").split()


def toy_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n made-up facts in alpaca format; the same n and seed give the same file."""
    rng = random.Random(seed)
    return [{"instruction": f"What is the code name of project {project}?", "input": "",
             "output": f"Project {project} has the code name {rng.choice(CODE_WORDS)}."}
            for project in PROJECTS[:n]]


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

    data = args.out / "toy.jsonl"
    write_jsonl(data, toy_records(args.records))
    cfg = TrainConfig(base=args.base, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                      learning_rate=args.learning_rate, eval_fraction=0.125, max_seq_len=256, warmup_ratio=0.1,
                      save_steps=10_000, resume_from_checkpoint=False)
    started = time.time()
    summary = train(data, args.out / "run", cfg)
    train_wall = time.time() - started
    adapter = summary["adapter"]
    train_set = args.out / "train-sample.jsonl"
    held_out_ids = {json.loads(line)["id"] for line in (args.out / "run" / "eval.jsonl").read_text().splitlines()}
    write_jsonl(train_set, [e for e in read_any(data) if e.id not in held_out_ids][: args.eval_samples])
    started = time.time()
    seen = evaluate(train_set, args.out / "eval-train", EvalConfig(adapter=Path(adapter), max_new_tokens=args.max_new_tokens))
    held = evaluate(args.out / "run" / "eval.jsonl", args.out / "eval-held-out",
                    EvalConfig(adapter=Path(adapter), max_new_tokens=args.max_new_tokens))
    eval_wall = time.time() - started

    result = {
        "steps": summary["global_step"], "records": args.records, "train_rows": summary["train_rows"],
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "steps_per_second": summary["steps_per_second"], "tokens_per_second": summary["tokens_per_second"],
        "train_wall_s": round(train_wall, 1), "eval_wall_s": round(eval_wall, 1), "peak_rss_mb": summary["peak_rss_mb"],
        "eval_loss_before": summary["eval_loss_before"], "eval_loss_after": summary["eval_loss_after"],
        "train_records_rougeL_f": [seen["base"]["rougeL"]["fmeasure"], seen["tuned"]["rougeL"]["fmeasure"]],
        "train_records_loss": [seen["base"]["loss"], seen["tuned"]["loss"]],
        "held_out_rougeL_f": [held["base"]["rougeL"]["fmeasure"], held["tuned"]["rougeL"]["fmeasure"]],
        "held_out_loss": [held["base"]["loss"], held["tuned"]["loss"]],
        "sample": seen_sample(args.out / "eval-train"),
    }
    result["passed"] = bool(result["eval_loss_after"] < result["eval_loss_before"]
                            and result["train_records_rougeL_f"][1] > result["train_records_rougeL_f"][0])
    print(f"| metric | base | tuned |\n|---|---|---|\n"
          f"| held-out eval loss (trainer) | {result['eval_loss_before']:.4f} | {result['eval_loss_after']:.4f} |\n"
          f"| ROUGE-L F, {len(read_any(train_set))} training records | {result['train_records_rougeL_f'][0]:.4f} | "
          f"{result['train_records_rougeL_f'][1]:.4f} |\n"
          f"| reference loss, training records | {result['train_records_loss'][0]:.4f} | {result['train_records_loss'][1]:.4f} |\n"
          f"| ROUGE-L F, {held['samples']} held-out records | {result['held_out_rougeL_f'][0]:.4f} | "
          f"{result['held_out_rougeL_f'][1]:.4f} |\n"
          f"| reference loss, held-out records | {result['held_out_loss'][0]:.4f} | {result['held_out_loss'][1]:.4f} |\n")
    print(f"{result['steps']} steps at {result['steps_per_second']:.3f} steps/s ({result['tokens_per_second']} tokens/s), "
          f"train {result['train_wall_s']} s, eval {result['eval_wall_s']} s, peak RSS {result['peak_rss_mb']} MB")
    print(f"sample: {json.dumps(result['sample'], ensure_ascii=False)}")
    print("PASS" if result["passed"] else "FAIL")
    if args.json:
        write_json(args.json, result)
    sys.exit(0 if result["passed"] else 1)


def seen_sample(folder: Path) -> dict[str, str]:
    first = json.loads((folder / "samples.jsonl").read_text().splitlines()[0])
    return {"reference": first["reference"], "base": first["base"], "tuned": first["tuned"]}


if __name__ == "__main__":
    main()
