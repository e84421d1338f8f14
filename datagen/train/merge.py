"""Merge a LoRA adapter into its base model: a plain HF model folder any tool can load or serve.

    datagen merge --adapter outputs/sft/adapter --out outputs/sft/merged      # base from the adapter's config
    datagen merge --base embedded --adapter sft/adapter --out merged/ && datagen serve --model merged/

The base is always reloaded in full precision, never in 4 bits: merging into NF4 weights would round the
update away (and a QLoRA adapter is meant for the full-precision base). The folder is written to a temp
dir and renamed, so it is whole or absent.
"""

from __future__ import annotations

import json
from pathlib import Path

from datagen.errors import ConfigError
from datagen.records import atomic_dir
from datagen.train.config import adapter_train_config, torch_dtype
from datagen.train.export import portable_config

#: dtypes a merge may be saved in; float32 is the default (the converted SmolLM2 folder is float32 too).
MERGE_DTYPES = ("float32", "bfloat16", "float16")


def merge(adapter: str | Path, out: str | Path, base: str | None = None, dtype: str = "float32") -> Path:
    """Merge ``adapter`` into ``base`` (default: the base it was trained on) and save model + tokenizer to ``out``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datagen.llm.local import resolve_model_dir

    adapter, out = Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"merge.adapter: {adapter} is not a folder with adapter_config.json")
    if dtype not in MERGE_DTYPES:
        raise ConfigError(f"merge.dtype must be one of {', '.join(MERGE_DTYPES)}, got {dtype!r}")
    base = base or adapter_train_config(adapter).get("base") or "embedded"
    model_dir = resolve_model_dir(base)
    quantization = json.loads((model_dir / "config.json").read_text()).get("quantization_config")
    if quantization:
        raise ConfigError(
            f"merge.base: {base} is a quantized model ({quantization.get('quant_method', 'unknown method')}); "
            "merge into the full-precision base it was quantized from"
        )

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype))
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    has_tokenizer = (adapter / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(
        adapter if has_tokenizer else model_dir
    )  # the adapter's keeps its template

    with atomic_dir(out) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        portable_config(staging)  # loads in transformers 4.x as in 5.x
    return out
