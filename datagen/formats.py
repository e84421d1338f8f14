"""Converters between the Example record and the formats other tools read and write.

Readers accept, and exporters write: alpaca (``instruction/input/output``), sharegpt
(``conversations: [{from, value}]``), OpenAI ``messages``, the Self-Instruct seed format
(``{"id", "name", "instruction", "instances": [{"input", "output"}], "is_classification"}``), datagen's own
records, and HF ``datasets`` (``save_to_disk`` folders and parquet files).

Reading detects the format per line, so a file may mix formats; every error names ``path:line``.

    datagen convert data/alpaca.json.l out/chat.jsonl --to sharegpt
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError, RecordError
from datagen.records import Example, iter_json_lines, validate_messages, write_jsonl

#: Export formats, as named by ``datagen convert --to`` and ``datagen export --to``.
EXPORT_FORMATS = ("datagen", "alpaca", "sharegpt", "messages", "seed", "hf", "parquet")

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                   "system": "system"}
_SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


def render_user_turn(instruction: str, input: str) -> str:
    """The user message for a single-turn example: the instruction, then the input after a blank line."""
    return f"{instruction}\n\n{input}" if input else instruction


# ---------------------------------------------------------------------------------------------- reading


def detect_format(obj: Any) -> str:
    """Name the format of one decoded line: seed, sharegpt, messages or datagen (alpaca is a subset)."""
    if isinstance(obj, dict):
        if "instances" in obj:
            return "seed"
        if "conversations" in obj:
            return "sharegpt"
        if "messages" in obj and "instruction" not in obj:
            return "messages"
        if "instruction" in obj:
            return "datagen"
    return "unknown"


def example_from_obj(obj: Any, where: str) -> list[Example]:
    """Convert one decoded line in any supported format into one or more Examples (seed tasks fan out)."""
    kind = detect_format(obj)
    if kind == "datagen":
        return [Example.from_dict(obj, where)]
    if kind == "messages":
        messages = validate_messages(obj["messages"], f"{where}: field 'messages'")
        return [_from_messages(messages, obj, where)]
    if kind == "sharegpt":
        return [_from_messages(_sharegpt_to_messages(obj["conversations"], where), obj, where)]
    if kind == "seed":
        return seed_task_examples(validate_seed_task(obj, where))
    if not isinstance(obj, dict):
        kind = "an array" if isinstance(obj, list) else "null" if obj is None else f"a {type(obj).__name__}"
        raise RecordError(f"{where}: expected a JSON object, got {kind}")
    raise RecordError(
        f"{where}: cannot tell the record format from keys {sorted(obj)[:8]}; expected 'instruction'+'output' "
        "(alpaca/datagen), 'messages' (OpenAI), 'conversations' (sharegpt) or 'instances' (self-instruct seed)"
    )


def _sharegpt_to_messages(conversations: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(conversations, list) or not conversations:
        raise RecordError(f"{where}: field 'conversations' must be a non-empty list of {{from, value}} objects")
    messages = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise RecordError(f"{where}: conversations[{i}] must be an object")
        speaker, value = turn.get("from"), turn.get("value")
        if speaker not in _SHAREGPT_ROLES:
            raise RecordError(f"{where}: conversations[{i}].from must be one of {sorted(_SHAREGPT_ROLES)}, got {speaker!r}")
        if not isinstance(value, str):
            raise RecordError(f"{where}: conversations[{i}].value must be a string")
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": value})
    return messages


def _from_messages(messages: list[dict[str, str]], obj: dict, where: str) -> Example:
    """A conversation record: ``instruction``/``output`` hold its first user/assistant exchange."""
    user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if user is None:
        raise RecordError(f"{where}: conversation has no user turn")
    reply = next((m["content"] for m in messages[user + 1:] if m["role"] == "assistant"), None)
    if reply is None:
        raise RecordError(f"{where}: conversation has no assistant turn after the first user turn")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    record_id = obj.get("id") if isinstance(obj.get("id"), str) else ""
    return Example(instruction=messages[user]["content"], input="", output=reply, messages=messages,
                   meta=meta, id=record_id)


def validate_seed_task(obj: Any, where: str) -> dict[str, Any]:
    """Check one Self-Instruct seed task; returns it unchanged (any file in the public format is accepted)."""
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a seed task object, got {'an array' if isinstance(obj, list) else type(obj).__name__}")
    for key in ("instruction", "instances"):
        if key not in obj:
            raise RecordError(f"{where}: seed task is missing required field '{key}'")
    if not isinstance(obj["instruction"], str) or not obj["instruction"].strip():
        raise RecordError(f"{where}: seed task field 'instruction' must be a non-empty string")
    instances = obj["instances"]
    if not isinstance(instances, list) or not instances:
        raise RecordError(f"{where}: seed task field 'instances' must be a non-empty list")
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise RecordError(f"{where}: instances[{i}] must be an object with 'input' and 'output'")
        for key in ("input", "output"):
            if not isinstance(instance.get(key), str):
                raise RecordError(f"{where}: instances[{i}].{key} must be a string")
    if "is_classification" in obj and not isinstance(obj["is_classification"], bool):
        raise RecordError(f"{where}: seed task field 'is_classification' must be true/false")
    for key in ("id", "name"):
        if key in obj and not isinstance(obj[key], str):
            raise RecordError(f"{where}: seed task field '{key}' must be a string")
    return obj


def seed_task_examples(task: dict[str, Any]) -> list[Example]:
    """One Example per instance of a seed task, tagged ``meta.method = "seed"``."""
    return [
        Example(instruction=task["instruction"], input=inst["input"], output=inst["output"],
                is_classification=task.get("is_classification"),
                meta={"method": "seed", "source": [task.get("id", "")], "name": task.get("name", "")})
        for inst in task["instances"]
    ]


def read_seed_tasks(path: str | Path) -> list[dict[str, Any]]:
    """Read a Self-Instruct seed file, validating each task; ids are filled in when a file lacks them."""
    tasks = []
    for number, obj in iter_json_lines(path):
        task = dict(validate_seed_task(obj, f"{path}:{number}"))
        task.setdefault("id", f"seed_task_{len(tasks)}")
        tasks.append(task)
    if not tasks:
        raise RecordError(f"{path}: no seed tasks in file")
    return tasks


def read_any(path: str | Path) -> list[Example]:
    """Read records in any supported format: a JSONL file, an HF ``save_to_disk`` folder or a parquet file."""
    path = Path(path)
    if path.is_dir() and (path / "dataset_info.json").exists() or path.suffix == ".parquet":
        return _read_hf(path)
    examples: list[Example] = []
    for number, obj in iter_json_lines(path):
        examples.extend(example_from_obj(obj, f"{path}:{number}"))
    return examples


def _read_hf(path: Path) -> list[Example]:
    import datasets  # heavy: imported only when HF data is read

    try:
        dataset = datasets.Dataset.from_parquet(str(path)) if path.suffix == ".parquet" else datasets.load_from_disk(str(path))
    except Exception as exc:  # datasets raises many types for a broken folder
        raise RecordError(f"{path}: cannot read as a Hugging Face dataset: {exc}") from exc
    examples = []
    for i, row in enumerate(dataset):
        row = {k: v for k, v in row.items() if v is not None}
        if isinstance(row.get("meta"), str):
            try:
                row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
            except (ValueError, RecursionError):
                raise RecordError(f"{path}:row {i}: column 'meta' is not valid JSON") from None
        for key in ("messages", "conversations"):
            if key in row and not row[key]:
                del row[key]
        examples.extend(example_from_obj(row, f"{path}:row {i}"))
    return examples


# ---------------------------------------------------------------------------------------------- writing


def to_alpaca(example: Example) -> dict[str, Any]:
    return {"instruction": example.instruction, "input": example.input, "output": example.output}


def to_messages(example: Example) -> list[dict[str, str]]:
    """The conversation of an example: its own ``messages``, or one user/assistant exchange."""
    if example.messages:
        return example.messages
    return [{"role": "user", "content": render_user_turn(example.instruction, example.input)},
            {"role": "assistant", "content": example.output}]


def to_sharegpt(example: Example) -> dict[str, Any]:
    turns = [{"from": _SHAREGPT_FROM.get(m["role"], m["role"]), "value": m["content"]} for m in to_messages(example)]
    return {"id": example.id, "conversations": turns}


def to_seed_tasks(examples: Iterable[Example]) -> list[dict[str, Any]]:
    """Group examples by instruction into Self-Instruct seed tasks, in first-seen order."""
    tasks: dict[str, dict[str, Any]] = {}
    for example in examples:
        task = tasks.get(example.instruction)
        if task is None:
            task = tasks[example.instruction] = {
                "id": f"seed_task_{len(tasks)}", "name": example.meta.get("name") or example.id,
                "instruction": example.instruction, "instances": [],
                "is_classification": bool(example.is_classification)}
        task["instances"].append({"input": example.input, "output": example.output})
    return list(tasks.values())


def _hf_rows(examples: list[Example]) -> list[dict[str, Any]]:
    # meta is free-form, which Arrow cannot type column-wise: store it as a JSON string.
    rows = []
    for example in examples:
        row = example.to_dict()
        row["meta"] = json.dumps(row.get("meta", {}), ensure_ascii=False)
        row.setdefault("messages", [])
        row.pop("reject", None)
        row.pop("is_classification", None)
        row.pop("lang", None)
        rows.append(row)
    return rows


def export(examples: list[Example], out: str | Path, to: str) -> int:
    """Write examples to ``out`` in format ``to``; returns the number of rows (tasks for ``seed``)."""
    out = Path(out)
    if to not in EXPORT_FORMATS:
        raise ConfigError(f"--to must be one of {', '.join(EXPORT_FORMATS)}, got {to!r}")
    if to == "datagen":
        return write_jsonl(out, examples)
    if to == "alpaca":
        return write_jsonl(out, (to_alpaca(e) for e in examples))
    if to == "sharegpt":
        return write_jsonl(out, (to_sharegpt(e) for e in examples))
    if to == "messages":
        return write_jsonl(out, ({"id": e.id, "messages": to_messages(e)} for e in examples))
    if to == "seed":
        return write_jsonl(out, to_seed_tasks(examples))
    return _write_hf(examples, out, parquet=(to == "parquet"))


def _write_hf(examples: list[Example], out: Path, parquet: bool) -> int:
    import shutil
    import tempfile

    import datasets

    dataset = datasets.Dataset.from_list(_hf_rows(examples))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if parquet:
            dataset.to_parquet(str(staging / "data.parquet"))
            (staging / "data.parquet").replace(out)
        else:
            dataset.save_to_disk(str(staging / "ds"))
            if out.exists():
                shutil.rmtree(out)
            (staging / "ds").replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(dataset)
