"""Issue 18, property test (hypothesis): whatever bytes or JSON/YAML shapes a user hands the record readers or the
run-config loader, the command ends with exit 0, or exit 2 and a one-line message, never a traceback, and on
exit 2 it has written nothing.

Readers go through ``datagen convert`` (``datagen.formats.read_any``, every record format) and
``read_seed_tasks``; configs through ``datagen.run.load_plan`` and, whenever that refuses a config,
``datagen run CONFIG`` itself in an empty folder (a config it accepts would start real work, so it is only
loaded). Inputs: random bytes, JSON values of every shape with duplicate keys, NaN, deep nesting, lone
surrogates and arrays; YAML built from the real config keys with values of the wrong shape, non-finite numbers,
dates, anchors and aliases. Bounded: 120 + 120 examples, derandomized, no deadline (each example is milliseconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datagen.cli import cli
from datagen.errors import RecordError, UserError
from datagen.formats import read_seed_tasks
from datagen.run import TOP_KEYS, load_plan

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["", "\ud800", "embedded", "http://u:p@127.0.0.1:1/v1", "2024-01-01", ".nan", "~"])
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
    "role",
    "content",
    "from",
    "value",
    "is_classification",
    "lang",
    "reject",
    "name",
]
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.sampled_from(RECORD_KEYS) | st.text(max_size=8), kids, max_size=5)
    ),
    max_leaves=15,
)


def _json_line(value) -> str:
    return json.dumps(value, ensure_ascii=True)  # NaN/Infinity and \ud800 escapes included on purpose


LINE = st.one_of(
    JSON_VALUES.map(_json_line),
    st.text(max_size=60),
    st.just('{"instruction": "a", "output": "b", "output": "c"}'),  # a duplicate key
    st.integers(1, 3000).map(lambda n: '{"instruction": "a", "output": "b", "meta": ' + "[" * n + "]" * n + "}"),
    st.just('{"instruction": "caf\\ud800", "output": "b"}'),  # a lone surrogate
    st.just(""),
)
RECORD_FILES = st.one_of(
    st.binary(max_size=400),
    st.lists(LINE, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.lists(JSON_VALUES, max_size=4).map(lambda rows: json.dumps(rows, indent=2).encode()),  # an array, not JSONL
)

SECTION_KEYS = [
    "seeds",
    "docs",
    "graph",
    "num_instructions",
    "batch_size",
    "generate_sampling",
    "temperature",
    "top_p",
    "max_tokens",
    "enabled",
    "base",
    "learning_rate",
    "judge",
    "inputs",
    "base_url",
    "base_urls",
    "model",
    "rpm",
    "timeout",
    "cache",
    "min_support",
    "lang",
    "mode",
    "max_chunks",
]
CONFIG_VALUES = st.recursive(
    SCALARS,
    lambda kids: (
        st.lists(kids, max_size=3)
        | st.dictionaries(st.sampled_from(SECTION_KEYS) | st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)
CONFIGS = st.one_of(
    st.dictionaries(st.sampled_from([*TOP_KEYS, "bogus"]), CONFIG_VALUES, max_size=5).map(
        lambda d: yaml.safe_dump(d, allow_unicode=False)
    ),
    CONFIG_VALUES.map(lambda v: yaml.safe_dump(v, allow_unicode=False)),
    st.text(max_size=200),
    st.sampled_from(
        [
            "a: &a [1, 2]\nb: [*a, *a]\nself_instruct: *a\n",
            "x: &x {k: 1}\ny: &y [*x, *x, *x]\nz: [*y, *y, *y]\nendpoint: *x\n",
            "loop: &l [*l]\n",
            "base: &b {seeds: s.jsonl}\nself_instruct:\n  <<: *b\n  seeds: t.jsonl\n",
            "name: r\nname: s\n",
            "endpoint: !!binary aGVsbG8=\n",
            "endpoint: !!set {a, b}\n",
            "out_dir: 2024-01-01\nself_instruct: {seeds: x}\n",
            "[" * 500 + "]" * 500,
            "self_instruct: {generate_sampling: {temperature: .inf}}\n",
        ]
    ),
)


@contextlib.contextmanager
def _empty_folder() -> Iterator[Path]:
    """An empty working folder for one example (function-scoped fixtures do not reset between examples)."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def _no_crash(result) -> None:
    output = result.output
    assert "Traceback" not in output and "internal error" not in output, output
    assert result.exit_code in (0, 2), f"exit {result.exit_code}: {output}\n{result.exception!r}"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 2:
        message = [line for line in output.splitlines() if line.startswith(("error:", "Error:"))]
        assert message and len(message[-1]) < 3000, output


@PROPERTY
@given(data=RECORD_FILES)
def test_record_readers_exit_0_or_2_and_write_nothing_on_2(data):
    """Issue 18 property: random bytes, JSON lines of every shape (duplicate keys, NaN, 1–3,000 levels of
    nesting, lone surrogates), pretty-printed arrays: `datagen convert` exits 0 or 2 with a message, never a
    traceback, and writes no output on exit 2; `read_seed_tasks` raises nothing but RecordError (120
    examples)."""
    runner = CliRunner()
    with _empty_folder():
        Path("in.jsonl").write_bytes(data)
        result = runner.invoke(cli, ["convert", "in.jsonl", "out/x.jsonl", "--to", "alpaca"])
        _no_crash(result)
        if result.exit_code == 2:
            assert not Path("out").exists(), sorted(map(str, Path("out").rglob("*")))
        else:
            Path("out/x.jsonl").read_text(encoding="utf-8")  # what was written is valid UTF-8
        try:
            read_seed_tasks("in.jsonl")
        except RecordError:
            pass


@PROPERTY
@given(text=CONFIGS)
def test_config_loader_exit_0_or_2_and_write_nothing_on_2(text):
    """Issue 18 property: run configs from the real keys with values of every shape (lists for mappings, numbers
    for text, inf/nan, dates, binary, sets), duplicate keys, aliases, alias loops, 500-deep nesting, random text:
    `load_plan` accepts or raises a UserError; when it refuses, `datagen run` exits 2 with a message and leaves the
    folder as it found it (120 examples)."""
    runner = CliRunner()
    with _empty_folder():
        Path("c.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_plan("c.yaml")
        except UserError as exc:
            assert str(exc)
        else:
            return  # a config that loads would start real work: loading it without a crash is the property
        result = runner.invoke(cli, ["run", "c.yaml"])
        _no_crash(result)
        assert result.exit_code == 2
        assert sorted(os.listdir(".")) == ["c.yaml"], os.listdir(".")
