"""LoRA / QLoRA supervised fine-tuning with transformers' ``Trainer`` and peft.

    datagen train --data curated.jsonl --out outputs/sft                     # embedded SmolLM2-135M, CPU
    datagen train --data chat.jsonl --base my-model/ --out sft/ --config train.yaml lora_r=8 packing=true
    datagen train --data curated.jsonl --out sft/ load_in_4bit=true          # QLoRA: NF4 base, also on CPU

Because the loop is ``Trainer``'s, ``accelerate launch`` / ``torchrun`` / DeepSpeed scale it past one device
with no code change. ``OUT`` receives:

    adapter/             the final LoRA adapter + tokenizer + train_config.json (written whole, then renamed)
    checkpoints/         Trainer checkpoints every save_steps; a re-run of the same command resumes from them
    train_config.json    the resolved config (also a valid --config file)
    train_summary.json   data hash, counts, trainable parameters, eval loss before/after, speed; written last
    loss_curve.json/.png training loss per logged step, eval loss before, during and after
    eval.jsonl           the held-out records (``datagen eval --data OUT/eval.jsonl``)

Measured on 2 idle CPU cores: SmolLM2-135M, LoRA r=16 on all-linear, batch 4 x ~55 tokens: 0.63 steps/s
(135 tokens/s; bench/accept_sft.py); against trl's SFTTrainer at equal losses: docs/BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError
from datagen.formats import read_any
from datagen.records import publish_dir, write_atomic, write_json, write_jsonl
from datagen.train import distributed
from datagen.train.config import TrainConfig, to_bnb_config, to_lora_config, torch_dtype
from datagen.train.data import (
    Collator,
    audit_template,
    cached_rows,
    pack_rows,
    records_sha256,
    resolve_chat_template,
    show_labels,
    split_records,
)
from datagen.train.export import base_model_id, write_model_card

log = logging.getLogger("datagen.train")

#: Keys that may change between a killed run and its resumption without making it another run.
_RESUMABLE_CHANGES = {
    "resume_from_checkpoint",
    "report_to",
    "logging_steps",
    "eval_steps",
    "save_steps",
    "save_total_limit",
    "max_steps",
    "num_train_epochs",
    "base_model_id",
}


def train(
    data: str | Path,
    out: str | Path,
    cfg: TrainConfig,
    *,
    debug_labels: int = 0,
    echo: Callable[[str], Any] = print,
    color: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune ``cfg.base`` with a LoRA adapter on the records in ``data``;
    returns ``train_summary.json``'s content."""
    import torch

    from datagen.llm.local import resolve_model_dir

    if cfg.nproc > 1 and distributed.world_size() == 1:
        from datagen.train.launch import launch

        return launch(data, out, cfg, debug_labels=debug_labels)
    out = Path(out)
    started = time.time()
    cuda = torch.cuda.is_available()
    if cfg.load_in_4bit and distributed.world_size() > 1 and not cuda:
        raise ConfigError(
            "train.load_in_4bit on several processes needs CUDA (one GPU per process); "
            "on CPU train QLoRA on one process"
        )
    distributed.init(cpu=not cuda)
    main = distributed.is_main_process()
    if not main:
        logging.getLogger("datagen").setLevel(logging.ERROR)  # one voice: rank 0 reports for every rank
    examples = read_any(data)
    if not examples:
        raise ConfigError(f"{data}: no records to train on")
    train_examples, eval_examples = split_records(examples, cfg.eval_fraction, cfg.seed)
    data_sha = records_sha256(train_examples)
    _check_report_to(cfg.report_to)
    checkpoint = _resume_point(out, cfg, data_sha, remove=main)
    distributed.barrier()

    model_dir = resolve_model_dir(cfg.base)
    if not cuda and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # all cores we may use, not the host's
    tokenizer = _load_tokenizer(model_dir)
    template = resolve_chat_template(tokenizer, cfg.chat_template, cfg.fallback_template)
    train_messages = [e.conversation() for e in train_examples]
    audit = audit_template(tokenizer, train_messages, template) if main else None
    (rows, stats), (eval_rows, eval_stats) = cached_rows(
        out / ".tokenized",
        tokenizer,
        template,
        cfg,
        [train_messages, [e.conversation() for e in eval_examples]],
        write=main,
    )
    if main:
        for row in rows[:debug_labels]:
            echo(show_labels(tokenizer, row, color=sys.stdout.isatty() if color is None else color))
    if stats.all_masked or stats.template_mismatch:
        log.warning(
            "dropped %d of %d training conversations: %d with nothing left to train after truncation to "
            "%d tokens, %d the template renders differently turn by turn",
            stats.all_masked + stats.template_mismatch,
            stats.conversations,
            stats.all_masked,
            cfg.max_seq_len,
            stats.template_mismatch,
        )
    if not rows:
        raise ConfigError(
            f"{data}: no training rows left (all {stats.conversations} conversations dropped; "
            f"raise max_seq_len above {cfg.max_seq_len}?)"
        )
    train_rows = pack_rows(rows, cfg.max_seq_len) if cfg.packing else rows
    eval_rows_fed = pack_rows(eval_rows, cfg.max_seq_len) if cfg.packing and eval_rows else eval_rows

    summary: dict[str, Any] = {
        "status": "running",
        "data": str(data),
        "data_sha256": data_sha,
        "base": cfg.base,
        "base_model_id": base_model_id(cfg, model_dir),
        "base_model_dir": str(model_dir),
        "chat_template": template.name,
        "template_audit": audit,
        "records": len(examples),
        "train_records": len(train_examples),
        "eval_records": len(eval_examples),
        "dropped_rows": stats.all_masked + stats.template_mismatch,
        "data_stats": stats.to_dict(),
        "eval_data_stats": eval_stats.to_dict(),
        "train_rows": len(train_rows),
        "world_size": distributed.world_size(),
        "global_batch_size": cfg.per_device_train_batch_size
        * cfg.gradient_accumulation_steps
        * distributed.world_size(),
    }
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "train_config.json", cfg.to_dict())
        write_jsonl(out / "eval.jsonl", eval_examples)
        write_json(out / "train_summary.json", summary)

    model = _load_model(model_dir, cfg, cuda)
    # 4-bit weights count as their logical size, as peft reports it.
    trainable, total = map(int, model.get_nb_trainable_parameters())
    log.info("trainable parameters: %s of %s (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    collator = Collator(
        pad_id=tokenizer.pad_token_id,
        trained_logits_only=_keeps_logits_by_mask(model),
        padding_free=_segment_attention(model),
    )
    trainer = _make_trainer(model, tokenizer, collator, train_rows, eval_rows_fed, out / "checkpoints", cfg, cuda)

    before = trainer.evaluate() if eval_rows_fed else {}
    tokens_before = collator.tokens_seen  # evaluation has a collator of its own: this counts training only
    result = trainer.train(resume_from_checkpoint=checkpoint)
    train_tokens = distributed.all_reduce_sums([collator.tokens_seen - tokens_before], trainer.args.device)[0]
    after = trainer.evaluate() if eval_rows_fed else {}
    runtime = result.metrics.get("train_runtime", 0.0)

    summary.update(
        {
            "status": "done",
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": round(100 * trainable / total, 4),
            "global_step": trainer.state.global_step,
            "resumed_from": checkpoint,
            "train_loss": result.training_loss,
            "eval_loss_before": before.get("eval_loss"),
            "eval_loss_after": after.get("eval_loss"),
            "eval_perplexity_before": before.get("eval_perplexity"),
            "eval_perplexity_after": after.get("eval_perplexity"),
            "eval_tokens": after.get("eval_tokens"),
            "train_runtime_s": round(runtime, 3),
            "steps_per_second": result.metrics.get("train_steps_per_second"),
            "tokens_per_second": round(train_tokens / runtime, 1) if runtime else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,  # this rank's
            "wall_s": round(time.time() - started, 1),
            "versions": _versions(),
            "adapter": str(out / "adapter"),
        }
    )
    curve = _loss_curve(
        trainer.state.log_history, summary["eval_loss_before"], summary["eval_loss_after"], trainer.state.global_step
    )
    if main:
        write_json(out / "loss_curve.json", curve)
        _plot_loss_curve(curve, out / "loss_curve.png")
    tokenizer.chat_template = template.text  # the adapter's tokenizer renders as training did
    _save_adapter(trainer, tokenizer, out / "adapter", cfg, summary, main)
    if main:
        write_json(out / "train_summary.json", summary)  # last: its "done" means the run is complete
    distributed.barrier()
    return summary


