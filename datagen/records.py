"""The Example record and the only code that reads or writes JSONL.

Every stage meets every other stage here: generators write ``Example``s, the filter reads and writes them,
the trainer reads them. Reads validate line by line and report ``path:line: what is wrong``; writes are
atomic (temp file + fsync + ``os.replace``), so a file is whole or absent; long runs append through
``ShardWriter``, which repairs a torn last line on reopen, so a killed run never leaves half a record.

    >>> ex = Example(instruction="Add the numbers.", input="2 3", output="5")
    >>> ex.id == Example(instruction="Add the numbers.", input="2 3", output="5").id
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mmap
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError, RecordError

#: Roles accepted in ``messages`` (OpenAI chat roles).
ROLES = ("system", "user", "assistant", "tool")

log = logging.getLogger("datagen.records")
_SURROGATE = re.compile("[\ud800-\udfff]")

_RECORD_KEYS = {"id", "instruction", "input", "output", "messages", "is_classification", "lang", "meta", "reject"}


def render_user_turn(instruction: str, input: str) -> str:
    """The user message for a single-turn example: the instruction, then the input after a blank line."""
    return f"{instruction}\n\n{input}" if input else instruction


def content_id(instruction: str, input: str, output: str, messages: list[dict] | None = None) -> str:
    """Stable id from the content alone, so the same example gets the same id in every run.

    Metadata (model, round, scores) is left out on purpose: two runs that produce the same text must
    agree on its id, which is what dedup and resume compare.
    """
    payload = {"instruction": instruction, "input": input, "output": output}
    if messages:
        payload["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
    digest = hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
    return "dg-" + digest[:20]


@dataclass
class Example:
    """One instruction-tuning example: DESIGN.md's record, the contract between stages.

    ``messages`` holds multi-turn data (OpenAI roles); single-turn tools read ``instruction``/``input``/
    ``output``, which for a conversation hold its first exchange. ``meta`` is free-form provenance
    (method, round, model, prompt, source, similar, usage, filter); ``reject`` is set only in rejects files.
    """

    instruction: str
    output: str
    input: str = ""
    messages: list[dict[str, str]] | None = None
    is_classification: bool | None = None
    lang: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    reject: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.id:
            self.id = content_id(self.instruction, self.input, self.output, self.messages)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to disk; optional fields are left out when unset."""
        out: dict[str, Any] = {
            "id": self.id,
            "instruction": self.instruction,
            "input": self.input,
            "output": self.output,
        }
        if self.messages is not None:
            out["messages"] = self.messages
        if self.is_classification is not None:
            out["is_classification"] = self.is_classification
        if self.lang is not None:
            out["lang"] = self.lang
        out["meta"] = self.meta
        if self.reject is not None:
            out["reject"] = self.reject
        return out

    def conversation(self, system: str | None = None) -> list[dict[str, str]]:
        """The record as chat messages: its own ``messages``, or one user turn (``render_user_turn``) and the
        answer; ``system`` goes first unless the record starts with a system message of its own.

        >>> Example(instruction="Translate.", input="猫", output="cat").conversation("Be brief.")[1:]
        [{'role': 'user', 'content': 'Translate.\\n\\n猫'}, {'role': 'assistant', 'content': 'cat'}]
        """
        messages = (
            list(self.messages)
            if self.messages
            else [
                {"role": "user", "content": render_user_turn(self.instruction, self.input)},
                {"role": "assistant", "content": self.output},
            ]
        )
        if system and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def turns(self) -> list[dict[str, str]]:
        """The conversation without its system message: user and assistant (and tool) turns in order."""
        return [m for m in self.conversation() if m["role"] != "system"]

    @classmethod
    def from_dict(cls, obj: Any, where: str = "record") -> Example:
        """Validate a decoded JSON object as a record; errors name ``where`` (``path:line``) and the field."""
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: expected a JSON object, got {_json_type(obj)}")
        unknown = set(obj) - _RECORD_KEYS
        if unknown:
            raise RecordError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_RECORD_KEYS)}")
        for key in ("instruction", "output"):
            if key not in obj:
                raise RecordError(f"{where}: missing required field '{key}'")
        for key in ("id", "instruction", "input", "output", "lang"):
            if key in obj and obj[key] is not None and not isinstance(obj[key], str):
                raise RecordError(f"{where}: field '{key}' must be a string, got {_json_type(obj[key])}")
        if obj.get("instruction") is None or obj.get("output") is None:
            raise RecordError(f"{where}: fields 'instruction' and 'output' must not be null")
        if obj.get("is_classification") is not None and not isinstance(obj["is_classification"], bool):
            raise RecordError(
                f"{where}: field 'is_classification' must be true/false, got {_json_type(obj['is_classification'])}"
            )
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise RecordError(f"{where}: field 'meta' must be an object, got {_json_type(meta)}")
        reject = obj.get("reject")
        if reject is not None and not isinstance(reject, dict):
            raise RecordError(f"{where}: field 'reject' must be an object, got {_json_type(reject)}")
        messages = obj.get("messages")
        if messages is not None:
            messages = validate_messages(messages, f"{where}: field 'messages'")
        return cls(
            instruction=obj["instruction"],
            output=obj["output"],
            input=obj.get("input") or "",
            messages=messages,
            is_classification=obj.get("is_classification"),
            lang=obj.get("lang"),
            meta=meta,
            id=obj.get("id") or "",
            reject=reject,
        )


