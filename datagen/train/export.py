"""What makes an adapter or merged model usable outside datagen: a portable base id, a model card, a portable config.

    base_model_id(cfg, model_dir)        # "HuggingFaceTB/SmolLM2-135M-Instruct" for the embedded model
    write_model_card(adapter_dir, cfg, summary)
    portable_config(merged_dir)         # config keys transformers 4.x and 5.x both read

peft writes the folder it loaded the base from as ``base_model_name_or_path``; for the embedded model that is
a converted copy in a local cache, which nobody else has. The adapter names the hub id instead (peft and
transformers resolve it from a local HF cache offline, or download it), and datagen's own metadata
(``train_config.json``, ``train_summary.json``: ``base``, ``base_model_dir``) keeps the local path.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from datagen.records import write_atomic, write_json

log = logging.getLogger("datagen.train")

#: The hub id of the model the embedded GGUF was quantized from (SmolLM2-135M-Instruct, Apache-2.0).
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def base_model_id(cfg: Any, model_dir: Path) -> str:
    """The id others know the base by: ``cfg.base_model_id``, else the embedded model's hub id, a hub-cache
    folder's ``org/name``, an ``org/name`` base, the id in the folder's config, or the folder's name.

    >>> from types import SimpleNamespace as C
    >>> base_model_id(C(base="embedded", base_model_id=None), Path("/tmp/x"))
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> base_model_id(C(base="/h/models--Qwen--Qwen3-0.6B/snapshots/ab12", base_model_id=None),
    ...               Path("/h/models--Qwen--Qwen3-0.6B/snapshots/ab12"))
    'Qwen/Qwen3-0.6B'
    """
    if getattr(cfg, "base_model_id", None):
        return cfg.base_model_id
    if str(cfg.base) == "embedded":
        return EMBEDDED_HUB_ID
    for part in (*Path(str(cfg.base)).parts, *Path(model_dir).parts):
        if m := re.fullmatch(r"models--([^/]+?)--(.+)", part):
            return f"{m.group(1)}/{m.group(2)}"
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(cfg.base)) and not Path(str(cfg.base)).exists():
        return str(cfg.base)
    try:
        named = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8")).get("_name_or_path", "")
    except (OSError, ValueError):
        named = ""
    if re.fullmatch(r"[\w.-]+/[\w.-]+", named or "") and not Path(named).exists():
        return named
    name = Path(str(cfg.base)).name.removesuffix(".gguf")
    log.warning(
        "no hub id known for the base %s: the adapter names it %r; set train.base_model_id=ORG/NAME so "
        "others can load the adapter",
        cfg.base,
        name,
    )
    return name


def write_model_card(adapter_dir: Path, cfg: Any, summary: dict[str, Any]) -> None:
    """README.md with a YAML header the hub reads (base_model, library_name, tags) and what went in and came out."""
    base_id = summary.get("base_model_id") or base_model_id(cfg, Path(summary.get("base_model_dir", ".")))
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base_id  # the id others know, not this machine's folder
    if isinstance(adapter_config.get("target_modules"), list):  # peft writes a set in hash order: differs per run
        adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    write_json(adapter_dir / "adapter_config.json", adapter_config)

    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))

    settings = cfg.to_dict()
    keys = (
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "use_rslora",
        "use_dora",
        "load_in_4bit",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_ratio",
        "num_train_epochs",
        "max_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_seq_len",
        "packing",
        "assistant_turns",
        "seed",
    )
    stats = summary.get("data_stats", {})
    lines = [
        "---",
        f"base_model: {base_id}",
        "library_name: peft",
        "pipeline_tag: text-generation",
        "tags:",
        "- lora",
        "- sft",
        "- datagen",
        "---",
        "",
        f"# LoRA adapter for {base_id}",
        "",
        (
            f"Trained by `datagen train` on {summary.get('train_records')} records "
            f"({summary.get('train_rows')} rows, {stats.get('trained_tokens')} trained tokens; data sha256 "
            f"`{summary.get('data_sha256', '')[:16]}`), {summary.get('eval_records')} more held out for evaluation."
        ),
        "",
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        'model = AutoPeftModelForCausalLM.from_pretrained("path/to/this/folder")   # loads the base by its id',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")          # with the training chat template',
        "```",
        "",
        "## Evaluation (held-out records, mean NLL per reply token)",
        "",
        "| | loss | perplexity |",
        "|---|---|---|",
        f"| base | {fmt(summary.get('eval_loss_before'))} | {fmt(summary.get('eval_perplexity_before'))} |",
        f"| tuned | {fmt(summary.get('eval_loss_after'))} | {fmt(summary.get('eval_perplexity_after'))} |",
        "",
        "## Training",
        "",
        f"- base: `{base_id}` (trained from `{cfg.base}`)",
        (
            f"- chat template: {summary.get('chat_template')}; optimizer steps: {fmt(summary.get('global_step'))}; "
            f"processes: {summary.get('world_size', 1)}; global batch: {summary.get('global_batch_size')} rows"
        ),
        f"- final training loss: {fmt(summary.get('train_loss'))}",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {k} | {settings[k]} |" for k in keys if k in settings],
        "",
        (
            "`train_config.json` holds every setting (it is a valid `datagen train --config`), `train_summary.json`"
            " the counts, speed and versions."
        ),
    ]
    if str(cfg.base) == "embedded":
        lines += [
            "",
            (
                "The embedded base is the Q4_1 GGUF of this model, dequantised: the hub weights give "
                "slightly different outputs under this adapter."
            ),
        ]
    write_atomic(adapter_dir / "README.md", "\n".join(lines) + "\n")


def portable_config(model_dir: Path) -> None:
    """Pin the keys transformers 4.x reads beside the ones 5.x writes, so a merged folder loads in both.

    5.x writes ``rope_parameters`` (4.57 reads ``rope_theta`` and ``rope_scaling`` at the top level and
    falls back to 10000 without them: a silently different model), ``dtype`` (4.x: ``torch_dtype``) and
    the tokenizer class ``TokenizersBackend`` (unknown to 4.x; ``PreTrainedTokenizerFast`` loads
    tokenizer.json in both).
    """
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    rope = config.get("rope_parameters")
    if isinstance(rope, dict):
        if "rope_theta" in rope:
            config.setdefault("rope_theta", rope["rope_theta"])
        if rope.get("rope_type", "default") != "default":
            config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    if "dtype" in config:
        config.setdefault("torch_dtype", config["dtype"])
    write_json(path, config)
    tokenizer_path = model_dir / "tokenizer_config.json"
    if tokenizer_path.is_file():
        tok = json.loads(tokenizer_path.read_text(encoding="utf-8"))
        if tok.get("tokenizer_class") in (None, "TokenizersBackend") and (model_dir / "tokenizer.json").is_file():
            tok["tokenizer_class"] = "PreTrainedTokenizerFast"
        if tok.get("extra_special_tokens") == []:  # 4.x expects a mapping here; an empty list means none
            del tok["extra_special_tokens"]
        write_json(tokenizer_path, tok)