# ----------------------------------------------------------------------------------------- model


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of attention and labels alike
    return tokenizer


def _load_model(model_dir: Path, cfg: TrainConfig, cuda: bool) -> Any:
    """The base model (4-bit NF4 for QLoRA) wrapped with a fresh LoRA adapter."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    bnb = to_bnb_config(cfg)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(cfg.dtype)}
    if bnb is not None:
        kwargs["quantization_config"] = bnb
        # bitsandbytes places 4-bit weights at load: on this process's GPU under torchrun/accelerate launch.
        kwargs["device_map"] = {"": f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu"}
    torch.manual_seed(cfg.seed)  # the LoRA A matrices are drawn at get_peft_model
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    # A KV cache in the forward pass disables the packed-sequence mask (masking_utils only derives it
    # without one) and is useless in training.
    model.config.use_cache = False
    _attend_per_sample(model)
    if bnb is not None:
        # Casts the remaining fp16/bf16 parameters (norms, embeddings) to fp32 for stable training; the
        # Trainer, not peft, turns on gradient checkpointing (activation_checkpointing in to_training_args).
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, to_lora_config(cfg))


def _attend_per_sample(model: Any) -> None:
    """Switch ``model`` to ``datagen.train.attention``'s per-sample attention, so batches can go padding-free.

    A batch of rows, packed or not, then travels as one flat row (``Collator(padding_free=True)``): no
    padding token is computed, and no sample's attention spans more than itself. Only from transformers'
    SDPA or eager attention: flash-attention kernels keep their own handling. A model that refuses the switch
    (its own attention code) keeps padded batches and, for packed rows, the dense packed-sequence mask.
    """
    from datagen.train import attention

    current = getattr(model.config, "_attn_implementation", None)
    if current not in ("sdpa", "eager"):
        return
    try:
        model.set_attn_implementation(attention.register())
    except (ValueError, ImportError, AttributeError) as error:
        log.info(
            "training keeps %s attention and padded batches (packed rows: a block-diagonal mask): %s", current, error
        )


def _segment_attention(model: Any) -> bool:
    """Whether ``model`` attends sample by sample inside a row (``_attend_per_sample`` took)."""
    from datagen.train.attention import SEGMENT_ATTENTION

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "_attn_implementation", None) == SEGMENT_ATTENTION


def _keeps_logits_by_mask(model: Any) -> bool:
    """Whether ``model`` takes a boolean (batch, seq) ``logits_to_keep`` and returns the kept logits flattened.

    transformers 5's ``slice_logits_to_keep`` does, for every model built on it; a model with its own forward
    (remote code, older versions) may not, so ask it: one forward of two tokens, without gradients.
    """
    import inspect

    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return False
    device = next(model.parameters()).device
    training = model.training
    model.eval()  # no dropout: the probe must not draw from the RNG that seeds training
    try:
        with torch.no_grad():
            logits = model(
                input_ids=torch.zeros(1, 2, dtype=torch.long, device=device),
                use_cache=False,
                logits_to_keep=torch.tensor([[True, False]], device=device),
            ).logits
        return tuple(logits.shape[:-1]) == (1,)
    except Exception:  # noqa: BLE001 - any failure means "not supported": train with full logits
        return False
    finally:
        model.train(training)


def trained_token_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """transformers' causal-LM loss from logits kept only where the next token is trained (``Collator``'s mask).

    The same positions and targets as ``ForCausalLMLoss`` over the full logits, minus the ones it ignores:
    summed and divided by ``num_items_in_batch`` in training (tokens over all accumulated batches), the mean
    without it (evaluation).
    """
    import torch

    targets = labels[:, 1:]
    targets = targets[targets != -100].to(outputs.logits.device)
    if num_items_in_batch is None:
        return torch.nn.functional.cross_entropy(outputs.logits.float(), targets)
    loss = torch.nn.functional.cross_entropy(outputs.logits.float(), targets, reduction="sum")
    return loss / (num_items_in_batch.to(loss.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch)


def to_training_args(cfg: TrainConfig, output_dir: Path, has_eval: bool, cuda: bool) -> Any:
    """The ``transformers.TrainingArguments`` for ``cfg`` (checkpoints in ``output_dir``)."""
    import torch
    from transformers import TrainingArguments

    bf16 = cuda and torch_dtype(cfg.dtype) == torch.bfloat16
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        activation_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_eval and cfg.eval_steps else "no",
        eval_steps=AUTO_EVAL_RATIO if cfg.eval_steps == -1 else (cfg.eval_steps or None),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        bf16=bf16,
        use_cpu=not cuda,
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,  # rows are plain dicts that already hold exactly the model's inputs
        label_names=["labels"],
        disable_tqdm=not log.isEnabledFor(logging.INFO),
    )


#: ``eval_steps=-1`` (the default) evaluates every this share of the optimizer steps: ten points on the curve.
AUTO_EVAL_RATIO = 0.1


def _make_trainer(
    model: Any,
    tokenizer: Any,
    collator: Collator,
    train_rows: list,
    eval_rows: list,
    checkpoints: Path,
    cfg: TrainConfig,
    cuda: bool,
) -> Any:
    """A ``Trainer`` whose evaluation is ``token_weighted_eval``:
    the same loss at any world size or eval batch size."""
    from transformers import Trainer

    class _Trainer(Trainer):
        def evaluate(
            self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
        ) -> dict[str, float]:
            nll, tokens = token_weighted_eval(
                self, eval_rows, dataclasses.replace(collator, tokens_seen=0), self.args.per_device_eval_batch_size
            )
            loss = nll / tokens if tokens else float("nan")
            metrics = {
                f"{metric_key_prefix}_loss": loss,
                f"{metric_key_prefix}_perplexity": math.exp(min(loss, 700.0)) if tokens else float("nan"),
                f"{metric_key_prefix}_tokens": int(tokens),
            }
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    args = to_training_args(cfg, checkpoints, bool(eval_rows), cuda)
    return _Trainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_rows,
        eval_dataset=eval_rows or None,
        processing_class=tokenizer,
        compute_loss_func=trained_token_loss if collator.trained_logits_only else None,
    )


def token_weighted_eval(trainer: Any, rows: list, collator: Collator, batch_size: int) -> tuple[float, int]:
    """(summed NLL, trained tokens) of ``rows`` over every rank: the eval loss is their ratio.

    ``Trainer.evaluate`` averages per-batch mean losses, so its loss moves with how the eval set is cut
    into batches and shared between ranks (10.74 on one process, 9.94 on two, same model and data). Here
    batch i holds the same rows at any world size (``distributed.shard_batches``), each rank sums its
    tokens' NLL, and the sums are added over ranks in float64.

    DeepSpeed and FSDP runs evaluate through their engines, prepared as ``Trainer.evaluation_loop`` prepares
    them; a rank with fewer batches runs forwards with nothing to score, keeping their collectives in step.
    """
    import torch
    from transformers.integrations.deepspeed import deepspeed_init

    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    if not sharded:
        # Each rank holds the whole model: evaluate it bare. Preparing it here for evaluation (as
        # Trainer.evaluate does) marks it prepared, and a later train() then skips the DDP wrap: every rank
        # would step on its own gradients (measured: 2-process grad norm 1.55 vs 1.46 on one process).
        model = trainer.model
    else:
        if trainer.is_deepspeed_enabled and trainer.deepspeed is None:
            deepspeed_init(trainer, num_training_steps=0, inference=True)
        model = trainer._wrap_model(trainer.model_wrapped, training=False)
        if len(trainer.accelerator._models) == 0 and model is trainer.model:  # as Trainer.evaluation_loop does
            model = trainer.accelerator.prepare(model)
            if trainer.is_fsdp_enabled:
                trainer.model = model
            if model is not trainer.model:
                trainer.model_wrapped = model
            if trainer.is_deepspeed_enabled:
                trainer.deepspeed = trainer.model_wrapped
    training = model.training
    model.eval()
    nll, tokens = 0.0, 0
    device = trainer.args.device
    idle = [{"input_ids": rows[0]["input_ids"][:2], "labels": [-100, -100]}] if rows else []
    try:
        with torch.no_grad():
            for span in distributed.shard_batches(len(rows), batch_size, distributed.world_size(), distributed.rank()):
                batch = collator([rows[i] for i in span] if span is not None else idle)
                batch = {k: v.to(device) for k, v in batch.items()}
                labels = batch.pop("labels")
                with trainer.autocast_smart_context_manager():
                    logits = model(**batch, use_cache=False).logits
                targets = labels[:, 1:]
                if "logits_to_keep" not in batch:
                    logits = logits[:, :-1].reshape(-1, logits.shape[-1])
                    keep = targets.reshape(-1) != -100
                    logits, targets = logits[keep], targets.reshape(-1)[keep]
                else:
                    targets = targets[targets != -100]
                if targets.numel():
                    nll += float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum"))
                    tokens += int(targets.numel())
    finally:
        model.train(training)
    total, count = distributed.all_reduce_sums([nll, tokens], device)
    return total, int(count)


# ----------------------------------------------------------------------------------- resume, save


def _resume_point(out: Path, cfg: TrainConfig, data_sha: str, remove: bool = True) -> str | None:
    """The checkpoint to resume from, per ``cfg.resume_from_checkpoint`` (auto | true | false | a path).

    Every rank decides alike from the same files; only the one with ``remove`` deletes what must go.
    """
    checkpoints = out / "checkpoints"
    choice = cfg.resume_from_checkpoint
    if choice is False:
        if checkpoints.is_dir() and remove:
            log.info("resume_from_checkpoint=false: removing the checkpoints of the previous run in %s", checkpoints)
            shutil.rmtree(checkpoints)
        return None
    if isinstance(choice, str) and choice != "auto":
        problem = _checkpoint_problem(Path(choice))
        if problem:
            raise ConfigError(
                f"train.resume_from_checkpoint: {choice} is not a complete Trainer checkpoint ({problem})"
            )
        return choice
    latest = _last_complete_checkpoint(checkpoints, remove_incomplete=remove)
    if choice is True and latest is None:
        raise ConfigError(f"train.resume_from_checkpoint=true but {checkpoints} holds no complete checkpoint")
    if latest is None:
        return None
    if choice == "auto":
        differences = _run_differences(out, cfg, data_sha)
        if differences:
            raise ConfigError(
                f"{out} holds checkpoints of a different run ({', '.join(differences)} changed); use another --out, "
                "or resume_from_checkpoint=false to start over there"
            )
    log.info("resuming from %s", latest)
    return latest


#: What ``Trainer._load_from_checkpoint`` accepts as model weights (LoRA adapter or full model, maybe sharded).
_WEIGHTS = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a checkpoint a run can resume from, or None if it is one.

    ``Trainer._save_checkpoint`` writes weights, then optimizer and scheduler, then RNG state, and
    trainer_state.json last, none of them atomically: a kill during a save leaves the folder with a prefix of
    those files, the last one possibly torn. So trainer_state.json must parse, and the weights and optimizer
    state it comes after must be there (an FSDP/DeepSpeed run keeps them in sub-folders).
    """
    if not folder.is_dir():
        return "no such folder"
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except OSError:
        return "no trainer_state.json"
    except ValueError:
        return "trainer_state.json is torn"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json has no global_step"
    subfolders = [p.name for p in folder.iterdir() if p.is_dir()]
    if not (
        any((folder / name).is_file() and (folder / name).stat().st_size for name in _WEIGHTS)
        or any(
            "pytorch_model_fsdp" in name or (folder / name / "adapter_model.safetensors").is_file()
            for name in subfolders
        )
    ):
        return "no model or adapter weights"
    if not (
        (folder / "optimizer.pt").is_file()
        or (folder / "optimizer.bin").is_file()
        or any("optimizer" in name or name.startswith("global_step") for name in subfolders)
    ):
        return "no optimizer state"
    return None