def validate_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """Check an OpenAI ``messages`` list: objects with a known role and string content."""
    if not isinstance(messages, list) or not messages:
        raise RecordError(f"{where} must be a non-empty list of {{role, content}} objects")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RecordError(f"{where}[{i}] must be an object, got {_json_type(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RecordError(f"{where}[{i}].role must be one of {list(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise RecordError(f"{where}[{i}].content must be a string, got {_json_type(content)}")
        clean.append({"role": role, "content": content})
    return clean


# ---------------------------------------------------------------------------------------------- reading


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, decoded_value)`` for each non-blank line, raising RecordError at the first bad one.

    Checks that the bytes are UTF-8 (a UTF-8 BOM on line 1 is tolerated, UTF-16 is named as such), that each
    line is one JSON value with nothing after it, and that no NaN/Infinity sneaks in (Python's json accepts
    them; every other JSON reader rejects them).
    """
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file")
    if path.is_dir():
        raise RecordError(f"{path}: is a directory, expected a JSONL file")
    decoder = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if number == 1:
                if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                    raise RecordError(f"{where}: file is UTF-16 encoded; convert it to UTF-8")
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if b"\x00" in raw:
                raise RecordError(
                    f"{where}: contains NUL bytes (binary file, or UTF-16/32 text?); expected UTF-8 JSON lines"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(
                    f"{where}: not valid UTF-8 (byte {exc.start + 1} of the line); re-save the file as UTF-8"
                ) from None
            if not text.strip():
                continue
            try:
                value, end = decoder.raw_decode(text.strip())
            except json.JSONDecodeError as exc:
                if number == 1 and text.lstrip().startswith("["):
                    raise RecordError(_ARRAY_HINT.format(where=where, path=path)) from None
                raise RecordError(f"{where}: invalid JSON: {exc.msg} at column {exc.colno}") from None
            except RecursionError:
                raise RecordError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels)") from None
            except ValueError as exc:
                raise RecordError(f"{where}: invalid JSON: {exc}") from None
            if end != len(text.strip()):
                if number == 1 and isinstance(value, list):
                    raise RecordError(_ARRAY_HINT.format(where=where, path=path))
                raise RecordError(
                    f"{where}: extra data after the JSON value at column {end + 1} (one object per line)"
                )
            if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(value) > MAX_DEPTH:  # count: a cheap bound
                raise RecordError(f"{where}: JSON nested too deeply (more than {MAX_DEPTH} levels)")
            # Only a \\uD800 escape makes a lone surrogate: look for one where the line has such an escape.
            if (b"\\ud" in raw or b"\\uD" in raw) and (clean := _replace_surrogates(value)) != value:
                value = clean
                log.warning("%s: lone UTF-16 surrogate(s) (\\ud800-\\udfff escapes) replaced with U+FFFD", where)
            yield number, value


#: JSON nested deeper than this is refused: no record needs it, and walking it would exhaust Python's stack.
MAX_DEPTH = 100
_ARRAY_HINT = (
    "{where}: this file is one JSON array, but JSON Lines (one object per line) is expected; convert it "
    "with: jq -c '.[]' {path} > {path}l"
)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice in one object (``json`` silently keeps the last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {duplicate!r} in one object")
    return obj


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:  # deeper than the limit is all we need to know
                stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _replace_surrogates(value: Any) -> Any:
    """A copy with each lone surrogate (which no UTF-8 file can hold) replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    return value


def read_examples(path: str | Path) -> list[Example]:
    """Read a file of datagen records (``Example.to_dict`` lines), validating every line."""
    return list(iter_examples(path))


def iter_examples(path: str | Path) -> Iterator[Example]:
    """Stream datagen records one at a time (for files too big to hold)."""
    for number, obj in iter_json_lines(path):
        yield Example.from_dict(obj, f"{path}:{number}")


# ---------------------------------------------------------------------------------------------- writing


def dump_line(obj: Any) -> str:
    """One JSON line of a record (or a plain dict), as every records file is written."""
    if isinstance(obj, Example):
        obj = obj.to_dict()
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # a file system that cannot open or sync a folder: the rename stands
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_dirs(path: str | Path) -> Path:
    """Create a folder and its parents; a path that runs into a file, or is not writable, is a ConfigError
    naming it (``--out results.jsonl/sub``), not an internal error."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        raise ConfigError(f"{path}: cannot create this folder: {blocker} is a file, not a folder") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot create this folder: permission denied") from None
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str) -> Iterator[Any]:
    """Yield a temp file beside ``path``; on success fsync it and rename it over ``path`` (then fsync the
    folder), on any error remove it. Readers see the old file or the whole new one, never a part. Open two at
    once to write two files in one pass (the filter's curated and rejects)."""
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # the mode a plain open() gives: mkstemp makes 0600, outputs are shared
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``target``; once the block succeeds it is renamed to ``target``, replacing it
    whole (``publish_dir``); on any error it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        publish_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_dir(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` folder onto ``target``, replacing it whole.

    Modes are made normal first: files 644 and folders 755 (less the umask), as temp-folder helpers create
    600/700, too tight to share. An old ``target`` (already checked) is moved aside first and removed only
    once the new one is in place.
    """
    mask = _umask()
    os.chmod(staging, 0o777 & ~mask)
    for root, dirs, files in os.walk(staging):
        for name in dirs:
            os.chmod(Path(root) / name, 0o777 & ~mask)
        for name in files:
            if not os.path.islink(Path(root) / name):
                os.chmod(Path(root) / name, 0o666 & ~mask)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, aside / target.name)
    os.replace(staging, target)
    shutil.rmtree(aside, ignore_errors=True)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write a whole file so that it is either complete or absent: temp file, fsync, rename, fsync dir."""
    with atomic_file(path, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write pretty JSON (manifests, stats)."""
    write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Example | dict[str, Any]]) -> int:
    """Atomically write records (or plain dicts) as JSON lines; returns the number written."""
    count = 0
    with atomic_file(path, "w") as handle:
        for row in rows:
            handle.write(dump_line(row))
            count += 1
    return count


class ShardWriter:
    """Append-only JSONL for long runs: each record is flushed as it arrives and survives a kill.

    A kill can tear the last line in half. On open, the writer cuts the file back to its last newline, so
    what remains is only whole records, and the caller's resume logic re-creates the torn one (its LLM
    answer is in the cache, so that costs nothing). ``fsync_every`` trades durability against speed.

        with ShardWriter(out / "instances.jsonl") as shard:
            for record in produce():
                shard.write(record)
    """

    def __init__(self, path: str | Path, fsync_every: int = 1):
        self.path = Path(path)
        make_dirs(self.path.parent)
        self.repaired_bytes = _truncate_torn_tail(self.path)
        self._handle = self.path.open("a", encoding="utf-8")
        self._fsync_every = max(1, fsync_every)
        self._pending = 0

    def write(self, row: Example | dict[str, Any]) -> None:
        """Append one record as one line and flush it to the OS (and to disk every ``fsync_every``)."""
        self._handle.write(dump_line(row))
        self._handle.flush()
        self._pending += 1
        if self._pending >= self._fsync_every:
            os.fsync(self._handle.fileno())
            self._pending = 0

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_torn_tail(path: Path) -> int:
    """Cut a file back to just after its last newline; returns how many bytes were removed."""
    if not path.exists() or path.stat().st_size == 0:  # (mmap cannot map an empty file)
        return 0
    with path.open("rb+") as handle:
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            size, keep = len(view), view.rfind(b"\n") + 1
        if keep != size:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return size - keep


def read_jsonl_tolerant(path: str | Path) -> list[dict[str, Any]]:
    """Read our own append-only state file, ignoring a torn final line (the writer repairs it on reopen).

    Only for files this program wrote itself (resume state); user input goes through ``iter_json_lines``.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw))
        except ValueError:
            if number == len(lines):  # the torn tail of a killed write
                break
            raise RecordError(
                f"{path}:{number}: corrupt line in a state file; delete the file to start over"
            ) from None
    return rows
