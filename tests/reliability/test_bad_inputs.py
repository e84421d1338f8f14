"""Bad input corpus: seeds, documents, graphs, configs and CLI flags that a user can get wrong.

One table, one parametrized test. Each error case must end with exit code 2, a one-line message that names
the file (and line) or the key, no traceback, no output folder left behind, and no request to the endpoint.
Cases that are legitimately not errors (an empty document beside good ones, a graph with cycles) assert what
happens instead: the run goes on and the stats say what was skipped or dropped, and why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from datagen.cli import cli
from tests.plugins.faults import MODEL_ID
from tests.reliability._support import KG, REPO, SEEDS, responder

URL = "<url>"  # replaced by the fault server's URL when a case runs
GOOD_SEED = {
    "instruction": "Sort the numbers in ascending order.",
    "instances": [{"input": "3 1 2", "output": "1 2 3"}],
    "is_classification": False,
}
GOOD_DOC = (
    "Volcanoes form where magma rises through the crust. Lava that cools quickly becomes basalt rock.\n\n"
    "Crater Lake in Oregon fills a caldera that formed when Mount Mazama collapsed.\n"
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89" * 4


@dataclass
class Case:
    id: str
    build: Callable[[Path], list[str]]  # writes the inputs under tmp, returns the CLI arguments
    expect: tuple[str, ...] = ()  # fragments the message must contain ("{tmp}" is expanded)
    code: int = 2
    check: Callable[[Path, Any], None] | None = None  # for cases that are not errors: what must hold instead
    llm: bool = False  # the case talks to the endpoint (legit cases only)
    marks: tuple = field(default_factory=tuple)


def _write(path: Path, content: bytes | str | Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in content), encoding="utf-8")
    return path


def llm_args(*extra: str) -> list[str]:
    return ["--base-url", URL, "--model", MODEL_ID, "--max-retries", "0", *extra]


# ---------------------------------------------------------------------------------------------- builders


def seeds(content, *extra: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = _write(tmp / "seeds.jsonl", content) if content is not None else tmp / "seeds.jsonl"
        return ["self-instruct", "--seeds", str(path), "--out", str(tmp / "out"), *llm_args(), *extra]

    return build


def docs(files: dict[str, bytes | str], *extra: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        for name, content in files.items():
            _write(tmp / "docs" / name, content)
        return ["self-qa", "--docs", str(tmp / "docs"), "--out", str(tmp / "out"), *llm_args(), *extra]

    return build


def graph(name: str, content, *extra: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = _write(tmp / name, content)
        return ["self-kg", "--graph", str(path), "--num", "6", "--out", str(tmp / "out"), *extra]

    return build


def base_config(tmp: Path) -> dict[str, Any]:
    return {
        "name": "bad",
        "out_dir": str(tmp / "outputs"),
        "endpoint": {"base_url": URL, "model": MODEL_ID, "cache_path": str(tmp / "cache.sqlite")},
        "self_instruct": {"seeds": SEEDS, "num_instructions": 2},
    }


def config(
    mutate: Callable[[dict, Path], None] | None = None,
    raw: str | bytes | None = None,
    overrides: tuple[str, ...] = (),
    files: dict[str, Any] | None = None,
) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        for name, content in (files or {}).items():
            _write(tmp / name, content)
        path = tmp / "run.yaml"
        if raw is not None:
            _write(path, raw)
        else:
            data = base_config(tmp)
            if mutate:
                mutate(data, tmp)
            path.write_text(yaml.safe_dump(data, allow_unicode=True).replace(URL, "<url>"), encoding="utf-8")
        return ["run", str(path), *overrides]

    return build


def cli_args(*args: str, files: dict[str, bytes | str | list] | None = None) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        for name, content in (files or {}).items():
            _write(tmp / name, content)
        return [a.replace("{tmp}", str(tmp)) for a in args]

    return build


def setitem(path: str, value: Any) -> Callable[[dict, Path], None]:
    def mutate(data: dict, tmp: Path) -> None:
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value.replace("{tmp}", str(tmp)) if isinstance(value, str) else value

    return mutate


# ---------------------------------------------------------------------------------------------- legit cases


def skipped_but_ran(*reasons: str):
    def check(tmp: Path, result: Any) -> None:
        stats = json.loads((tmp / "out" / "stats.json").read_text())
        assert stats["kept"] > 0, stats
        said = " ".join(f"{s['doc_id']}: {s['reason']}" for s in stats["skipped_files"])
        for reason in reasons:
            assert reason in said, said

    return check


def graph_ran(key: str | None = None, minimum: int = 1):
    def check(tmp: Path, result: Any) -> None:
        stats = json.loads((tmp / "out" / "stats.json").read_text())
        assert stats["kept"] >= 1, stats
        if key:
            value = stats["graph"]
            for part in key.split("."):
                value = value[part]
            assert value >= minimum, stats["graph"]

    return check


def decoded_as_latin(tmp: Path, result: Any) -> None:
    records = [json.loads(line) for line in (tmp / "out" / "records.jsonl").read_text().splitlines()]
    assert records and any("café" in r["output"] or "Crème" in r["output"] for r in records), records


# ---------------------------------------------------------------------------------------------- the table

TRIPLES = "head\trelation\ttail\nrose\tfamily\trosaceae\nrose\tcolour\tred\ntulip\tfamily\tliliaceae\n"

CASES = [
    # ---- seeds (self-instruct --seeds)
    Case(
        "seeds-bad-json", seeds(json.dumps(GOOD_SEED) + '\n{"instruction": "x",\n'), ("seeds.jsonl:2", "invalid JSON")
    ),
    Case(
        "seeds-instruction-not-string", seeds([{**GOOD_SEED, "instruction": 42}]), ("seeds.jsonl:1", "'instruction'")
    ),
    Case(
        "seeds-missing-instances",
        seeds([GOOD_SEED, {"instruction": "Add the numbers."}]),
        ("seeds.jsonl:2", "'instances'"),
    ),
    Case("seeds-empty-instances", seeds([{**GOOD_SEED, "instances": []}]), ("seeds.jsonl:1", "non-empty list")),
    Case(
        "seeds-output-not-string",
        seeds([{**GOOD_SEED, "instances": [{"input": "", "output": 3}]}]),
        ("seeds.jsonl:1", "instances[0].output"),
    ),
    Case(
        "seeds-is-classification-string",
        seeds([{**GOOD_SEED, "is_classification": "yes"}]),
        ("seeds.jsonl:1", "is_classification"),
    ),
    Case("seeds-array-line", seeds("[1, 2, 3]\n"), ("seeds.jsonl:1", "seed task object")),
    Case(
        "seeds-nan",
        seeds('{"instruction": "x y z w", "instances": [{"input": "", "output": NaN}]}\n'),
        ("seeds.jsonl:1", "NaN"),
    ),
    Case("seeds-trailing-garbage", seeds(json.dumps(GOOD_SEED) + " trailing\n"), ("seeds.jsonl:1", "extra data")),
    Case("seeds-empty-file", seeds(b""), ("seeds.jsonl", "no seed tasks")),
    Case("seeds-blank-lines-only", seeds("\n  \n\n"), ("seeds.jsonl", "no seed tasks")),
    Case("seeds-binary", seeds(PNG), ("seeds.jsonl:1",)),
    Case("seeds-utf16", seeds((json.dumps(GOOD_SEED) + "\n").encode("utf-16")), ("seeds.jsonl:1", "UTF-16")),
    Case(
        "seeds-latin1",
        seeds('{"instruction": "Caf\xe9 au lait is good.", "instances": []}\n'.encode("latin-1")),
        ("seeds.jsonl:1", "UTF-8"),
    ),
    Case("seeds-missing-file", seeds(None), ("seeds.jsonl", "no such file")),
    Case(
        "seeds-is-a-directory",
        cli_args("self-instruct", "--seeds", "{tmp}", "--out", "{tmp}/out", "--base-url", URL, "--model", MODEL_ID),
        ("is a directory",),
    ),
    Case("seeds-negative-num-instructions", seeds([GOOD_SEED], "--num-instructions", "-4"), ("--num-instructions",)),
    Case(
        "seeds-out-under-a-file",
        cli_args(
            "self-instruct",
            "--seeds",
            SEEDS,
            "--out",
            "{tmp}/afile/sub",
            "--base-url",
            URL,
            "--model",
            MODEL_ID,
            files={"afile": "x"},
        ),
        ("{tmp}/afile",),
    ),
    # ---- documents (self-qa --docs)
    Case(
        "docs-missing-path",
        cli_args("self-qa", "--docs", "{tmp}/nowhere", "--out", "{tmp}/out", "--base-url", URL, "--model", MODEL_ID),
        ("{tmp}/nowhere", "no such file or folder"),
    ),
    Case(
        "docs-glob-matches-nothing",
        cli_args("self-qa", "--docs", "{tmp}/*.md", "--out", "{tmp}/out", "--base-url", URL, "--model", MODEL_ID),
        ("matches no file",),
    ),
    Case("docs-only-empty", docs({"blank.txt": b"", "spaces.md": "  \n\n "}), ("no readable document", "empty file")),
    Case("docs-only-binary", docs({"photo.txt": PNG}), ("no readable document", "photo.txt", "binary")),
    Case(
        "docs-unsupported-type",
        docs({"report.xlsx": b"PK\x03\x04 not really a workbook"}),
        ("no readable document", "report.xlsx", "unsupported file type"),
    ),
    Case(
        "docs-jsonl-without-text-field",
        docs({"corpus.jsonl": [{"body": "Volcanoes erupt."}]}),
        ("no readable document", "corpus.jsonl", "'text'"),
    ),
    Case(
        "docs-html-only-script",
        docs({"page.html": "<html><script>alert(1)</script><style>p{}</style></html>"}),
        ("no readable document", "page.html", "no text"),
    ),
    Case(
        "docs-csv-header-only", docs({"table.csv": "name,price\n"}), ("no readable document", "table.csv", "no rows")
    ),
    Case(
        "docs-overlap-not-below-size",
        docs({"a.md": GOOD_DOC}, "--chunk-tokens", "32", "--chunk-overlap", "32"),
        ("self_qa.chunk_overlap",),
    ),
    Case("docs-zero-questions", docs({"a.md": GOOD_DOC}, "--questions-per-chunk", "0"), ("--questions-per-chunk",)),
    Case(
        "docs-out-under-a-file",
        cli_args(
            "self-qa",
            "--docs",
            str(REPO / "seeds" / "docs"),
            "--out",
            "{tmp}/afile/sub",
            "--base-url",
            URL,
            "--model",
            MODEL_ID,
            "--max-chunks",
            "1",
            files={"afile": "x"},
        ),
        ("{tmp}/afile",),
    ),
    # legitimately not errors: the bad file is skipped and reported in stats.json, the good one is used
    Case(
        "docs-empty-beside-good",
        docs({"good.md": GOOD_DOC, "empty.txt": b""}),
        code=0,
        llm=True,
        check=skipped_but_ran("empty.txt: empty file"),
    ),
    Case(
        "docs-binary-beside-good",
        docs({"good.md": GOOD_DOC, "blob.txt": PNG}),
        code=0,
        llm=True,
        check=skipped_but_ran("blob.txt: binary"),
    ),
    Case(
        "docs-jsonl-bad-line-beside-good",
        docs({"c.jsonl": '{"text": "' + GOOD_DOC.replace("\n", " ") + '"}\n{oops\n'}),
        code=0,
        llm=True,
        check=skipped_but_ran("c.jsonl:2: invalid JSON"),
    ),
    Case(
        "docs-latin1-encoding",
        docs(
            {
                "menu.txt": (
                    "Crème brûlée is served at the café near the harbour. The café "
                    "opens at nine in the morning every day.\n"
                ).encode("latin-1")
            }
        ),
        code=0,
        llm=True,
        check=decoded_as_latin,
    ),
    # ---- graphs (self-kg --graph)
    Case("graph-missing-column", graph("g.tsv", TRIPLES + "rose\tfamily\n"), ("g.tsv:5",)),
    Case("graph-empty-field", graph("g.tsv", TRIPLES + "rose\t\tthorny\n"), ("g.tsv:5",)),
    Case("graph-empty-file", graph("g.tsv", b""), ("g.tsv",)),
    Case("graph-header-only", graph("g.tsv", "head\trelation\ttail\n"), ("g.tsv",)),
    Case("graph-binary", graph("g.tsv", PNG), ("g.tsv",)),
    Case(
        "graph-jsonl-bad-json", graph("g.jsonl", '{"head": "a", "relation": "r", "tail": "b"}\n{bad\n'), ("g.jsonl:2",)
    ),
    Case(
        "graph-jsonl-missing-relation",
        graph("g.jsonl", [{"head": "a", "relation": "r", "tail": "b"}, {"head": "a", "tail": "c"}]),
        ("g.jsonl:2", "relation"),
    ),
    Case(
        "graph-graphml-broken-xml", graph("g.graphml", "<graphml><graph><node id='a'/><edge source="), ("g.graphml",)
    ),
    Case("graph-gml-syntax", graph("g.gml", 'graph [ node [ id 0 label "a" ] edge [ source 0 target '), ("g.gml",)),
    Case(
        "graph-node-link-dangling-error",
        graph(
            "g.json",
            json.dumps(
                {
                    "directed": True,
                    "multigraph": True,
                    "graph": {},
                    "nodes": [{"id": "a"}],
                    "links": [{"source": "a", "target": "ghost", "relation": "knows"}],
                }
            ),
            "--dangling",
            "error",
        ),
        ("g.json", "ghost"),
    ),
    Case("graph-num-zero", graph("g.tsv", TRIPLES, "--num", "0"), ("--num",)),
    Case("graph-num-negative", graph("g.tsv", TRIPLES, "--num", "-5"), ("--num",)),
    Case("graph-missing-file", cli_args("self-kg", "--graph", "{tmp}/none.tsv", "--out", "{tmp}/out"), ("none.tsv",)),
    Case(
        "graph-labels-missing",
        cli_args("self-kg", "--graph", KG, "--labels", "{tmp}/labels.tsv", "--out", "{tmp}/out"),
        ("labels.tsv",),
    ),
    Case(
        "graph-out-under-a-file",
        cli_args("self-kg", "--graph", KG, "--num", "3", "--out", "{tmp}/afile/sub", files={"afile": "x"}),
        ("{tmp}/afile",),
    ),
    # legitimately not errors: cycles are fine, self-loops are dropped and counted
    Case(
        "graph-cycle",
        graph("g.tsv", "a\tnext\tb\nb\tnext\tc\nc\tnext\ta\na\tcolour\tred\nb\tcolour\tblue\n"),
        code=0,
        check=graph_ran(),
    ),
    Case(
        "graph-self-loops",
        graph("g.tsv", TRIPLES + "rose\tsimilar_to\trose\ntulip\tsimilar_to\ttulip\n"),
        code=0,
        check=graph_ran("self_loops_dropped", 2),
    ),
    # ---- configs (datagen run CONFIG)
    Case(
        "config-unknown-top-key", config(setitem("self_instrct", {})), ("unknown key 'self_instrct'", "self_instruct")
    ),
    Case(
        "config-unknown-section-key",
        config(setitem("self_instruct.num_instruction", 3)),
        ("unknown key 'num_instruction'",),
    ),
    Case(
        "config-wrong-type",
        config(setitem("self_instruct.num_instructions", "many")),
        ("self_instruct.num_instructions", "integer"),
    ),
    Case("config-negative-size", config(setitem("self_instruct.num_instructions", -3)), ("num_instructions",)),
    Case("config-negative-kg-num", config(setitem("self_kg", {"graph": KG, "num": -1})), ("self_kg.num",)),
    Case("config-negative-learning-rate", config(setitem("train", {"learning_rate": -0.1})), ("learning_rate",)),
    Case("config-threshold-out-of-range", config(setitem("filter", {"rouge_threshold": 2})), ("rouge_threshold",)),
    Case("config-bad-endpoint-scheme", config(setitem("endpoint.base_url", "ftp://example.org/v1")), ("base_url",)),
    Case("config-zero-concurrency", config(setitem("endpoint.concurrency", 0)), ("concurrency",)),
    Case(
        "config-yaml-syntax",
        config(raw="name: x\nself_instruct:\n  seeds: [unclosed\n"),
        ("run.yaml:", "invalid YAML"),
    ),
    Case("config-not-a-mapping", config(raw="- self_instruct\n- filter\n"), ("run.yaml", "mapping")),
    Case("config-empty-file", config(raw=b""), ("no stage is configured",)),
    Case("config-binary", config(raw=PNG), ("run.yaml",)),
    Case("config-missing-file", cli_args("run", "{tmp}/nothing.yaml"), ("nothing.yaml", "no such config file")),
    Case("config-seeds-missing", config(setitem("self_instruct.seeds", "{tmp}/nope.jsonl")), ("nope.jsonl",)),
    Case("config-docs-missing", config(setitem("self_qa", {"docs": "{tmp}/nodocs"})), ("nodocs",)),
    Case("config-graph-missing", config(setitem("self_kg", {"graph": "{tmp}/nograph.tsv"})), ("nograph.tsv",)),
    Case(
        "config-seeds-bad-line",
        config(setitem("self_instruct.seeds", "{tmp}/s.jsonl"), files={"s.jsonl": json.dumps(GOOD_SEED) + "\n{bad\n"}),
        ("s.jsonl:2",),
    ),
    Case("config-train-base-missing", config(setitem("train", {"base": "{tmp}/nomodel"})), ("nomodel",)),
    Case(
        "config-out-dir-under-a-file",
        config(setitem("out_dir", "{tmp}/afile/sub"), files={"afile": "x"}),
        ("{tmp}/afile",),
    ),
    Case("config-bad-name", config(setitem("name", "../escape")), ("name must be",)),
    Case(
        "config-override-type",
        config(overrides=("self_instruct.num_instructions=abc",)),
        ("self_instruct.num_instructions",),
    ),
    Case("config-override-not-key-value", config(overrides=("novalue",)), ("key=value",)),
    Case("config-override-into-scalar", config(overrides=("name.sub=1",)), ("'name' is not a section",)),
    # ---- other commands and flags
    Case(
        "flag-unknown-option",
        cli_args("self-instruct", "--seeds", SEEDS, "--out", "{tmp}/out", "--bogus"),
        ("--bogus",),
    ),
    Case("flag-zero-concurrency", seeds([GOOD_SEED], "--concurrency", "0"), ("--concurrency",)),
    Case("flag-negative-timeout", seeds([GOOD_SEED], "--timeout", "-1"), ("--timeout",)),
    Case("flag-negative-retries", seeds([GOOD_SEED], "--max-retries", "-1"), ("--max-retries",)),
    Case(
        "flag-bad-base-url",
        cli_args(
            "self-instruct",
            "--seeds",
            SEEDS,
            "--out",
            "{tmp}/out",
            "--base-url",
            "ftp://example.org/v1",
            "--model",
            "m",
        ),
        ("base_url",),
    ),
    Case("flag-no-endpoint", cli_args("self-instruct", "--seeds", SEEDS, "--out", "{tmp}/out"), ("no LLM endpoint",)),
    Case("filter-no-inputs", cli_args("filter", "--out", "{tmp}/out", "--no-embed-dedup"), ("input",)),
    Case(
        "filter-missing-input",
        cli_args("filter", "{tmp}/none.jsonl", "--out", "{tmp}/out", "--no-embed-dedup"),
        ("none.jsonl", "no such file"),
    ),
    Case(
        "filter-bad-line",
        cli_args(
            "filter",
            "{tmp}/in.jsonl",
            "--out",
            "{tmp}/out",
            "--no-embed-dedup",
            files={"in.jsonl": '{"instruction": "a b c d", "output": "x"}\n{"output": 1}\n'},
        ),
        ("in.jsonl:2",),
    ),
    Case(
        "filter-out-under-a-file",
        cli_args(
            "filter",
            "{tmp}/in.jsonl",
            "--out",
            "{tmp}/afile/sub",
            "--no-embed-dedup",
            files={"in.jsonl": [{"instruction": "Add two numbers together.", "output": "4"}], "afile": "x"},
        ),
        ("{tmp}/afile",),
    ),
    Case("train-missing-data", cli_args("train", "--data", "{tmp}/none.jsonl", "--out", "{tmp}/out"), ("none.jsonl",)),
    Case("train-bad-override", cli_args("train", "--data", SEEDS, "--out", "{tmp}/out", "lora_r=0"), ("lora_r",)),
    Case(
        "train-unknown-override",
        cli_args("train", "--data", SEEDS, "--out", "{tmp}/out", "lora_rank=8"),
        ("lora_rank",),
    ),
    Case("convert-bad-format", cli_args("convert", SEEDS, "{tmp}/out.jsonl", "--to", "xml"), ("--to",)),
    Case(
        "convert-dest-under-a-file",
        cli_args("convert", SEEDS, "{tmp}/afile/out.jsonl", "--to", "alpaca", files={"afile": "x"}),
        ("{tmp}/afile",),
    ),
    Case("inspect-missing", cli_args("inspect", "{tmp}/none.jsonl"), ("none.jsonl", "no such file")),
    Case("inspect-binary", cli_args("inspect", "{tmp}/x.jsonl", files={"x.jsonl": PNG}), ("x.jsonl:1",)),
    Case("export-not-a-run", cli_args("export", "{tmp}", "{tmp}/out.jsonl", "--to", "alpaca"), ("datagen run",)),
    Case("serve-port-out-of-range", cli_args("serve", "--port", "70000"), ("--port",)),
]


@pytest.fixture
def tmp(tmp_path):
    return tmp_path / "case"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_gives_a_clear_message_and_exit_2(case, tmp, fault_server, monkeypatch, record_property):
    """≥ 60 bad seeds, documents, graphs, configs and flags: exit 2, the file:line or key named, no traceback,
    no output left behind, no request sent; legitimate oddities (an empty document beside good ones, graph
    cycles and self-loops) run and report what was skipped."""
    tmp.mkdir()
    monkeypatch.chdir(tmp)  # anything written relative to the cwd lands here too
    fault_server.responder = responder()
    args = [a.replace(URL, fault_server.url) for a in case.build(tmp)]
    for path in tmp.rglob("*.yaml"):
        path.write_bytes(path.read_bytes().replace(URL.encode(), fault_server.url.encode()))
    before = {p for p in tmp.rglob("*")}
    result = CliRunner().invoke(cli, args)
    output = result.output
    record_property("tried", 1)
    assert "Traceback" not in output and "internal error" not in output, output
    assert result.exit_code == case.code, f"exit {result.exit_code}: {output}"
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    for fragment in case.expect:
        assert fragment.replace("{tmp}", str(tmp)) in output, output
    if case.check is not None:
        case.check(tmp, result)
        return
    message = output.strip().splitlines()
    assert message and len(message[-1]) < 2000
    created = {p for p in tmp.rglob("*")} - before
    leftovers = [p for p in created if p.name not in ("datagen-home",) and "datagen-home" not in p.parts]
    assert not leftovers, f"partial outputs left behind: {sorted(map(str, leftovers))}"
    assert not case.llm and fault_server.log == [], "an invalid input reached the endpoint"


# ---------------------------------------------------------------------------------------------- huge documents


def _fifty_mb_of_prose(path: Path) -> None:
    paragraph = (GOOD_DOC.replace("\n\n", " ") * 6).strip() + "\n\n"
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(50 * 1024 * 1024 // len(paragraph) + 1):
            handle.write(paragraph)


def _ten_mb_one_line(path: Path) -> None:
    path.write_text("basalt" * (10 * 1024 * 1024 // 6), encoding="utf-8")  # one 10 MB "word", no newline


@pytest.mark.parametrize(
    "make, seconds",
    [
        pytest.param(_fifty_mb_of_prose, 10, id="50MB-document"),
        pytest.param(_ten_mb_one_line, 10, id="10MB-single-line"),
    ],
)
def test_huge_documents_are_cut_into_bounded_prompts_quickly(make, seconds, fault_server, tmp_path, record_property):
    """A 50 MB document and a 10 MB document on one line: `self-qa --max-chunks 2` finishes within a time bound
    and no request it sends is over 1 MB (`datagen serve` answers bigger bodies with 413)."""
    import subprocess

    from tests.reliability._support import run_datagen, subprocess_env

    record_property("tried", 1)
    fault_server.responder = responder()
    (tmp_path / "docs").mkdir()
    make(tmp_path / "docs" / "huge.txt")
    try:
        result = run_datagen(
            "self-qa",
            "--docs",
            tmp_path / "docs",
            "--out",
            tmp_path / "out",
            "--base-url",
            fault_server.url,
            "--model",
            MODEL_ID,
            "--max-chunks",
            "2",
            "--questions-per-chunk",
            "1",
            env=subprocess_env(tmp_path / "home"),
            timeout=seconds,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"self-qa --max-chunks 2 did not finish within {seconds} s")
    assert result.returncode == 0, result.stderr
    biggest = max((len(json.dumps(e["body"])) for e in fault_server.log), default=0)
    assert biggest < 1_000_000, f"a {biggest:,}-byte request was sent"
