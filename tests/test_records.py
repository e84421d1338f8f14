"""Records: ids, validation with file:line errors, atomic and append-only writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import RecordError
from datagen.records import Example, ShardWriter, read_examples, read_jsonl_tolerant, write_atomic, write_jsonl

GOOD = {"instruction": "Add.", "input": "2 3", "output": "5"}

# (name, bytes of line 2, expected message fragment) — line 1 is always a good record.
BROKEN_LINES = [
    ("invalid json", b'{"instruction": "x", "output": }', "invalid JSON"),
    ("truncated line", b'{"instruction": "x", "outp', "invalid JSON"),
    ("trailing garbage", b'{"instruction": "x", "output": "y"} {"a": 1}', "extra data"),
    ("array not object", b'["instruction", "output"]', "expected a JSON object"),
    ("bare string", b'"just text"', "expected a JSON object"),
    ("missing output", b'{"instruction": "x"}', "missing required field 'output'"),
    ("missing instruction", b'{"output": "y", "input": ""}', "cannot tell the record format"),
    ("number instruction", b'{"instruction": 3, "output": "y"}', "'instruction' must be a string"),
    ("null output", b'{"instruction": "x", "output": null}', "must not be null"),
    ("bad meta", b'{"instruction": "x", "output": "y", "meta": [1]}', "'meta' must be an object"),
    ("bad classification flag", b'{"instruction": "x", "output": "y", "is_classification": "yes"}', "true/false"),
    ("NaN", b'{"instruction": "x", "output": "y", "meta": {"score": NaN}}', "NaN is not valid JSON"),
    ("latin-1 bytes", '{"instruction": "caf\u00e9", "output": "y"}'.encode("latin-1"), "not valid UTF-8"),
    ("NUL bytes", b'{"instruction": "x",\x00 "output": "y"}', "NUL bytes"),
    ("bad message role", b'{"messages": [{"role": "robot", "content": "hi"}]}', "role must be one of"),
    ("message content not string", b'{"messages": [{"role": "user", "content": 5}]}', "content must be a string"),
    ("conversation without assistant", b'{"messages": [{"role": "user", "content": "hi"}]}', "no assistant turn"),
    ("sharegpt bad speaker", b'{"conversations": [{"from": "bot", "value": "x"}]}', "conversations[0].from"),
    ("seed without instances", b'{"instruction": "x", "instances": []}', "'instances' must be a non-empty list"),
    ("seed instance missing output", b'{"instruction": "x", "instances": [{"input": ""}]}', "instances[0].output"),
    ("unknown field typo", b'{"instruction": "x", "output": "y", "ouput": "z"}', "unknown field"),
]


def write_lines(path, second: bytes) -> None:
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + second + b"\n")


@pytest.mark.parametrize("name,line,fragment", BROKEN_LINES, ids=[b[0] for b in BROKEN_LINES])
def test_bad_line_is_a_file_line_error_with_exit_2_and_no_output(tmp_path, name, line, fragment):
    source = tmp_path / "in.jsonl"
    write_lines(source, line)
    dest = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["convert", str(source), str(dest), "--to", "alpaca"])
    assert result.exit_code == 2, result.output
    assert f"{source}:2:" in result.output and fragment in result.output
    assert "Traceback" not in result.output
    assert not dest.exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_utf16_file_is_named_as_such(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(json.dumps(GOOD).encode("utf-16"))
    result = CliRunner().invoke(cli, ["convert", str(source), str(tmp_path / "o.jsonl"), "--to", "alpaca"])
    assert result.exit_code == 2 and f"{source}:1: file is UTF-16" in result.output


def test_missing_file_and_directory_are_clear_errors(tmp_path):
    for path, fragment in [(tmp_path / "nope.jsonl", "no such file"), (tmp_path, "is a directory")]:
        result = CliRunner().invoke(cli, ["convert", str(path), str(tmp_path / "o.jsonl"), "--to", "alpaca"])
        assert result.exit_code == 2 and fragment in result.output


def test_blank_lines_and_utf8_bom_are_tolerated(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n\n   \n" + json.dumps(GOOD).encode() + b"\n")
    assert [e.output for e in read_examples(path)] == ["5", "5"]


def test_ids_are_stable_content_hashes():
    a = Example(instruction="Add.", input="2 3", output="5", meta={"round": 1})
    b = Example(instruction="Add.", input="2 3", output="5", meta={"round": 9, "model": "m"})
    c = Example(instruction="Add.", input="2 3", output="6")
    assert a.id == b.id != c.id and a.id.startswith("dg-") and len(a.id) == 23
    assert Example.from_dict({"instruction": "Add.", "input": "2 3", "output": "5"}).id == a.id


def test_roundtrip_preserves_every_field(tmp_path):
    record = Example(
        instruction="说一句话",
        output="你好",
        lang="zh",
        is_classification=False,
        messages=[{"role": "user", "content": "说一句话"}, {"role": "assistant", "content": "你好"}],
        meta={"method": "self-instruct", "round": 2, "similar": [["x", 0.5]]},
    )
    path = tmp_path / "r.jsonl"
    assert write_jsonl(path, [record, record]) == 2
    again = read_examples(path)
    assert again[0] == record and again[0].to_dict() == record.to_dict()
    assert "说一句话" in path.read_text(encoding="utf-8")  # not \u-escaped


def test_write_atomic_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [Example(**GOOD)])

    def rows():
        yield Example(**GOOD)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert len(read_examples(path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]  # no temp file left behind


def test_write_atomic_replaces_whole(tmp_path):
    path = tmp_path / "x.json"
    write_atomic(path, "one")
    write_atomic(path, "two")
    assert path.read_text() == "two"


def test_shard_writer_repairs_a_torn_tail(tmp_path):
    path = tmp_path / "shard.jsonl"
    with ShardWriter(path) as shard:
        shard.write({"n": 1})
        shard.write({"n": 2})
    with path.open("ab") as handle:  # what a kill mid-write leaves
        handle.write(b'{"n": 3, "tex')
    assert [r["n"] for r in read_jsonl_tolerant(path)] == [1, 2]
    with ShardWriter(path) as shard:
        assert shard.repaired_bytes == len(b'{"n": 3, "tex')
        shard.write({"n": 3})
    assert path.read_bytes().count(b"\n") == 3
    assert [r["n"] for r in read_jsonl_tolerant(path)] == [1, 2, 3]


def test_shard_writer_never_leaves_half_a_line_when_killed(tmp_path):
    """SIGKILL a process that appends big records as fast as it can; every complete line survives."""
    path = tmp_path / "shard.jsonl"
    script = textwrap.dedent(f"""
        from datagen.records import ShardWriter
        with ShardWriter({str(path)!r}, fsync_every=50) as shard:
            i = 0
            while True:
                shard.write({{"n": i, "pad": "x" * 20000}})
                i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        import time

        deadline = time.monotonic() + 30
        while (not path.exists() or path.stat().st_size < 2_000_000) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows_before = read_jsonl_tolerant(path)
    with ShardWriter(path):
        pass
    data = path.read_bytes()
    assert data.endswith(b"\n")
    rows = [json.loads(line) for line in data.splitlines()]
    assert [r["n"] for r in rows] == list(range(len(rows))) and len(rows) == len(rows_before) > 50


def test_read_jsonl_tolerant_rejects_corruption_in_the_middle(tmp_path):
    path = tmp_path / "state.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(RecordError, match=f"{path}:2: corrupt line"):
        read_jsonl_tolerant(path)


def test_fsync_is_not_required_for_correct_reads(tmp_path):
    # os.replace semantics: the target is never observed half-written by readers
    path = tmp_path / "big.jsonl"
    write_jsonl(path, [Example(**GOOD) for _ in range(1000)])
    assert len(read_examples(path)) == 1000 and os.path.getsize(path) > 0


def test_outputs_get_normal_file_permissions(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [Example(**GOOD)])
    write_atomic(tmp_path / "b.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    for name in ("a.jsonl", "b.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask
