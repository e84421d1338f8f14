"""Issue 18.1: `convert`/`export` never delete what they did not create.

Pointed at an existing folder — a run, its own input, a folder of the user's files — the old code removed it
recursively and exited 0. Now an existing non-empty DEST is refused (exit 2, nothing touched) unless
`--overwrite`, and even then a folder holding the input or a run, or one that is not our own dataset folder,
is refused. Output is built in a temporary sibling and renamed, so DEST is whole or untouched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.records import Example, write_jsonl

RECORDS = [Example(instruction="Name a colour.", output="Blue."), Example(instruction="Name a fruit.", output="Pear.")]


def _tree(path: Path) -> dict[str, str]:
    """Every file under ``path`` with its content hash: what must be unchanged after a refused export."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _run_folder(tmp: Path) -> Path:
    run = tmp / "run"
    write_jsonl(run / "filter" / "curated.jsonl", RECORDS)
    (run / "filter" / ".done.json").write_text("{}")
    (run / "manifest.json").write_text('{"name": "run", "config": {}}')
    return run


def _invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("command", ["export", "convert"])
@pytest.mark.parametrize("to", ["hf", "parquet", "alpaca", "sharegpt"])
def test_an_existing_destination_is_refused_and_left_untouched(tmp_path, command, to, record_property):
    """An existing DEST (a folder of user files, or a file) is refused with exit 2 and not touched."""
    run = _run_folder(tmp_path)
    source = run if command == "export" else run / "filter" / "curated.jsonl"
    user = tmp_path / "precious"
    (user / "sub").mkdir(parents=True)
    (user / "thesis.tex").write_text("years of work")
    (user / "sub" / "data.csv").write_text("1,2,3")
    single = tmp_path / "notes.jsonl"
    single.write_text("mine\n")
    for dest in (user, single):
        before = _tree(tmp_path)
        result = _invoke(command, source, dest, "--to", to)
        assert result.exit_code == 2, result.output
        assert "already exists" in result.output and "--overwrite" in result.output
        assert _tree(tmp_path) == before
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    record_property("tried", 2)


@pytest.mark.parametrize("command", ["export", "convert"])
def test_overwrite_never_replaces_the_input_or_a_run(tmp_path, command):
    """Even with --overwrite: the run folder itself, a folder above the input, a user folder: refused."""
    run = _run_folder(tmp_path)
    source = run if command == "export" else run / "filter" / "curated.jsonl"
    user = tmp_path / "precious"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    before = _tree(tmp_path)
    for dest, says in [
        (run, "holds the input"),
        (run / "filter", "holds the input"),
        (tmp_path, "holds the input"),
        (user, "not a dataset folder"),
    ]:
        result = _invoke(command, source, dest, "--to", "hf", "--overwrite")
        assert result.exit_code == 2, (dest, result.output)
        assert says in result.output, result.output
        assert _tree(tmp_path) == before
    other_run = _run_folder(tmp_path / "elsewhere")
    result = _invoke("convert", run / "filter" / "curated.jsonl", other_run, "--to", "hf", "--overwrite")
    assert result.exit_code == 2 and "run folder" in result.output
    assert (other_run / "manifest.json").exists()


def test_overwrite_replaces_our_own_export_whole(tmp_path):
    """--overwrite replaces a dataset folder an earlier export wrote, and nothing else is left around it."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, RECORDS)
    dest = tmp_path / "ds"
    assert _invoke("convert", source, dest, "--to", "hf").exit_code == 0
    write_jsonl(source, RECORDS[:1])
    again = _invoke("convert", source, dest, "--to", "hf")
    assert again.exit_code == 2 and "--overwrite" in again.output
    result = _invoke("convert", source, dest, "--to", "hf", "--overwrite")
    assert result.exit_code == 0, result.output
    from datagen.formats import read_any

    assert [e.output for e in read_any(dest)] == ["Blue."]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in.jsonl"]


def test_an_empty_folder_is_a_fine_destination(tmp_path):
    """An empty folder (made by `mkdir` beforehand) is filled, not refused."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, RECORDS)
    (tmp_path / "ds").mkdir()
    assert _invoke("convert", source, tmp_path / "ds", "--to", "hf").exit_code == 0
    assert (tmp_path / "ds" / "dataset_dict.json").exists()


def test_a_failed_export_leaves_no_partial_output(tmp_path, monkeypatch):
    """A crash while writing the folder leaves DEST absent and no staging folder beside it."""
    from datagen import hfexport

    source = tmp_path / "in.jsonl"
    write_jsonl(source, RECORDS)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hfexport, "dataset_card", broken)
    result = _invoke("convert", source, tmp_path / "ds", "--to", "hf")
    assert result.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
