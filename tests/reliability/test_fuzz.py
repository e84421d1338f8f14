"""Property-based fuzzing (hypothesis) of what reads untrusted bytes and model text.

The record readers (``iter_json_lines``, ``read_any``) may only raise RecordError/ConfigError, whatever the bytes;
the tolerant parsers of model output (``datagen.generate.parsing``, and Self-QA's and Self-KG's answer parsers)
may raise nothing at all. "Never a hang": each example must finish within hypothesis' deadline, the inputs
include the shapes that make regular expressions backtrack (long runs of blank lines, spaces, markers), and a
pytest timeout bounds the whole test.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datagen.errors import ConfigError, RecordError
from datagen.formats import read_any
from datagen.generate import parsing
from datagen.generate.self_kg import parse_qa
from datagen.generate.self_qa import clean_answer, parse_questions
from datagen.records import iter_json_lines

FUZZ = settings(
    max_examples=150,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Pieces models (and attackers) actually produce, so the fuzzer reaches the parsers' interesting paths.
PIECES = [
    "1.",
    "2)",
    "(3)",
    "10 .",
    "#4.",
    "Task 5:",
    "Instruction 6 -",
    "第7条：",
    "8、",
    "9．",
    "- ",
    "* ",
    "• ",
    "**",
    "Input:",
    "Output:",
    "Class label:",
    "Label:",
    "输入：",
    "输出：",
    "类别标签：",
    "Example 1",
    "示例 2",
    "<noinput>",
    "<无>",
    "Question:",
    "Answer:",
    "问题：",
    "答案：",
    "Q:",
    "A:",
    "Yes",
    "No",
    "是",
    "否",
    "Sure! Here are",
    "I hope this helps",
    "\n",
    "\n\n",
    "\r\n",
    " ",
    "\t",
    "\u3000",
    "：",
    ":",
    "?",
    "？",
    "。",
    "{{ 7*7 }}",
    "{% for x in y %}",
    "<script>",
    "\x00",
    "\ufeff",
    "é",
    "𝔘",
    "\u202e",
    "x",
    "word",
]
MODEL_TEXT = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(PIECES), max_size=200).map("".join),
    # adversarial runs: what backtracking regular expressions choke on
    st.tuples(
        st.sampled_from(["", "Input", "Example 1", "1.", "**", "Class label", "Task 1"]),
        st.sampled_from([" ", "\n", " \n", "\t", "*", "1", ":"]),
        st.integers(2000, 10000),
        st.sampled_from(["", "x", ":", "Output: y"]),
    ).map(lambda t: t[0] + t[1] * t[2] + t[3]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
RECORD_KEYS = [
    "id",
    "instruction",
    "input",
    "output",
    "messages",
    "conversations",
    "instances",
    "meta",
    "lang",
    "is_classification",
    "reject",
    "role",
    "content",
    "from",
    "value",
    "name",
]
RECORDISH = st.dictionaries(st.sampled_from(RECORD_KEYS), JSON_VALUES, max_size=6)
LINES = st.lists(
    st.one_of(
        RECORDISH.map(json.dumps),
        JSON_VALUES.map(json.dumps),
        st.text(max_size=40),
        st.just('{"instruction": "a", "output": NaN}'),
        st.just(""),
    ),
    max_size=8,
)


def _write(data: bytes) -> Path:
    fd, name = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return Path(name)


def _read_everything(path: Path) -> None:
    try:
        list(iter_json_lines(path))
    except RecordError:
        pass
    try:
        read_any(path)
    except (RecordError, ConfigError):
        pass


@pytest.mark.timeout(180)
@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=600),
        LINES.map(lambda ls: "\n".join(ls).encode("utf-8")),
        LINES.map(lambda ls: "\n".join(ls).encode("utf-16")),
        st.tuples(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b""]), st.binary(max_size=200)).map(b"".join),
    )
)
def test_record_readers_raise_only_record_errors(data):
    """Random bytes, JSON of every shape, record-like objects with wrong types, BOMs, UTF-16, NaN, NUL bytes:
    `iter_json_lines` and `read_any` raise nothing but RecordError/ConfigError (150 examples each)."""
    path = _write(data)
    try:
        _read_everything(path)
    finally:
        path.unlink()


@pytest.mark.timeout(180)
@FUZZ
@given(text=MODEL_TEXT, lang=st.sampled_from(["en", "zh", "fr"]), continuation=st.booleans())
def test_model_output_parsers_never_raise_or_hang(text, lang, continuation):
    """Random and adversarial model output (numbered-list markers, labels, runs of 2,000–10,000 blank lines or
    spaces, template syntax, control characters): every parser returns, within 2 s, without an exception."""
    started = time.perf_counter()
    items = parsing.parse_numbered_list(text, continuation=continuation)
    assert all(isinstance(item, str) and item for item in items)
    assert parsing.parse_yes_no(text) in (True, False, None)
    for pairs in (
        parsing.parse_instances_input_first(text, lang),
        parsing.parse_instances_output_first(text, lang),
        parsing.split_labelled(text, {"input": "input", "output": "output", "输入": "input"}),
    ):
        assert all(isinstance(a, str) and isinstance(b, str) for a, b in pairs)
    assert all(isinstance(q, str) for q in parse_questions(text))
    assert isinstance(clean_answer(text), str)
    parsed = parse_qa(text)
    assert parsed is None or len(parsed) == 3
    assert time.perf_counter() - started < 2.0
