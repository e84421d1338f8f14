"""Hugging Face exports: typed parquet files and a dataset folder other tools load as it is.

The folder ``datagen export RUN out/ds --to hf`` writes is read by all of

    datasets.load_from_disk("out/ds")        # a DatasetDict: dataset_dict.json + train/ (save_to_disk's files)
    datasets.load_dataset("out/ds")          # README.md's YAML ``configs`` names train/data-<digest>.arrow
    LLaMA-Factory (dataset_dir: out/ds)      # dataset_info.json entries datagen_sharegpt / datagen_alpaca

The split lives in ``train/`` because ``load_dataset`` refuses a folder with save_to_disk's ``state.json`` at
its root, and because LLaMA-Factory's ``dataset_info.json`` would otherwise clash with datasets' file of that
name. ``alpaca_data.json`` is LLaMA-Factory's alpaca form (``system`` and ``history`` for conversations);
README.md is a dataset card with a YAML header.

Every column is typed explicitly, so an export with no multi-turn record still has
``messages: list<struct<role, content>>`` (one conversation per row; trl's SFTTrainer reads it),
``is_classification: bool`` and ``lang: string``. ``meta`` becomes a struct whose fields are inferred;
a key whose values have no common Arrow type (a string here, a list there) is stored as JSON text under
``KEY:json`` (``read_any`` decodes it), and
``meta="drop"`` leaves the column out. Both are reported in ``dropped``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from datagen.records import Example, atomic_dir, atomic_file, write_atomic, write_json

ARROW_FILE = "train/data-00000-of-00001.arrow"  # as save_to_disk names it; renamed to train/data-<digest>.arrow
ALPACA_FILE = "alpaca_data.json"
JSON_SUFFIX = ":json"  # a meta key stored as JSON text (values of mixed types); readers decode it


def llama_factory_entries(arrow_file: str) -> dict[str, dict[str, Any]]:
    """LLaMA-Factory's dataset_info.json entries (its data/README.md documents the keys)."""
    sharegpt = {
        "file_name": arrow_file,
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "observation_tag": "tool",
            "system_tag": "system",
        },
    }
    alpaca = {
        "file_name": ALPACA_FILE,
        "formatting": "alpaca",
        "columns": {
            "prompt": "instruction",
            "query": "input",
            "response": "output",
            "system": "system",
            "history": "history",
        },
    }
    return {"datagen_sharegpt": sharegpt, "datagen_alpaca": alpaca}


def features(meta_type: Any | None) -> Any:
    """The explicit schema; ``meta_type`` is an Arrow struct type, or None to leave ``meta`` out."""
    import datasets

    cols: dict[str, Any] = {
        "id": datasets.Value("string"),
        "instruction": datasets.Value("string"),
        "input": datasets.Value("string"),
        "output": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "is_classification": datasets.Value("bool"),
        "lang": datasets.Value("string"),
    }
    if meta_type is not None:
        import pyarrow as pa

        cols["meta"] = datasets.Features.from_arrow_schema(pa.schema([("meta", meta_type)]))["meta"]
    return datasets.Features(cols)


