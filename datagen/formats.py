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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError, RecordError
from datagen.hfexport import JSON_SUFFIX, write_hf
from datagen.records import Example, iter_json_lines, render_user_turn, validate_messages, write_json, write_jsonl

#: Export formats, as named by ``datagen convert --to`` and ``datagen export --to``.
EXPORT_FORMATS = (
    "datagen",
    "alpaca",
    "sharegpt",
    "messages",
    "seed",
    "hf",
    "parquet",
    "alpaca-json",
    "prompt-completion",
    "text",
    "preference",
)

_SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_call": "assistant",
}
_SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system", "tool": "observation"}
#: ``meta`` key listing the assistant turns that were sharegpt ``function_call`` turns, so they export back as such.
FUNCTION_CALL_TURNS = "function_call_turns"


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
        if "instruction" in obj and ("history" in obj or "system" in obj):
            return "alpaca-chat"
        if "instruction" in obj:
            return "datagen"
        if "prompt" in obj and "completion" in obj:
            return "prompt-completion"
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
        messages, calls = _sharegpt_to_messages(obj["conversations"], where)
        system = obj.get("system")
        if system is not None and not isinstance(system, str):
            raise RecordError(f"{where}: field 'system' must be a string")
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
            calls = [i + 1 for i in calls]
        example = _from_messages(messages, obj, where)
        if calls:
            example.meta = {**example.meta, FUNCTION_CALL_TURNS: calls}
        return [example]
    if kind == "alpaca-chat":
        return [_from_alpaca_chat(obj, where)]
    if kind == "prompt-completion":
        prompt, completion = obj["prompt"], obj["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return [Example(instruction=prompt, output=completion)]
        messages = validate_messages(
            (prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])
            + (completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]),
            f"{where}: prompt+completion",
        )
        return [_from_messages(messages, obj, where)]
    if kind == "seed":
        return seed_task_examples(validate_seed_task(obj, where))
    if not isinstance(obj, dict):
        kind = "an array" if isinstance(obj, list) else "null" if obj is None else f"a {type(obj).__name__}"
        raise RecordError(f"{where}: expected a JSON object, got {kind}")
    raise RecordError(
        f"{where}: cannot tell the record format from keys {sorted(obj)[:8]}; expected 'instruction'+'output' "
        "(alpaca/datagen), 'messages' (OpenAI), 'conversations' (sharegpt) or 'instances' (self-instruct seed)"
    )


def _sharegpt_to_messages(conversations: Any, where: str) -> tuple[list[dict[str, str]], list[int]]:
    """The OpenAI messages of a sharegpt conversation, and the indices of its ``function_call`` turns."""
    if not isinstance(conversations, list) or not conversations:
        raise RecordError(f"{where}: field 'conversations' must be a non-empty list of {{from, value}} objects")
    messages, calls = [], []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise RecordError(f"{where}: conversations[{i}] must be an object")
        speaker, value = turn.get("from"), turn.get("value")
        if speaker not in _SHAREGPT_ROLES:
            raise RecordError(
                f"{where}: conversations[{i}].from must be one of {sorted(_SHAREGPT_ROLES)}, got {speaker!r}"
            )
        if not isinstance(value, str):
            raise RecordError(f"{where}: conversations[{i}].value must be a string")
        if speaker == "function_call":
            calls.append(i)
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": value})
    return messages, calls


