"""Benchmark: datagen's trainer vs trl's ``SFTTrainer``, LoRA on SmolLM2-135M, without and with packing.

    pip install -e ".[bench]"                        # trl (bench-only dependency)
    python bench/bench_trainer.py                    # 3 repeats x 4 runs x 10 steps
    python bench/bench_trainer.py --steps 20 --batch-size 4 --max-len 512 --out bench-trainer.json
    python bench/bench_trainer.py --smoke           # 2 steps on 8 short records: checks the harness (make bench)

Both sides get the same model, LoRA adapter (same ``to_lora_config``, same seed, so the same initial A
matrices), learning-rate schedule, batch size, maximum length and records: variable-length conversations
(replies of 5-200 words), tokenized once by ``datagen.train.data`` and handed to trl pre-tokenized with our
labels, so both optimise exactly the same tokens. Each run is a fresh subprocess, so peak RSS is its own.

- ours: ``datagen.train.sft.train`` as ``datagen train`` runs it (each batch laid end to end in one row,
  no padding, attention sample by sample (``datagen.train.attention``); with packing, the rows are
  best-fit-decreasing bins of at most --max-len tokens; the LM head and loss only at positions whose next
  token is trained, via a boolean ``logits_to_keep``).
- trl: ``SFTTrainer`` (unpacked: padded batches; packed: its ``bfd`` packing, padding-free batches).

Measured: real (non-padding) tokens per second of training (model loading excluded), peak RSS, and the loss
of every step. Unpacked, both see the same batches in the same order, so their per-step losses must agree
(asserted to --loss-tol); packed, the two packers may build different bins, so only the mean loss is compared.

On a shared 2-core host single runs swung the ratio from 0.9x to 4.8x with other jobs' load, hence the
alternating repeats and per-pair ratios. Numbers: docs/BENCHMARKS.md. With trl's own defaults (bf16 autocast,
gradient checkpointing) trl ran at 1.9 tokens/s (ours: 8.1 in the same period) and its losses drifted from fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the of and a to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part"
).split()


def records(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Conversations of very different lengths: what packing is for."""
    rng = random.Random(seed)
    return [
        {
            "instruction": " ".join(rng.choices(WORDS, k=rng.randint(4, 40))).capitalize() + "?",
            "input": "",
            "output": " ".join(rng.choices(WORDS, k=rng.randint(5, 200))).capitalize() + ".",
        }
        for _ in range(n)
    ]


def config(args: argparse.Namespace, packing: bool):
    from datagen.train.config import TrainConfig

    return TrainConfig(
        base=args.base,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        max_seq_len=args.max_len,
        packing=packing,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        lora_dropout=0.0,
        eval_fraction=0.0,
        logging_steps=1,
        save_steps=100_000,
        resume_from_checkpoint=False,
        seed=args.seed,
    )


# --------------------------------------------------------------------------------------------- workers


def run_ours(args: argparse.Namespace, packing: bool, data: Path, work: Path) -> dict:
    from datagen.train.sft import train

    summary = train(data, work / "ours", config(args, packing))
    curve = json.loads((work / "ours" / "loss_curve.json").read_text())
    return {
        "losses": [p["loss"] for p in curve["train"]],
        "tokens_per_second": summary["tokens_per_second"],
        "train_runtime_s": summary["train_runtime_s"],
        "rows": summary["train_rows"],
    }


def run_trl(args: argparse.Namespace, packing: bool, data: Path, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from datagen.formats import read_any
    from datagen.llm.local import resolve_model_dir
    from datagen.train.config import to_lora_config
    from datagen.train.data import build_rows, resolve_chat_template

    cfg = config(args, packing)
    model_dir = resolve_model_dir(cfg.base)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = resolve_chat_template(tokenizer, None, cfg.fallback_template)
    rows, _ = build_rows(tokenizer, [e.conversation() for e in read_any(data)], template, cfg.max_seq_len)
    torch.manual_seed(cfg.seed)  # as datagen.train.sft._load_model: the same LoRA A matrices
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, to_lora_config(cfg))
    sft_args = SFTConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=0,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=1,
        save_strategy="no",
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=False,
        max_length=cfg.max_seq_len,
        packing=packing,
        packing_strategy="bfd",
        disable_tqdm=True,
        # trl's own defaults differ from ours (and from TrainingArguments'): bf16 autocast and gradient
        # checkpointing. On this CPU they made trl ~4x slower and its losses drift; match our settings.
        bf16=False,
        gradient_checkpointing=False,
    )
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    seen = [0]
    collate = trainer.data_collator

    def counting(features):  # real tokens: packed rows hold no padding before collation
        seen[0] += sum(len(f["input_ids"]) for f in features)
        return collate(features)

    trainer.data_collator = counting
    result = trainer.train()
    runtime = result.metrics["train_runtime"]
    return {
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "tokens_per_second": round(seen[0] / runtime, 1),
        "train_runtime_s": round(runtime, 3),
        "rows": len(trainer.train_dataset),
    }


def worker(args: argparse.Namespace) -> None:
    if not os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data.jsonl"
        from datagen.records import write_jsonl

        write_jsonl(data, records(args.records, args.seed))
        run = run_ours if args.worker == "ours" else run_trl
        started = time.time()
        out = run(args, bool(args.packing), data, work)
    out["wall_s"] = round(time.time() - started, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(out))


