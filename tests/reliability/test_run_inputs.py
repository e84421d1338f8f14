"""Issue 18, items 3 and 4: what a run reads decides whether ``--resume`` may skip a stage, and a run never reads
its own outputs.

3. A glob ``docs:`` is fingerprinted by the files it matches now (path, size, content), not by its text: a
   document added, edited or removed makes ``--resume`` run Self-QA again; an unchanged tree still skips it.
4. An ``out_dir`` inside the folder (or glob) a stage reads is refused before anything runs (exit 2, both named):
   refused rather than silently excluded, so which files a run reads is always what its config says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from datagen.cli import cli
from tests.plugins.faults import MODEL_ID
from tests.reliability._support import responder

DOCS = {
    "volcano.md": "Volcanoes form where magma rises through the crust. Lava that cools quickly becomes basalt rock.\n",
    "lake.md": "Crater Lake in Oregon fills a caldera that formed when Mount Mazama collapsed long ago.\n",
}
NEW_DOC = "Glaciers carve U-shaped valleys as they slowly move downhill under their own enormous weight.\n"


def _config(tmp: Path, url: str, docs: str, out_dir: Path) -> Path:
    config = {
        "name": "r",
        "out_dir": str(out_dir),
        "endpoint": {"base_url": url, "model": MODEL_ID, "cache_path": str(tmp / "cache.sqlite"), "max_retries": 0},
        "self_qa": {"docs": docs, "questions_per_chunk": 1},
    }
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *map(str, args)])
    return result.exit_code, result.output


def _sources(run_dir: Path) -> set[str]:
    rows = [json.loads(line) for line in (run_dir / "self_qa" / "records.jsonl").read_text().splitlines()]
    return {str(row["meta"].get("source")) for row in rows}


def test_glob_docs_added_document_reruns_the_stage_on_resume(tmp_path, fault_server, record_property):
    """#3: A run with `docs: <folder>/*.md`; then a document is added to the folder and the run resumed: Self-QA
    runs again and the new document's questions are in the records (it used to be skipped as done). Resumed
    again with nothing changed: skipped. Then a document edited: runs again."""
    fault_server.responder = responder()
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    config = _config(tmp_path, fault_server.url, f"{docs}/*.md", tmp_path / "out")
    run_dir = tmp_path / "out" / "r"
    code, output = _run(config)
    assert code == 0, output
    assert not any("glacier" in s for s in _sources(run_dir)), _sources(run_dir)

    (docs / "glacier.md").write_text(NEW_DOC, encoding="utf-8")
    code, output = _run(config, "--resume")
    assert code == 0, output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert not manifest["stages"]["self_qa"].get("skipped"), "a new document was ignored: the stage was skipped"
    assert any("glacier" in s for s in _sources(run_dir)), _sources(run_dir)

    requests = len(fault_server.log)
    code, output = _run(config, "--resume")
    assert code == 0, output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["self_qa"].get("skipped") is True
    assert len(fault_server.log) == requests, "an unchanged run sent requests on resume"

    (docs / "lake.md").write_text(DOCS["lake.md"].replace("Oregon", "the Cascade Range of Oregon"), encoding="utf-8")
    code, output = _run(config, "--resume")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert code == 0 and not manifest["stages"]["self_qa"].get("skipped"), output
    record_property("tried", 4)
    record_property("detail", "added doc → re-run; unchanged → skipped, 0 requests; edited doc → re-run")


@pytest.mark.parametrize("layout", ["folder", "glob", "nested-out-dir"])
def test_out_dir_inside_docs_is_refused(layout, tmp_path, fault_server, record_property):
    """#4: `out_dir` inside the `docs:` folder (given as a folder, as a glob, or two levels down): exit 2 naming both,
    before any request or folder is made (the run used to read its own report and records as documents)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    spec = {"folder": str(docs), "glob": f"{docs}/**/*.md", "nested-out-dir": str(docs)}[layout]
    out_dir = docs / "runs" / "x" if layout == "nested-out-dir" else docs / "out"
    config = _config(tmp_path, fault_server.url, spec, out_dir)
    code, output = _run(config)
    assert code == 2, output
    assert "out_dir" in output and "self_qa.docs" in output and str(docs) in output, output
    assert not (docs / "out").exists() and not (docs / "runs").exists()
    assert fault_server.log == []
    record_property("detail", output.strip().splitlines()[-1].replace(f"{tmp_path}/", "")[:160])
