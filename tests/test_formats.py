"""Converters: every format reads back to the same examples it was written from."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.formats import EXPORT_FORMATS, export, read_any, read_seed_tasks, to_seed_tasks
from datagen.records import Example, write_jsonl

SINGLE = Example(
    instruction="Translate to French.",
    input="Good morning",
    output="Bonjour",
    meta={"method": "self-instruct", "round": 1},
)
NO_INPUT = Example(instruction="Name three primary colours.", output="Red, yellow and blue.")
CHAT = Example(
    instruction="Hi, what's 2+2?",
    output="4.",
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi, what's 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And times 3?"},
        {"role": "assistant", "content": "12."},
    ],
)


def conversation(example: Example) -> list[dict]:
    return example.conversation()


@pytest.mark.parametrize("fmt", ["datagen", "sharegpt", "messages", "hf", "parquet"])
def test_conversation_formats_roundtrip_the_conversation(tmp_path, fmt):
    out = tmp_path / ("data.parquet" if fmt == "parquet" else "data" if fmt == "hf" else "data.jsonl")
    assert export([SINGLE, NO_INPUT, CHAT], out, fmt).rows == 3
    back = read_any(out)
    assert [conversation(e) for e in back] == [conversation(e) for e in (SINGLE, NO_INPUT, CHAT)]
    assert back[2].messages == CHAT.messages and back[2].instruction == "Hi, what's 2+2?" and back[2].output == "4."


def test_datagen_and_hf_keep_ids_and_meta(tmp_path):
    for fmt, name in [("datagen", "d.jsonl"), ("hf", "ds")]:
        export([SINGLE], tmp_path / name, fmt)
        (back,) = read_any(tmp_path / name)
        assert back.id == SINGLE.id and back.meta == SINGLE.meta and back.input == "Good morning"


def test_alpaca_export_is_plain_alpaca(tmp_path):
    export([SINGLE, NO_INPUT], tmp_path / "a.jsonl", "alpaca")
    lines = [json.loads(l) for l in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert lines == [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name three primary colours.", "input": "", "output": "Red, yellow and blue."},
    ]
    assert [e.id for e in read_any(tmp_path / "a.jsonl")] == [SINGLE.id, NO_INPUT.id]


def test_sharegpt_uses_human_gpt_names(tmp_path):
    export([CHAT], tmp_path / "s.jsonl", "sharegpt")
    row = json.loads((tmp_path / "s.jsonl").read_text())
    assert [t["from"] for t in row["conversations"]] == ["human", "gpt", "human", "gpt"]
    assert row["system"] == "Be brief."  # LLaMA-Factory's sharegpt: the system prompt is a top-level column


def test_single_turn_messages_join_instruction_and_input():
    assert conversation(SINGLE)[0] == {"role": "user", "content": "Translate to French.\n\nGood morning"}


def test_seed_format_groups_instances_and_reads_back(tmp_path):
    examples = [SINGLE, Example(instruction="Translate to French.", input="Thank you", output="Merci"), NO_INPUT]
    tasks = to_seed_tasks(examples)
    assert len(tasks) == 2 and [i["output"] for i in tasks[0]["instances"]] == ["Bonjour", "Merci"]
    export(examples, tmp_path / "seed.jsonl", "seed")
    assert [(e.instruction, e.input, e.output) for e in read_any(tmp_path / "seed.jsonl")] == [
        (e.instruction, e.input, e.output) for e in examples
    ]
    assert read_seed_tasks(tmp_path / "seed.jsonl")[1]["id"] == "seed_task_1"


def test_public_self_instruct_seed_line_is_accepted_unchanged(tmp_path):
    # the shape of the original repository's seed_tasks.jsonl lines
    line = {
        "id": "seed_task_0",
        "name": "breakfast_suggestion",
        "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
        "instances": [{"input": "", "output": "Yes, oatmeal."}],
        "is_classification": False,
    }
    (tmp_path / "seeds.jsonl").write_text(json.dumps(line) + "\n")
    (task,) = read_seed_tasks(tmp_path / "seeds.jsonl")
    assert task == line
    (example,) = read_any(tmp_path / "seeds.jsonl")
    assert example.meta == {"method": "seed", "source": ["seed_task_0"], "name": "breakfast_suggestion"}


def test_mixed_formats_in_one_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(o)
            for o in [
                {"instruction": "a", "input": "", "output": "b"},
                {"messages": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
                {"conversations": [{"from": "human", "value": "e"}, {"from": "gpt", "value": "f"}]},
            ]
        )
        + "\n"
    )
    assert [(e.instruction, e.output) for e in read_any(path)] == [("a", "b"), ("c", "d"), ("e", "f")]


def test_convert_command_all_formats(tmp_path):
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [SINGLE, NO_INPUT])
    runner = CliRunner()
    for fmt in [f for f in EXPORT_FORMATS if f not in ("text", "preference")]:  # those two have own tests
        suffix = {"hf": "", "parquet": ".parquet", "alpaca-json": ".json"}.get(fmt, ".jsonl")
        dest = tmp_path / f"out-{fmt}{suffix}"
        result = runner.invoke(cli, ["convert", str(source), str(dest), "--to", fmt])
        assert result.exit_code == 0, result.output
        assert "wrote 2" in result.output
        assert [e.output for e in read_any(dest)] == ["Bonjour", "Red, yellow and blue."]


def test_convert_rejects_unknown_format(tmp_path):
    result = CliRunner().invoke(cli, ["convert", "a", "b", "--to", "csv"])
    assert result.exit_code == 2 and "Invalid value for '--to'" in result.output
