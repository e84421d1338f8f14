"""Issue 18, items 6–9: bad input that used to crash (exit 1, a traceback, a run that paid first) is refused up
front (exit 2, the file/line or key named, nothing written), and text that cannot be stored as UTF-8 (file names,
lone surrogates) is replaced with a warning instead of ending the run.

Every case goes through the real command line (click's runner, in process) against the fault-injecting server,
and checks the exit code, the message, that no output folder was left and (for refusals) that no request
reached the endpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from datagen.cli import cli
from tests.plugins.faults import MODEL_ID
from tests.reliability._support import REPO, SEEDS, responder

GOOD_DOC = (
    "Volcanoes form where magma rises through the crust. Lava that cools quickly becomes basalt rock.\n\n"
    "Crater Lake in Oregon fills a caldera that formed when Mount Mazama collapsed.\n"
)


def _config(tmp: Path, url: str, text: str | None = None, **sections) -> Path:
    """A run config with ``sections`` (or the raw ``text``), writing under ``tmp/out``."""
    path = tmp / "run.yaml"
    if text is None:
        data = {
            "name": "r",
            "out_dir": str(tmp / "out"),
            "endpoint": {
                "base_url": url,
                "model": MODEL_ID,
                "cache_path": str(tmp / "cache.sqlite"),
                "max_retries": 0,
            },
            **sections,
        }
        text = yaml.safe_dump(data, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return path


def _invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    return result, output


def _refused(result, output: str, fragments: tuple[str, ...], tmp: Path, fault_server) -> None:
    assert "Traceback" not in output and "internal error" not in output, output
    assert result.exit_code == 2, f"exit {result.exit_code}: {output}"
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in: {output}"
    assert not (tmp / "out").exists() or not any(p.is_file() for p in (tmp / "out").rglob("*")), sorted(
        map(str, (tmp / "out").rglob("*"))
    )
    assert fault_server.log == [], "a refused input reached the endpoint"


SI = {"seeds": SEEDS, "num_instructions": 2, "batch_size": 1, "classifier_eval_seeds": 1}

# ---------------------------------------------------------------------------------------------- item 6

NON_FINITE = {
    # id: (config sections or raw YAML, overrides, fragments the message must hold)
    "config-temperature-nan": (
        {"self_instruct": {**SI, "generate_sampling": {"temperature": float("nan")}}},
        (),
        ("self_instruct.generate_sampling.temperature", "finite"),
    ),
    "config-rpm-inf": ({"self_instruct": SI, "endpoint": "<url-inf>"}, (), ("endpoint.rpm", "finite")),
    "config-rouge-threshold-inf": (
        {"self_instruct": {**SI, "rouge_threshold": float("inf")}},
        (),
        ("rouge_threshold", "finite"),
    ),
    "override-min-support-nan": (
        {"self_qa": {"docs": str(REPO / "seeds" / "docs")}},
        ("self_qa.min_support=.nan",),
        ("self_qa.min_support", "finite"),
    ),
    "override-learning-rate-inf": (
        {"self_instruct": SI, "train": {"base": "embedded"}},
        ("train.learning_rate=.inf",),
        ("train.learning_rate", "finite"),
    ),
    "override-in-free-form-section-nan": (
        {"self_instruct": SI},
        ("self_instruct.generate_sampling.top_p=-.inf",),
        ("top_p", "finite"),
    ),
}


@pytest.mark.parametrize("case", list(NON_FINITE))
def test_inf_and_nan_in_a_run_config_are_refused_up_front(case, tmp_path, fault_server, record_property):
    """#6: `inf`/`nan` in a run config or a `key=value` override (temperature, rates, thresholds, learning rate):
    exit 2 naming the key before any request; a run folder that already exists is not touched, and `--resume`
    with the bad value is refused the same way every time (it used to pay, then fail writing its manifest, and
    every resume failed again)."""
    sections, overrides, fragments = NON_FINITE[case]
    sections = dict(sections)
    if sections.get("endpoint") == "<url-inf>":
        sections["endpoint"] = {"base_url": fault_server.url, "model": MODEL_ID, "rpm": float("inf")}
    config = _config(tmp_path, fault_server.url, **sections)
    result, output = _invoke("run", config, *overrides)
    _refused(result, output, fragments, tmp_path, fault_server)
    # an existing run, resumed with the bad value: refused again, its files untouched
    run_dir = tmp_path / "out" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text('{"complete": false}')
    result, output = _invoke("run", config, *overrides, "--resume")
    assert result.exit_code == 2 and fragments[0] in output, output
    assert (run_dir / "manifest.json").read_text() == '{"complete": false}'
    assert fault_server.log == []
    record_property("detail", output.strip().splitlines()[-1].replace(f"{tmp_path}/", "")[:160])


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--temperature", "nan"),
        ("--temperature", "inf"),
        ("--top-p", "nan"),
        ("--timeout", "inf"),
        ("--rpm", "nan"),
        ("--circuit-breaker", "inf"),
    ],
)
def test_inf_and_nan_flags_are_usage_errors(flag, value, tmp_path, fault_server):
    """#6: `--temperature nan`, `--top-p nan`, `--timeout inf`, `--rpm nan`, `--circuit-breaker inf`: exit 2 naming
    the flag (nan passed click's range checks: every comparison with nan is false)."""
    (tmp_path / "p.jsonl").write_text('{"instruction": "Name a prime.", "output": ""}\n')
    result, output = _invoke(
        "respond",
        "--in",
        tmp_path / "p.jsonl",
        "--out",
        tmp_path / "out",
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        flag,
        value,
    )
    _refused(result, output, (flag, "finite"), tmp_path, fault_server)


# ---------------------------------------------------------------------------------------------- item 7

SHAPES = {
    # id: (raw YAML with {url} and {out}, fragments)
    "endpoint-a-number": (
        "name: r\nout_dir: {out}\nendpoint: 5\nself_instruct: {{seeds: " + SEEDS + "}}\n",
        ("endpoint", "mapping", "5"),
    ),
    "endpoint-a-list": (
        "name: r\nout_dir: {out}\nendpoint: [{url}]\nself_instruct: {{seeds: " + SEEDS + "}}\n",
        ("endpoint", "mapping"),
    ),
    "sampling-a-list": (
        "name: r\nout_dir: {out}\nendpoint: {{base_url: {url}}}\nself_instruct: {{seeds: "
        + SEEDS
        + ", generate_sampling: [1, 2]}}\n",
        ("generate_sampling", "mapping"),
    ),
    "out-dir-a-list": (
        "name: r\nout_dir: [a, b]\nendpoint: {{base_url: {url}}}\nself_instruct: {{seeds: " + SEEDS + "}}\n",
        ("out_dir",),
    ),
    "config-a-list": ("- name: r\n- out_dir: {out}\n", ("mapping", "list")),
    "a-date-where-text-belongs": (
        "name: r\nout_dir: {out}\nendpoint: {{base_url: {url}, model: 2024-01-01}}\n"
        "self_instruct: {{seeds: " + SEEDS + "}}\n",
        ("endpoint", "model"),
    ),
    "duplicate-yaml-key": (
        "name: r\nout_dir: {out}\nendpoint: {{base_url: {url}}}\nself_instruct:\n"
        "  seeds: " + SEEDS + "\n  num_instructions: 3\n  num_instructions: 300\n",
        ("run.yaml:7", "duplicate key 'num_instructions'", "line 6"),
    ),
    "duplicate-top-level-key-json": (
        '{{"name": "r", "out_dir": "{out}", "name": "s", "endpoint": {{"base_url": "{url}"}}}}',
        ("run.yaml:1", "duplicate key 'name'"),
    ),
}


@pytest.mark.parametrize("case", list(SHAPES))
def test_config_shape_holes_and_duplicate_keys_are_config_errors(case, tmp_path, fault_server, record_property):
    """#7: Run configs of the wrong shape (`endpoint: 5`, a list where a mapping belongs, a list as `out_dir`, a date
    where text belongs) and keys given twice in YAML or JSON: exit 2 naming the key (and, for duplicates, the
    line of each), not a traceback (exit 1) nor a silent last-wins."""
    text, fragments = SHAPES[case]
    config = _config(tmp_path, fault_server.url, text.format(url=fault_server.url, out=tmp_path / "out"))
    result, output = _invoke("run", config)
    _refused(result, output, fragments, tmp_path, fault_server)
    record_property("detail", output.strip().splitlines()[-1].replace(f"{tmp_path}/", "")[:160])


@pytest.mark.parametrize("case", ["pretty-array", "one-line-array", "duplicate-key"])
def test_records_json_array_and_duplicate_keys(case, tmp_path, fault_server):
    """#7: A JSON array given where JSON Lines is expected says "array" (and how to convert it); a record with a key
    given twice names the line and the key; exit 2 and no output file either way."""
    rows = [{"instruction": "Add 2 and 3.", "output": "5"}, {"instruction": "Add 1 and 1.", "output": "2"}]
    source = tmp_path / "data.jsonl"
    if case == "pretty-array":
        source.write_text(json.dumps(rows, indent=2))
        fragments = ("data.jsonl:1", "array", "jq")
    elif case == "one-line-array":
        source.write_text(json.dumps(rows) + "\n")
        fragments = ("data.jsonl:1", "array")
    else:
        source.write_text(json.dumps(rows[0]) + "\n" + '{"instruction": "a", "output": "b", "output": "c"}\n')
        fragments = ("data.jsonl:2", "duplicate key 'output'")
    result, output = _invoke("convert", source, tmp_path / "out" / "x.jsonl", "--to", "alpaca")
    _refused(result, output, fragments, tmp_path, fault_server)


# ---------------------------------------------------------------------------------------------- item 8


def test_yaml_alias_bomb_is_refused_quickly(tmp_path, fault_server, record_property):
    """#8: A "billion laughs" run config (9 levels of 10 aliases: 10⁹ values once expanded): exit 2 saying the aliases
    expand too far, within seconds and without growing memory (it used to expand while copying the config)."""
    import resource
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    text = "\n".join(lines) + f"\nname: r\nout_dir: {tmp_path / 'out'}\nself_instruct: {{seeds: {SEEDS}, bomb: *a9}}\n"
    config = _config(tmp_path, fault_server.url, text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result, output = _invoke("run", config)
    seconds = time.perf_counter() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    _refused(result, output, ("run.yaml", "alias"), tmp_path, fault_server)
    assert seconds < 5 and grown_mb < 200, (seconds, grown_mb)
    record_property("detail", f"refused in {seconds * 1000:.0f} ms, peak memory +{grown_mb:.0f} MB")


def test_recursive_yaml_alias_is_refused(tmp_path, fault_server):
    """#8: A YAML anchor that contains an alias of itself (`a: &x [*x]`): exit 2, not a RecursionError."""
    config = _config(tmp_path, fault_server.url, f"name: r\nout_dir: {tmp_path / 'out'}\nloop: &x [1, *x]\n")
    result, output = _invoke("run", config)
    _refused(result, output, ("run.yaml", "alias"), tmp_path, fault_server)


def test_json_record_nested_1000_deep_is_a_record_error(tmp_path, fault_server):
    """#8: A record whose `meta` is nested 1,000 deep (and one 100,000 deep): exit 2 naming the line, "nested too
    deeply", not a RecursionError."""
    source = tmp_path / "deep.jsonl"
    ok = json.dumps({"instruction": "Add 2 and 3.", "output": "5"})
    source.write_text(
        ok
        + "\n"
        + '{"instruction": "a", "output": "b", "meta": {"x": '
        + "[" * 1000
        + "]" * 1000
        + "}}\n"
        + '{"instruction": "a", "output": "b", "meta": '
        + "[" * 100_000
        + "]" * 100_000
        + "}\n"
    )
    result, output = _invoke("convert", source, tmp_path / "out" / "x.jsonl", "--to", "alpaca")
    _refused(result, output, ("deep.jsonl:2", "nested too deeply"), tmp_path, fault_server)
    source.write_text(
        ok + "\n" + '{"instruction": "a", "output": "b", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    )
    result, output = _invoke("convert", source, tmp_path / "out" / "x.jsonl", "--to", "alpaca")
    _refused(result, output, ("deep.jsonl:2", "nested too deeply"), tmp_path, fault_server)


# ---------------------------------------------------------------------------------------------- item 9


def test_lone_surrogates_in_records_are_replaced_with_a_warning(tmp_path, fault_server):
    """#9: Records holding lone surrogates (`"\\ud800"` escapes, valid JSON that no UTF-8 file can hold): converted
    with U+FFFD in their place and a warning naming `file:line`, exit 0 (it was exit 1 on the write)."""
    source = tmp_path / "s.jsonl"
    source.write_text(
        '{"instruction": "Add 2 and 3.", "output": "5"}\n'
        '{"instruction": "Say \\ud800 hi", "output": "ok \\udfff", "meta": {"k\\ud800": 1}}\n'
    )
    out = tmp_path / "out" / "x.jsonl"
    result, output = _invoke("convert", source, out, "--to", "datagen")
    assert result.exit_code == 0, output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[1]["instruction"] == "Say \ufffd hi" and rows[1]["output"] == "ok \ufffd", rows
    assert rows[1]["meta"] == {"k\ufffd": 1}
    assert f"{source}:2: lone UTF-16 surrogate" in output, output


def test_docs_with_non_utf8_file_names_run_with_a_warning(tmp_path, fault_server, record_property):
    """#9: `self-qa --docs` over a folder holding a Latin-1 file name (`caf\\xe9.md`, not UTF-8) and a JSONL document
    with a lone surrogate: the run finishes (exit 0; it was exit 1), the odd name becomes `caf\\ufffd.md` in the
    records, and a warning names the file."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(GOOD_DOC, encoding="utf-8")
    with open(os.path.join(os.fsencode(docs), b"caf\xe9.md"), "wb") as handle:
        handle.write(GOOD_DOC.replace("Volcanoes", "Glaciers").encode())
    (docs / "lines.jsonl").write_text(
        '{"text": "Basalt rock \\ud800 forms when lava cools quickly near the surface of the crust."}\n',
        encoding="utf-8",
    )
    fault_server.responder = responder()
    result, output = _invoke(
        "self-qa",
        "--docs",
        docs,
        "--out",
        tmp_path / "out",
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        "--max-retries",
        "0",
        "--questions-per-chunk",
        "1",
        "--cache-path",
        tmp_path / "cache.sqlite",
    )
    assert result.exit_code == 0, output + repr(result.exception)
    records = (tmp_path / "out" / "records.jsonl").read_text(encoding="utf-8")
    rejects = (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    assert "caf\ufffd.md" in records + rejects + json.dumps(stats, ensure_ascii=False), stats
    said = output
    assert "caf\\xe9.md" in said and "not valid UTF-8" in said, said
    assert "lines.jsonl:1" in said and "surrogate" in said, said
    warned = [line[:100] for line in output.splitlines() if "UTF-8" in line or "surrogate" in line]
    record_property("detail", f"{stats.get('kept')} kept; warned: {warned[:2]}".replace(f"{tmp_path}/", ""))