# --------------------------------------------------------------------------------------------- driver


def _median_run(runs: list[dict]) -> dict:
    """The run with the median tokens/s (its losses, rows and memory come with it)."""
    return sorted(runs, key=lambda r: r["tokens_per_second"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--base", default="embedded")
    parser.add_argument("--loss-tol", type=float, default=2e-3, help="max |ours - trl| per step, unpacked")
    parser.add_argument("--packed-mean-tol", type=float, default=0.05, help="max relative mean-loss gap, packed")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side and packing mode (median reported)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: 2 steps, 8 records, length 64, 1 repeat")
    parser.add_argument("--worker", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--packing", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.records, args.max_len, args.repeats = 2, 8, 64, 1
    if args.worker:
        return worker(args)

    common = [
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--max-len",
        str(args.max_len),
        "--records",
        str(args.records),
        "--seed",
        str(args.seed),
        "--base",
        args.base,
    ]
    from datagen.llm.local import resolve_model_dir

    resolve_model_dir(args.base)  # convert the GGUF once, outside the timed runs
    # Repeats alternate which side goes first and each ratio is taken within a pair run back to back, so a
    # change in the shared box's load between pairs moves both sides of a ratio, not one of them.
    runs: dict[tuple[str, int], list[dict]] = {(side, p): [] for p in (0, 1) for side in ("ours", "trl")}
    for repeat in range(args.repeats):
        for packing in (0, 1):
            for side in ("ours", "trl") if repeat % 2 == 0 else ("trl", "ours"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", side, "--packing", str(packing), *common],
                    capture_output=True,
                    text=True,
                )
                line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
                if proc.returncode or line is None:
                    sys.exit(f"{side} (packing={packing}) failed:\n{proc.stderr[-4000:]}")
                r = json.loads(line[len("RESULT ") :])
                runs[(side, packing)].append(r)
                print(
                    f"  repeat {repeat + 1} {side:4} packing={packing}: {r['tokens_per_second']} tokens/s, "
                    f"{r['peak_rss_mb']} MB, mean loss {sum(r['losses']) / len(r['losses']):.4f}",
                    file=sys.stderr,
                )
    results = {key: _median_run(value) for key, value in runs.items()}
    pair_ratio = {
        p: statistics.median(
            o["tokens_per_second"] / t["tokens_per_second"] for o, t in zip(runs[("ours", p)], runs[("trl", p)])
        )
        for p in (0, 1)
    }

    checks = {}
    diffs = [abs(a - b) for a, b in zip(results[("ours", 0)]["losses"], results[("trl", 0)]["losses"])]
    checks["unpacked_max_step_loss_diff"] = max(diffs)
    mean = {k: sum(v["losses"]) / len(v["losses"]) for k, v in results.items()}
    checks["packed_mean_loss_rel_diff"] = abs(mean[("ours", 1)] - mean[("trl", 1)]) / mean[("trl", 1)]
    checks["passed"] = bool(
        checks["unpacked_max_step_loss_diff"] <= args.loss_tol
        and checks["packed_mean_loss_rel_diff"] <= args.packed_mean_tol
    )

    lines = [
        "| trainer | packing | rows | tokens/s | peak RSS (MB) | mean loss | first / last step loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for (side, packing), r in results.items():
        lines.append(
            f"| {side} | {'yes' if packing else 'no'} | {r['rows']} | {r['tokens_per_second']} | "
            f"{r['peak_rss_mb']} | {mean[(side, packing)]:.4f} | {r['losses'][0]:.4f} / {r['losses'][-1]:.4f} |"
        )
    for packing in (0, 1):
        ours, trl = results[("ours", packing)], results[("trl", packing)]
        lines.append(
            f"| **ours / trl** | {'yes' if packing else 'no'} | | "
            f"**{pair_ratio[packing]:.2f}x** | "
            f"**{ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x** | | |"
        )
    lines.append(f"\nMedians of {args.repeats} repeats; the ratio is the median of the per-pair ratios.")
    lines.append(
        f"\nunpacked: max per-step |loss(ours) - loss(trl)| = {checks['unpacked_max_step_loss_diff']:.2e} "
        f"(tolerance {args.loss_tol}); packed: mean-loss gap {100 * checks['packed_mean_loss_rel_diff']:.2f}% "
        f"(tolerance {100 * args.packed_mean_tol:.0f}%)"
    )
    print("\n".join(lines))
    print("PASS" if checks["passed"] else "FAIL")
    if args.out:
        from datagen.records import write_json

        write_json(
            args.out,
            {
                "markdown": "\n".join(lines),
                "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "packing", "out")},
                "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
                "runs": [
                    {"trainer": side, "packing": bool(packing), "repeat": i + 1, **r}
                    for (side, packing), rs in runs.items()
                    for i, r in enumerate(rs)
                ],
                "tokens_per_second_ratio": {"unpacked": round(pair_ratio[0], 3), "packed": round(pair_ratio[1], 3)},
                "checks": checks,
            },
        )
    sys.exit(0 if checks["passed"] else 1)


if __name__ == "__main__":
    main()