def _last_complete_checkpoint(checkpoints: Path, *, remove_incomplete: bool = False) -> str | None:
    """The newest ``checkpoint-N`` folder in ``checkpoints`` that a run can resume from (see ``_checkpoint_problem``).

    With ``remove_incomplete``, folders a kill left half-written are deleted: a resumed run would otherwise
    save its step N into the torn ``checkpoint-N`` (mixing old files with new) and rotation by mtime could
    keep the torn folder over a good one.
    """
    if not checkpoints.is_dir():
        return None
    numbered = sorted(
        (
            (int(m.group(1)), p)
            for p in checkpoints.iterdir()
            if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()
        ),
        reverse=True,
    )
    latest = None
    for _, folder in numbered:
        problem = _checkpoint_problem(folder)
        if problem is None:
            latest = latest or str(folder)
        elif remove_incomplete:
            log.warning(
                "removing the incomplete checkpoint %s (%s): a run was killed while saving it", folder, problem
            )
            shutil.rmtree(folder, ignore_errors=True)  # every rank may try under torchrun
    return latest


def _run_differences(out: Path, cfg: TrainConfig, data_sha: str) -> list[str]:
    """What makes this run differ from the one whose checkpoints lie in ``out``."""
    try:
        previous = json.loads((out / "train_config.json").read_text())
        previous_sha = json.loads((out / "train_summary.json").read_text()).get("data_sha256")
    except (OSError, ValueError):
        return ["train_config.json/train_summary.json missing"]
    now, defaults = cfg.to_dict(), TrainConfig().to_dict()  # a key an older run did not write had its default
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and previous.get(k, defaults[k]) != now[k])
    if previous_sha != data_sha:
        changed.append("training data")
    return changed


