"""`datagen inspect` and `datagen export`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from datagen.cli import cli
from datagen.formats import read_any
from datagen.records import Example, write_jsonl


def test_inspect_counts_languages_methods_and_lengths(tmp_path):
    path = tmp_path / "d.jsonl"
    write_jsonl(
        path,
        [
            Example(instruction="Name a colour please.", output="Blue.", meta={"method": "self-qa"}),
            Example(instruction="写一首关于秋天的诗。", input="五言", output="秋风起", meta={"method": "self-kg"}),
            Example(instruction="Add these.", input="2 3", output="5", is_classification=True),
        ],
    )
    result = CliRunner().invoke(cli, ["inspect", str(path), "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert f"{path}: 3 records" in result.output
    assert "self-qa 1" in result.output and "self-kg 1" in result.output and "unknown 1" in result.output
    assert "en 2" in result.output and "zh 1" in result.output
    assert "with input: 2, multi-turn: 0, classification: 1" in result.output
    assert result.output.count("  instruction: ") == 2


def test_inspect_bad_file_exit_2(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{nope\n")
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 2 and f"{path}:1:" in result.output


def test_export_prefers_curated_and_converts(tmp_path):
    run = tmp_path / "run"
    write_jsonl(
        run / "self_qa" / "records.jsonl",
        [Example(instruction="q1", output="a1"), Example(instruction="q2", output="a2")],
    )
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(run), str(tmp_path / "gen.jsonl"), "--to", "alpaca"])
    assert result.exit_code == 0 and "wrote 2 records from 1 file(s)" in result.output
    write_jsonl(run / "filter" / "curated.jsonl", [Example(instruction="q1", output="a1")])
    result = runner.invoke(cli, ["export", str(run), str(tmp_path / "cur.jsonl"), "--to", "sharegpt"])
    assert result.exit_code == 0
    rows = [json.loads(l) for l in (tmp_path / "cur.jsonl").read_text().splitlines()]
    assert rows == [
        {
            "id": Example(instruction="q1", output="a1").id,
            "conversations": [{"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"}],
        }
    ]
    result = runner.invoke(cli, ["export", str(run), str(tmp_path / "ds"), "--to", "hf"])
    assert result.exit_code == 0 and [e.output for e in read_any(tmp_path / "ds")] == ["a1"]


def test_export_of_a_non_run_folder_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tmp_path), str(tmp_path / "x.jsonl"), "--to", "alpaca"])
    assert result.exit_code == 2 and "is it a `datagen run` output folder" in result.output