def _from_alpaca_chat(obj: dict[str, Any], where: str) -> Example:
    """LLaMA-Factory's alpaca with ``system`` and ``history: [[user, assistant], ...]``: a conversation whose
    last exchange is ``instruction``/``input``/``output``. The first exchange keeps its instruction/input split."""
    for key in ("instruction", "output"):
        if not isinstance(obj.get(key), str):
            raise RecordError(f"{where}: field '{key}' must be a string")
    text_input = obj.get("input") or ""
    system, history = obj.get("system") or "", obj.get("history") or []
    if not isinstance(text_input, str) or not isinstance(system, str):
        raise RecordError(f"{where}: fields 'input' and 'system' must be strings")
    if not isinstance(history, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) for t in pair) for pair in history
    ):
        raise RecordError(f"{where}: field 'history' must be a list of [user, assistant] string pairs")
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in history:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages += [
        {"role": "user", "content": render_user_turn(obj["instruction"], text_input)},
        {"role": "assistant", "content": obj["output"]},
    ]
    first = (history[0][0], "", history[0][1]) if history else (obj["instruction"], text_input, obj["output"])
    return Example(instruction=first[0], input=first[1], output=first[2], messages=messages, **_meta_and_id(obj))


def _from_messages(messages: list[dict[str, str]], obj: dict, where: str) -> Example:
    """A conversation record: ``instruction``/``output`` hold its first user/assistant exchange."""
    user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
    if user is None:
        raise RecordError(f"{where}: conversation has no user turn")
    reply = next((m["content"] for m in messages[user + 1 :] if m["role"] == "assistant"), None)
    if reply is None:
        raise RecordError(f"{where}: conversation has no assistant turn after the first user turn")
    return Example(
        instruction=messages[user]["content"], input="", output=reply, messages=messages, **_meta_and_id(obj)
    )


def _meta_and_id(obj: dict[str, Any]) -> dict[str, Any]:
    """A foreign record's ``meta`` and ``id`` when they have datagen's types; others are ignored, not errors."""
    return {
        "meta": obj.get("meta") if isinstance(obj.get("meta"), dict) else {},
        "id": obj.get("id") if isinstance(obj.get("id"), str) else "",
    }


def validate_seed_task(obj: Any, where: str) -> dict[str, Any]:
    """Check one Self-Instruct seed task; returns it unchanged (any file in the public format is accepted)."""
    if not isinstance(obj, dict):
        raise RecordError(
            f"{where}: expected a seed task object, got {'an array' if isinstance(obj, list) else type(obj).__name__}"
        )
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
        Example(
            instruction=task["instruction"],
            input=inst["input"],
            output=inst["output"],
            is_classification=task.get("is_classification"),
            meta={"method": "seed", "source": [task.get("id", "")], "name": task.get("name", "")},
        )
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
    return list(iter_any(path))


def iter_any(path: str | Path) -> Iterator[Example]:
    """``read_any`` one record at a time, so a caller that streams (the filter) holds one line, not the file.
    A JSON array and an HF dataset are still loaded whole (their parsers read the whole file)."""
    path = Path(path)
    if (
        path.is_dir()
        and any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json"))
        or path.suffix == ".parquet"
    ):
        yield from _read_hf(path)
    elif path.suffix == ".json" and _starts_with_array(path):  # alpaca_data.json: one JSON array
        yield from _read_json_array(path)
    else:
        for number, obj in iter_json_lines(path):
            yield from example_from_obj(obj, f"{path}:{number}")


def _without_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nones(v) for v in value]
    return value