def _save_adapter(
    trainer: Any, tokenizer: Any, target: Path, cfg: TrainConfig, summary: dict[str, Any], main: bool
) -> None:
    """Adapter, tokenizer, config and model card into ``target``, which a kill never leaves half-written.

    Every rank calls ``Trainer.save_model`` (FSDP and ZeRO-3 gather the sharded weights there); rank 0 alone
    writes, into a fixed staging folder beside ``target`` that is renamed onto it once whole.
    """
    staging = target.parent / f".{target.name}.staging"
    if main and staging.exists():
        shutil.rmtree(staging)  # ours: a run killed while saving left it
    distributed.barrier()
    trainer.save_model(str(staging))
    if main:
        (staging / "training_args.bin").unlink(
            missing_ok=True
        )  # a pickle of TrainingArguments: train_config.json says it
        tokenizer.save_pretrained(staging)
        write_json(staging / "train_config.json", cfg.to_dict())
        write_json(staging / "train_summary.json", summary)
        write_model_card(staging, cfg, summary)
        publish_dir(staging, target)
    distributed.barrier()


# ------------------------------------------------------------------------------------ reporting


def _loss_curve(
    history: list[dict[str, Any]], before: float | None, after: float | None, last_step: int
) -> dict[str, Any]:
    train = [
        {"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate"), "epoch": h.get("epoch")}
        for h in history
        if "loss" in h
    ]
    # The final evaluate() lands in the history too: at a step where training evaluated already, keep one point.
    by_step = {h["step"]: {"step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h}
    evals = list(by_step.values())
    if before is not None:
        evals = [{"step": 0, "eval_loss": before}] + [e for e in evals if e["step"] != 0]
    if after is not None and not any(e["step"] == last_step for e in evals):
        evals.append({"step": last_step, "eval_loss": after})
    return {"train": train, "eval": evals}


def _plot_loss_curve(curve: dict[str, Any], path: Path) -> None:
    # Figure + the Agg canvas directly: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if curve["train"]:
        axes.plot([p["step"] for p in curve["train"]], [p["loss"] for p in curve["train"]], label="train loss")
    if curve["eval"]:
        axes.plot([p["step"] for p in curve["eval"]], [p["eval_loss"] for p in curve["eval"]], "o-", label="eval loss")
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("loss (nats/token)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png")
    write_atomic(path, png.getvalue())


def _check_report_to(report_to: str) -> None:
    import importlib.util

    needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}.get(report_to, ())
    if needs and not any(importlib.util.find_spec(name) for name in needs):
        raise ConfigError(f"train.report_to={report_to} needs the {needs[0]} package: pip install {needs[0]}")


def _versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for name in ("torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions
