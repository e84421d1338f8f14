"""The trainer's configuration: one frozen dataclass, its loader, and its conversions to library objects.

    cfg = load_train_config(Path("train.yaml"), ["lora_r=8", "packing=true"])   # default < YAML < key=value
    to_lora_config(cfg)       # peft.LoraConfig
    to_bnb_config(cfg)        # transformers.BitsAndBytesConfig, or None without QLoRA

Every field is checked in ``__post_init__``; a bad value or an unknown key is a ``ConfigError`` that names
the key (``train.lora_r must be an integer >= 1, got 0``). Loading, key checks and type checks are the
project's shared ones (``datagen.config``), as for every stage.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from datagen.config import apply_overrides, build, check_fields, coerce, load_yaml
from datagen.errors import ConfigError

#: Values of ``assistant_turns``: train every assistant turn of a conversation, or only its last one.
ASSISTANT_TURNS = ("all", "last")
REPORT_TO = ("none", "tensorboard", "wandb")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")


@dataclass(frozen=True)
class TrainConfig:
    """What ``datagen train`` trains and how; the defaults train SmolLM2-135M on a laptop CPU."""

    # -- model
    base: str = "embedded"  # "embedded" (SmolLM2-135M-Instruct), a .gguf file, or an HF model folder
    base_model_id: str | None = (
        None  # the hub id written into adapter_config.json; None: derived (export.base_model_id)
    )
    dtype: str = "auto"  # weights/compute dtype: auto = bfloat16 on a CUDA GPU that supports it, else float32

    # -- data
    max_seq_len: int = 1024  # tokens per row; longer conversations are cut, rows left with nothing to train dropped
    assistant_turns: str = "all"  # "all": train every assistant turn; "last": only the final reply
    chat_template: str | None = (
        None  # None: the tokenizer's own; else a named template (see data.TEMPLATES) or Jinja text
    )
    fallback_template: str = "chatml"  # named template used when the tokenizer has none and chat_template is None
    packing: bool = False  # best-fit-decreasing packing of rows into max_seq_len, position_ids restarting per sample
    eval_fraction: float = 0.1  # share of records held out (seeded) for eval loss; 0 disables evaluation

    # -- LoRA (Hu et al. 2021)
    lora_r: int = 16  # rank of the update matrices
    lora_alpha: int = 32  # scale numerator: the update is scaled by alpha/r (alpha/sqrt(r) with rsLoRA)
    lora_dropout: float = 0.05  # dropout on the LoRA input
    target_modules: str | tuple[str, ...] = "all-linear"  # "all-linear" or module names, e.g. [q_proj, v_proj]
    use_rslora: bool = False  # rank-stabilised scaling alpha/sqrt(r) (Kalajdzievski 2023)
    use_dora: bool = False  # weight-decomposed LoRA (Liu et al. 2024); slower per step

    # -- QLoRA (Dettmers et al. 2023)
    load_in_4bit: bool = False  # quantize the frozen base with bitsandbytes (runs on CPU too, bitsandbytes >= 0.47)
    bnb_4bit_quant_type: str = "nf4"  # "nf4" (NormalFloat4, QLoRA's) or "fp4"
    bnb_4bit_use_double_quant: bool = True  # quantize the quantization constants too (~0.4 bit/param saved)
    bnb_4bit_compute_dtype: str = "auto"  # dtype of the 4-bit matmuls: auto = bfloat16 on capable CUDA, else float32

    # -- optimisation
    learning_rate: float = 2e-4  # peak learning rate (AdamW)
    num_train_epochs: float = 3.0  # passes over the training rows (ignored when max_steps > 0)
    max_steps: int = -1  # optimizer steps; > 0 overrides num_train_epochs
    per_device_train_batch_size: int = 8  # rows per forward pass
    per_device_eval_batch_size: int = 8  # rows per eval forward pass
    gradient_accumulation_steps: int = 1  # forward passes per optimizer step
    lr_scheduler_type: str = "cosine"  # learning-rate schedule after warmup
    warmup_ratio: float = 0.03  # share of the optimizer steps spent warming up linearly from 0
    weight_decay: float = 0.0  # AdamW weight decay on the LoRA weights
    max_grad_norm: float = 1.0  # gradient clipping
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    seed: int = 42  # seeds the split, LoRA init, dropout and data order

    # -- bookkeeping
    logging_steps: int = 1  # log the training loss every N optimizer steps (the loss curve's resolution)
    eval_steps: int = -1  # also evaluate every N steps; -1: every 10% of the steps; 0: only before and after
    save_steps: int = 50  # write a resumable checkpoint every N steps
    save_total_limit: int = 2  # checkpoints kept in OUT/checkpoints
    resume_from_checkpoint: bool | str = "auto"  # auto: resume when OUT holds checkpoints of this same run; true:
    #                       from the latest one (must exist); false: delete OUT/checkpoints, start over; or a folder.
    #                       "latest" is the newest complete one: folders a kill left half-saved are removed
    report_to: str = "none"  # none | tensorboard | wandb (each needs its package installed)

    # -- processes
    nproc: int = 1  # > 1: `datagen train` relaunches itself under torchrun on N processes (gloo on CPU)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(TrainConfig)
        for f in fields(self):  # types too, for configs built in Python rather than loaded
            object.__setattr__(self, f.name, coerce(getattr(self, f.name), hints[f.name], f"train.{f.name}"))
        checks = [
            ("dtype", self.dtype in DTYPES, f"one of {', '.join(DTYPES)}"),
            ("max_seq_len", self.max_seq_len >= 16, "an integer >= 16"),
            ("assistant_turns", self.assistant_turns in ASSISTANT_TURNS, f"one of {', '.join(ASSISTANT_TURNS)}"),
            (
                "chat_template",
                self.chat_template is None or bool(self.chat_template.strip()),
                "a template name, Jinja text, or null",
            ),
            ("eval_fraction", 0 <= self.eval_fraction < 1, "in [0, 1)"),
            ("lora_r", self.lora_r >= 1, "an integer >= 1"),
            ("lora_alpha", self.lora_alpha >= 1, "an integer >= 1"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "in [0, 1)"),
            (
                "target_modules",
                bool(self.target_modules) and all(self.target_modules),
                "'all-linear' or a non-empty list of module names",
            ),
            ("bnb_4bit_quant_type", self.bnb_4bit_quant_type in ("nf4", "fp4"), "nf4 or fp4"),
            ("bnb_4bit_compute_dtype", self.bnb_4bit_compute_dtype in DTYPES, f"one of {', '.join(DTYPES)}"),
            ("learning_rate", 0 < self.learning_rate < 1, "in (0, 1)"),
            ("num_train_epochs", self.num_train_epochs > 0, "> 0"),
            ("max_steps", self.max_steps == -1 or self.max_steps >= 1, "-1 (use num_train_epochs) or >= 1"),
            ("per_device_train_batch_size", self.per_device_train_batch_size >= 1, "an integer >= 1"),
            ("per_device_eval_batch_size", self.per_device_eval_batch_size >= 1, "an integer >= 1"),
            ("gradient_accumulation_steps", self.gradient_accumulation_steps >= 1, "an integer >= 1"),
            ("lr_scheduler_type", self.lr_scheduler_type in SCHEDULERS, f"one of {', '.join(SCHEDULERS)}"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("logging_steps", self.logging_steps >= 1, "an integer >= 1"),
            ("eval_steps", self.eval_steps >= -1, "an integer >= 0, or -1 (every 10% of the steps)"),
            ("save_steps", self.save_steps >= 1, "an integer >= 1"),
            ("save_total_limit", self.save_total_limit >= 1, "an integer >= 1"),
            ("resume_from_checkpoint", self.resume_from_checkpoint != "", "auto, true, false or a checkpoint folder"),
            ("report_to", self.report_to in REPORT_TO, f"one of {', '.join(REPORT_TO)}"),
            ("nproc", self.nproc >= 1, "an integer >= 1"),
            ("base_model_id", self.base_model_id is None or bool(self.base_model_id.strip()), "a hub id or null"),
        ]
        check_fields(self, "train.", checks)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as JSON-ready values (written to ``train_config.json``)."""
        out = asdict(self)
        if isinstance(out["target_modules"], tuple):
            out["target_modules"] = list(out["target_modules"])
        return out