def _has_empty_struct(kind: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(_has_empty_struct(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _has_empty_struct(kind.value_type)
    return False


def typed_meta(metas: list[dict[str, Any]], dropped: Counter[str]) -> tuple[list[dict[str, Any]], Any | None]:
    """``meta`` dicts made Arrow-typable, and their struct type (None when every meta is empty).

    >>> rows, kind = typed_meta([{"round": 1}, {"round": 2, "source": ["a"]}], Counter())
    >>> str(kind)
    'struct<round: int64, source: list<item: string>>'
    """
    import pyarrow as pa

    keys = list(dict.fromkeys(k for m in metas for k in m))
    as_json: set[str] = set()
    fields = []
    for key in keys:
        values = [m.get(key) for m in metas]
        try:
            kind = pa.array(values).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            kind = None
        if kind is None or _has_empty_struct(kind):
            as_json.add(key)
            kind = pa.string()
            dropped[f"type of meta.{key} (mixed types: stored as JSON text in meta.{key}{JSON_SUFFIX})"] += sum(
                v is not None for v in values
            )
        fields.append(pa.field(key + JSON_SUFFIX if key in as_json else key, kind))
    if not fields:
        return [{} for _ in metas], None
    rows = [
        {
            (k + JSON_SUFFIX if k in as_json else k): (
                json.dumps(m[k], ensure_ascii=False) if k in as_json and k in m else m.get(k)
            )
            for k in keys
        }
        for m in metas
    ]
    return rows, pa.struct(fields)


def hf_rows(examples: list[Example], meta: str, dropped: Counter[str]) -> tuple[list[dict[str, Any]], Any]:
    """Rows and features for ``examples``: every row has its whole conversation in ``messages``."""
    rows = [
        {
            "id": e.id,
            "instruction": e.instruction,
            "input": e.input,
            "output": e.output,
            "messages": e.conversation(),
            "is_classification": e.is_classification,
            "lang": e.lang,
        }
        for e in examples
    ]
    if meta == "drop":
        lost = sum(1 for e in examples if e.meta)
        if lost:
            dropped["meta (--meta drop)"] += lost
        return rows, features(None)
    metas, meta_type = typed_meta([e.meta for e in examples], dropped)
    if meta_type is not None:
        for row, value in zip(rows, metas):
            row["meta"] = value
    return rows, features(meta_type)


def write_hf(
    examples: list[Example],
    out: Path,
    folder: bool,
    meta: str,
    card: dict[str, Any],
    dropped: Counter[str],
    alpaca: list[dict[str, Any]],
) -> int:
    """Write a parquet file or a dataset folder at ``out`` (already checked), built beside it and renamed; the
    caller (``formats.py``, which owns the alpaca conversion) passes each example as ``alpaca``."""
    import datasets

    rows, schema = hf_rows(examples, meta, dropped)
    dataset = datasets.Dataset.from_list(rows, features=schema)
    if not folder:
        with atomic_file(out, "wb") as handle:
            dataset.to_parquet(handle)
        return len(dataset)
    with atomic_dir(out) as staging:
        datasets.DatasetDict({"train": dataset}).save_to_disk(str(staging), num_shards={"train": 1})
        arrow_file = _name_by_content(staging)
        write_json(staging / "dataset_info.json", llama_factory_entries(arrow_file))
        write_json(
            staging / ALPACA_FILE, [{"system": "", "history": [], **row} for row in alpaca]
        )  # one shape for all
        write_atomic(staging / "README.md", dataset_card(examples, card, dropped, arrow_file))
    return len(dataset)


def _name_by_content(folder: Path) -> str:
    """Rename the split's arrow file to ``train/data-<digest>.arrow`` (and tell state.json), returning the name.

    ``load_dataset`` caches a local folder under a hash of its name and its data file *names*, not their
    content: a re-export to the same path (or another folder of the same name) was read back from the cache
    with the old rows. A name that changes with the content makes the cache key change with it.
    """
    import hashlib

    old = folder / ARROW_FILE
    with old.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()[:16]
    name = f"train/data-{digest}.arrow"
    os.replace(old, folder / name)
    state_path = folder / "train" / "state.json"
    state = json.loads(state_path.read_text())
    state["_data_files"] = [{"filename": Path(name).name}]
    write_json(state_path, state)
    return name


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def dataset_card(
    examples: list[Example], card: dict[str, Any], dropped: Counter[str], arrow_file: str = ARROW_FILE
) -> str:
    """README.md: a YAML header the Hub reads (license, language, size, configs) and how the data was made."""
    import yaml

    langs = Counter(e.lang for e in examples if e.lang)
    header = {
        "license": card.get("license") or "unknown",
        "language": sorted(langs) or ["en"],
        "size_categories": [_size_category(len(examples))],
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "datagen", "instruction-tuning"],
        "pretty_name": card.get("name") or "datagen export",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": arrow_file}]}],
    }
    methods = Counter(e.meta.get("method") or "unknown" for e in examples)
    models = Counter(str(e.meta["model"]) for e in examples if e.meta.get("model"))
    turns = Counter(
        "multi-turn" if e.messages and sum(m["role"] == "user" for m in e.messages) > 1 else "single-turn"
        for e in examples
    )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# {header['pretty_name']}",
        "",
        f"{len(examples)} instruction-tuning records made with datagen ("
        + ", ".join(f"{n} {k}" for k, n in turns.most_common())
        + ").",
        "",
        "## How it was made",
        "",
        *[f"- method `{k}`: {n} records" for k, n in methods.most_common()],
        *[f"- model `{k}`: {n} records" for k, n in models.most_common()],
        *[f"- languages: {', '.join(f'{k} {n}' for k, n in langs.most_common())}"] * bool(langs),
    ]
    for title, key in (
        ("Seeds", "seeds"),
        ("Filter", "filter"),
        ("Random seeds", "random_seeds"),
        ("Source", "source"),
    ):
        value = card.get(key)
        if value:
            lines += ["", f"## {title}", ""]
            items = (
                value.items()
                if isinstance(value, dict)
                else enumerate(value)
                if isinstance(value, list)
                else [("", value)]
            )
            lines += [
                f"- {k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}".replace("- : ", "- ")
                for k, v in items
            ]
    if dropped:
        lines += ["", "## Not in this export", "", *[f"- {what}: {n} records" for what, n in sorted(dropped.items())]]
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("PATH", split="train")   # or datasets.load_from_disk("PATH")',
        "```",
        "",
        "LLaMA-Factory: `dataset_dir: PATH`, `dataset: datagen_sharegpt` (or `datagen_alpaca`).",
        "",
    ]
    return "\n".join(lines)