def _starts_with_array(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(64).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def _read_json_array(path: Path) -> list[Example]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not a valid JSON array: {exc}") from None
    if not isinstance(rows, list):
        raise RecordError(f"{path}: expected a JSON array of records")
    return [e for i, obj in enumerate(rows) for e in example_from_obj(obj, f"{path}: item {i}")]


def _read_hf(path: Path) -> list[Example]:
    import datasets  # heavy: imported only when HF data is read

    try:
        dataset = (
            datasets.Dataset.from_parquet(str(path))
            if path.suffix == ".parquet"
            else datasets.load_from_disk(str(path))
        )
        if isinstance(dataset, datasets.DatasetDict):  # the `--to hf` folder: its splits, in order
            dataset = datasets.concatenate_datasets(list(dataset.values()))
    except Exception as exc:  # datasets raises many types for a broken folder
        raise RecordError(f"{path}: cannot read as a Hugging Face dataset: {exc}") from exc
    examples = []
    for i, row in enumerate(dataset):
        row = {k: v for k, v in row.items() if v is not None}
        if isinstance(row.get("meta"), str):  # written by datagen before the typed schema
            try:
                row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
            except (ValueError, RecursionError):
                raise RecordError(f"{path}:row {i}: column 'meta' is not valid JSON") from None
        elif isinstance(row.get("meta"), dict):  # a struct: keys other rows have come back as None
            row["meta"] = {
                k.removesuffix(JSON_SUFFIX): (json.loads(v) if k.endswith(JSON_SUFFIX) else v)
                for k, v in _without_nones(row["meta"]).items()
            }
        for key in ("messages", "conversations"):
            if key in row and not row[key]:
                del row[key]
        if (
            "instruction" in row
            and row.get("messages")
            == Example(row["instruction"], row.get("output", ""), row.get("input", "")).conversation()
        ):
            del row["messages"]  # the typed column holds every conversation; a single turn had none of its own
        examples.extend(example_from_obj(row, f"{path}:row {i}"))
    return examples


# ---------------------------------------------------------------------------------------------- writing


def to_alpaca(example: Example, dropped: Counter[str] | None = None) -> dict[str, Any]:
    """Alpaca, with LLaMA-Factory's ``system`` and ``history`` for conversations.

    The last exchange is ``instruction``/``output``, earlier ones ``history: [[user, assistant], ...]``.
    Turns alpaca cannot hold (tool turns, a trailing user turn) are counted in ``dropped``.
    """
    single = {"instruction": example.instruction, "input": example.input, "output": example.output}
    if not example.messages:
        return single
    messages = list(example.messages)
    system = messages.pop(0)["content"] if messages[0]["role"] == "system" else ""
    pairs: list[list[str]] = []
    lost = 0
    k = 0
    while k < len(messages):
        if k + 1 < len(messages) and messages[k]["role"] == "user" and messages[k + 1]["role"] == "assistant":
            pairs.append([messages[k]["content"], messages[k + 1]["content"]])
            k += 2
        else:
            lost += 1
            k += 1
    if lost and dropped is not None:
        dropped["turns alpaca cannot hold (tool, system or unpaired)"] += lost
    if not pairs:
        return single
    (last_user, output), history = pairs[-1], pairs[:-1]
    row: dict[str, Any] = {"instruction": last_user, "input": "", "output": output}
    if not history and last_user == render_user_turn(example.instruction, example.input):
        row["instruction"], row["input"] = example.instruction, example.input  # keep the split when we know it
    if system:
        row["system"] = system
    if history:
        row["history"] = history
    return row


def to_sharegpt(example: Example) -> dict[str, Any]:
    """Sharegpt as LLaMA-Factory documents it: a leading system turn goes to the top-level ``system``."""
    messages = example.conversation()
    calls = set(example.meta.get(FUNCTION_CALL_TURNS) or [])
    system = messages[0]["content"] if messages[0]["role"] == "system" else None
    turns = [
        {"from": "function_call" if i in calls else _SHAREGPT_FROM.get(m["role"], m["role"]), "value": m["content"]}
        for i, m in enumerate(messages)
        if not (i == 0 and system is not None)
    ]
    row: dict[str, Any] = {"id": example.id, "conversations": turns}
    if system is not None:
        row["system"] = system
    return row


def to_prompt_completion(example: Example) -> dict[str, Any] | None:
    """trl's conversational prompt-completion: everything before the last assistant turn, and that turn."""
    messages = example.conversation()
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return None
    return {"id": example.id, "prompt": messages[:last], "completion": [messages[last]]}


def to_seed_tasks(examples: Iterable[Example]) -> list[dict[str, Any]]:
    """Group examples by instruction into Self-Instruct seed tasks, in first-seen order."""
    tasks: dict[str, dict[str, Any]] = {}
    for example in examples:
        task = tasks.get(example.instruction)
        if task is None:
            task = tasks[example.instruction] = {
                "id": f"seed_task_{len(tasks)}",
                "name": example.meta.get("name") or example.id,
                "instruction": example.instruction,
                "instances": [],
                "is_classification": bool(example.is_classification),
            }
        task["instances"].append({"input": example.input, "output": example.output})
    return list(tasks.values())


def preference_pairs(kept: Iterable[Example], rejected: Iterable[Example]) -> tuple[list[dict[str, Any]], int]:
    """``chosen``/``rejected`` pairs from a kept and a rejected answer to the same prompt (trl's conversational
    preference form). Returns the pairs and how many rejected answers had no kept answer to pair with."""
    by_prompt: dict[str, Example] = {}
    for example in kept:
        pc = to_prompt_completion(example)
        if pc is not None:
            by_prompt.setdefault(json.dumps(pc["prompt"], ensure_ascii=False), example)
    pairs, unpaired = [], 0
    for bad in rejected:
        pc = to_prompt_completion(bad)
        good = by_prompt.get(json.dumps(pc["prompt"], ensure_ascii=False)) if pc else None
        if good is None or pc is None:
            unpaired += 1
            continue
        chosen = to_prompt_completion(good)
        assert chosen is not None
        if chosen["completion"] == pc["completion"]:
            unpaired += 1
            continue
        pairs.append(
            {
                "prompt": pc["prompt"],
                "chosen": chosen["completion"],
                "rejected": pc["completion"],
                "rejected_reason": (bad.reject or {}).get("reason", ""),
            }
        )
    return pairs, unpaired


@dataclass
class ExportResult:
    """What an export wrote, and what the format could not hold (``what -> how many records lost it``)."""

    rows: int
    dropped: Counter[str] = field(default_factory=Counter)

    def notes(self) -> str:
        """One line per loss, for the CLI: ``dropped: meta on 3 records``."""
        return "\n".join(f"dropped: {what} on {n} record(s)" for what, n in sorted(self.dropped.items()))


def export(
    examples: list[Example],
    out: str | Path,
    to: str,
    *,
    overwrite: bool = False,
    protect: Iterable[str | Path] = (),
    rejected: Iterable[Example] = (),
    chat_template: Callable[[list[dict[str, str]]], str] | None = None,
    meta: str = "struct",
    card: dict[str, Any] | None = None,
) -> ExportResult:
    """Write examples to ``out`` in format ``to``; returns the row count (tasks for ``seed``) and the losses.

    ``out`` is never deleted: an existing non-empty ``out`` is refused unless ``overwrite``, and even then a
    folder holding one of ``protect`` (the inputs) or a run is refused. Output is built beside ``out`` and
    renamed into place, so ``out`` is whole or untouched. ``rejected`` feeds ``preference``; ``chat_template``
    renders ``text``; ``meta`` ("struct" or "drop") and ``card`` (dataset card facts) shape ``hf``/``parquet``.
    """
    out = Path(out)
    if to not in EXPORT_FORMATS:
        raise ConfigError(f"--to must be one of {', '.join(EXPORT_FORMATS)}, got {to!r}")
    if meta not in ("struct", "drop"):
        raise ConfigError(f"--meta must be struct or drop, got {meta!r}")
    check_destination(out, to == "hf", overwrite, protect)  # hf is the one format written as a folder
    result = ExportResult(0)
    dropped = result.dropped
    if to not in ("datagen", "hf", "parquet"):
        _count_lost_fields(
            examples, dropped, joined=to not in ("alpaca", "alpaca-json", "seed"), keeps_classification=to == "seed"
        )
    if to == "seed":
        lost = sum(
            1
            for e in examples
            if e.messages
            and e.conversation() != Example(instruction=e.instruction, input=e.input, output=e.output).conversation()
        )
        if lost:
            dropped["system prompt and turns after the first exchange (seed tasks are single-turn)"] += lost
    if to == "datagen":
        result.rows = write_jsonl(out, examples)
    elif to == "alpaca":
        result.rows = write_jsonl(out, [to_alpaca(e, dropped) for e in examples])
    elif to == "alpaca-json":
        rows = [to_alpaca(e, dropped) for e in examples]
        write_json(out, rows)
        result.rows = len(rows)
    elif to == "sharegpt":
        result.rows = write_jsonl(out, (to_sharegpt(e) for e in examples))
    elif to == "messages":
        result.rows = write_jsonl(out, ({"id": e.id, "messages": e.conversation()} for e in examples))
    elif to == "prompt-completion":
        rows = [r for r in map(to_prompt_completion, examples) if r is not None]
        if len(rows) < len(examples):
            dropped["whole record (no assistant turn)"] += len(examples) - len(rows)
        result.rows = write_jsonl(out, rows)
    elif to == "text":
        if chat_template is None:
            raise ConfigError("--to text needs a tokenizer whose chat template renders the text (--tokenizer)")
        result.rows = write_jsonl(out, ({"id": e.id, "text": chat_template(e.conversation())} for e in examples))
    elif to == "preference":
        rejected = list(rejected)
        if not rejected:
            raise ConfigError(
                "--to preference needs rejected answers (a run's filter/rejects.jsonl, or --rejected FILE)"
            )
        pairs, unpaired = preference_pairs(examples, rejected)
        if unpaired:
            dropped["rejected answer without a different kept answer to the same prompt"] += unpaired
        result.rows = write_jsonl(out, pairs)
    elif to == "seed":
        result.rows = write_jsonl(out, to_seed_tasks(examples))
    else:
        result.rows = write_hf(
            examples,
            out,
            folder=(to == "hf"),
            meta=meta,
            card=card or {},
            dropped=dropped,
            alpaca=[to_alpaca(e) for e in examples],
        )
    return result


def _count_lost_fields(
    examples: list[Example], dropped: Counter[str], joined: bool, keeps_classification: bool = False
) -> None:
    for example in examples:
        if joined and example.input:
            dropped["instruction/input split (joined in the user turn)"] += 1
        if example.meta:
            dropped["meta (provenance)"] += 1
        if example.is_classification is not None and not keeps_classification:
            dropped["is_classification"] += 1
        if example.lang is not None:
            dropped["lang"] += 1


def check_destination(out: Path, folder: bool, overwrite: bool, protect: Iterable[str | Path] = ()) -> None:
    """Refuse a destination whose replacement would lose data the tool did not create.

    A missing path or an empty folder is fine. Anything else needs ``overwrite``, and even then never a folder
    for a file format, never an input (``protect``) or a folder holding one, a run folder, or a folder above
    the working directory.

    >>> check_destination(Path("/nonexistent/out.jsonl"), folder=False, overwrite=False)
    """
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        if not folder:
            raise ConfigError(f"{out} is a folder; this format writes a file: name a file path")
        return
    if not overwrite:
        raise ConfigError(f"{out} already exists; choose a new path, or pass --overwrite to replace it")
    if out.is_symlink():
        raise ConfigError(f"{out} is a symbolic link; refusing to replace it (remove the link yourself)")
    if out.is_dir() != folder:
        raise ConfigError(
            f"{out} is a {'folder' if out.is_dir() else 'file'}; this format writes a "
            f"{'folder' if folder else 'file'}, so --overwrite will not replace it"
        )
    target = out.resolve()
    for path in protect:
        source = Path(path).resolve()
        if source == target or target in source.parents:
            raise ConfigError(f"{out} holds the input {path}; refusing to overwrite it even with --overwrite")
    if target == Path.cwd().resolve() or target in Path.cwd().resolve().parents:
        raise ConfigError(f"{out} holds the working directory; refusing to overwrite it")
    if (target / "manifest.json").exists() or any(target.glob("*/.done.json")):
        raise ConfigError(f"{out} is a datagen run folder; refusing to overwrite it even with --overwrite")
    if folder and not (target / "dataset_info.json").is_file():
        raise ConfigError(f"{out} is not a dataset folder written by `--to hf`; refusing to replace it")