# ------------------------------------------------------------------------------------------- loading


def load_train_config(
    path: Path | None = None, overrides: Iterable[str] = (), extra: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Build a TrainConfig: dataclass defaults < YAML file < ``key=value`` overrides < ``extra`` (CLI flags).

    The YAML holds TrainConfig keys at the top level or under ``train:``. Override values are parsed as
    YAML, so ``packing=true``, ``lora_r=8`` and ``target_modules=[q_proj,v_proj]`` get their natural types.

    >>> load_train_config(None, ["lora_r=8", "packing=true"]).lora_r
    8
    """
    values = load_yaml(path) if path is not None else {}
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = dict(values["train"])
    values = apply_overrides(values, overrides)
    values.update({k: v for k, v in (extra or {}).items() if v is not None})
    return build(TrainConfig, values, f"{path}: train" if path is not None else "train")


def adapter_train_config(adapter: Path) -> dict[str, Any]:
    """The ``train_config.json`` saved beside an adapter by ``datagen train`` ({} when there is none)."""
    try:
        return json.loads((Path(adapter) / "train_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------- conversions


def torch_dtype(name: str) -> Any:
    """The torch dtype for a config dtype name; ``auto`` is bfloat16 on a CUDA GPU that supports it, else float32."""
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def to_lora_config(cfg: TrainConfig) -> Any:
    """The ``peft.LoraConfig`` for ``cfg``: rank, alpha, dropout, target modules, rsLoRA, DoRA."""
    from peft import LoraConfig, TaskType

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        bias="none",
    )


def to_bnb_config(cfg: TrainConfig) -> Any:
    """The ``transformers.BitsAndBytesConfig`` for QLoRA (NF4, double quant), or None when ``load_in_4bit`` is off."""
    if not cfg.load_in_4bit:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ConfigError("train.load_in_4bit needs bitsandbytes >= 0.47: pip install bitsandbytes") from exc
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=torch_dtype(cfg.bnb_4bit_compute_dtype),
    )
