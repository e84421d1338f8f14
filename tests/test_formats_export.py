"""Exports other tools read as they are (issue 20, "Data out"): lossless round trips, typed HF datasets that
trl trains on, a folder datasets and LLaMA-Factory both load, and the new formats."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from datagen.cli import cli
from datagen.formats import export, read_any
from datagen.records import Example, write_jsonl

MULTI = Example(
    instruction="What is 2+2?",
    output="4.",
    lang="en",
    is_classification=False,
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And times 3?"},
        {"role": "assistant", "content": "12."},
        {"role": "user", "content": "Minus 2?"},
        {"role": "assistant", "content": "10."},
    ],
    meta={"method": "self-instruct-multiturn", "round": 2, "source": ["seed_task_3"]},
)
SYSTEM_SINGLE = Example(
    instruction="Translate to French.",
    input="Good morning",
    output="Bonjour",
    lang="en",
    messages=[
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "Translate to French.\n\nGood morning"},
        {"role": "assistant", "content": "Bonjour"},
    ],
)
PLAIN = Example(
    instruction="Name a colour.",
    output="Blue.",
    is_classification=True,
    lang="en",
    meta={"method": "seed", "usage": {"prompt_tokens": 3}},
)
ZH = Example(instruction="说出一种水果。", output="苹果。", lang="zh", meta={"method": "self-qa", "source": "doc.md"})
ALL = [MULTI, SYSTEM_SINGLE, PLAIN, ZH]


def _content(example: Example) -> tuple:
    """What every conversation format must keep: the text, the conversation and the id derived from them.

    A single user/assistant exchange is the same record with or without its ``messages`` spelled out."""
    single = Example(instruction=example.instruction, input=example.input, output=example.output).conversation()
    messages = None if example.messages == single else example.messages
    return example.instruction, example.input, example.output, messages, example.id


@pytest.mark.parametrize(
    "fmt, name",
    [("alpaca", "a.jsonl"), ("alpaca-json", "alpaca_data.json"), ("sharegpt", "s.jsonl"), ("messages", "m.jsonl")],
)
def test_multi_turn_with_system_round_trips(tmp_path, fmt, name):
    """alpaca (system + history), sharegpt (top-level system), messages: export then read gives equal records."""
    result = export(ALL, tmp_path / name, fmt)
    back = read_any(tmp_path / name)
    if fmt in ("sharegpt", "messages"):  # a chat turn joins instruction and input: said, and read back joined
        assert result.dropped["instruction/input split (joined in the user turn)"] == 1
        expected = (
            ALL[:1]
            + [
                Example(
                    instruction=SYSTEM_SINGLE.messages[1]["content"],
                    output="Bonjour",
                    messages=SYSTEM_SINGLE.messages,
                    id=SYSTEM_SINGLE.id,
                )
            ]
            + ALL[2:]
        )
    else:
        expected = ALL
    assert [_content(e) for e in back] == [_content(e) for e in expected]


@pytest.mark.parametrize("fmt, name", [("datagen", "d.jsonl"), ("hf", "ds"), ("parquet", "d.parquet")])
def test_lossless_formats_keep_every_field(tmp_path, fmt, name):
    """datagen, hf and parquet keep meta, lang and is_classification too: records come back equal."""
    result = export(ALL, tmp_path / name, fmt)
    assert read_any(tmp_path / name) == ALL
    assert result.rows == 4


def test_alpaca_writes_llama_factory_system_and_history(tmp_path):
    export([MULTI], tmp_path / "a.jsonl", "alpaca")
    row = json.loads((tmp_path / "a.jsonl").read_text())
    assert row == {
        "instruction": "Minus 2?",
        "input": "",
        "output": "10.",
        "system": "Be brief.",
        "history": [["What is 2+2?", "4."], ["And times 3?", "12."]],
    }


def test_sharegpt_system_and_tool_roles_are_kept_on_read(tmp_path):
    """A top-level sharegpt system and function_call/observation turns survive reading and writing back."""
    line = {
        "system": "You can call tools.",
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "gpt", "value": "21 degrees."},
        ],
    }
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (example,) = read_any(path)
    assert [m["role"] for m in example.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert example.messages[0]["content"] == "You can call tools."
    export([example], tmp_path / "out.jsonl", "sharegpt")
    again = json.loads((tmp_path / "out.jsonl").read_text())
    assert again["system"] == line["system"] and again["conversations"] == line["conversations"]


def test_an_export_that_drops_something_says_what_and_how_many(tmp_path):
    """alpaca cannot hold meta, lang, is_classification or tool turns: each loss is counted and printed."""
    source = tmp_path / "in.jsonl"
    write_jsonl(source, ALL)
    result = export(ALL, tmp_path / "a.jsonl", "alpaca")
    assert result.dropped == {"meta (provenance)": 3, "lang": 4, "is_classification": 2}
    cli_result = CliRunner().invoke(cli, ["convert", str(source), str(tmp_path / "b.jsonl"), "--to", "alpaca"])
    assert cli_result.exit_code == 0
    assert "dropped: meta (provenance) on 3 record(s)" in cli_result.output
    assert "dropped: lang on 4 record(s)" in cli_result.output
    assert export(ALL, tmp_path / "d.jsonl", "datagen").dropped == {}


def test_hf_schema_is_explicit(tmp_path):
    """messages is list<struct<role, content>> even with no multi-turn record; typed columns; meta a struct."""
    import datasets

    export([PLAIN], tmp_path / "ds", "hf")
    features = datasets.load_from_disk(str(tmp_path / "ds"))["train"].features
    assert features["messages"] == datasets.List(
        {"role": datasets.Value("string"), "content": datasets.Value("string")}
    )
    assert features["is_classification"] == datasets.Value("bool") and features["lang"] == datasets.Value("string")
    assert features["meta"]["usage"]["prompt_tokens"] == datasets.Value("int64")
    export([PLAIN], tmp_path / "nometa.parquet", "parquet", meta="drop")
    assert "meta" not in datasets.Dataset.from_parquet(str(tmp_path / "nometa.parquet")).column_names


def test_hf_folder_loads_with_load_dataset_load_from_disk_and_llama_factory_entries(tmp_path):
    import datasets

    dest = tmp_path / "ds"
    export(
        ALL,
        dest,
        "hf",
        card={
            "license": "cc-by-4.0",
            "seeds": {"self_instruct.seeds": "seeds/seed_tasks.jsonl"},
            "filter": {"records_in": 10, "kept": 4, "rejected": 6},
        },
    )
    loaded = datasets.load_dataset(str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 4 and loaded[0]["messages"] == MULTI.messages
    assert datasets.load_from_disk(str(dest))["train"].num_rows == 4

    # LLaMA-Factory's dataset_info.json: its documented keys, files that exist, columns that exist in them.
    info = json.loads((dest / "dataset_info.json").read_text())
    documented = {
        "hf_hub_url",
        "ms_hub_url",
        "script_url",
        "file_name",
        "file_sha1",
        "subset",
        "folder",
        "ranking",
        "formatting",
        "columns",
        "tags",
        "split",
        "num_samples",
    }
    columns_keys = {
        "prompt",
        "query",
        "response",
        "history",
        "messages",
        "system",
        "tools",
        "images",
        "videos",
        "audios",
        "chosen",
        "rejected",
        "kto_tag",
    }
    tag_keys = {
        "role_tag",
        "content_tag",
        "user_tag",
        "assistant_tag",
        "observation_tag",
        "function_tag",
        "system_tag",
    }
    assert set(info) == {"datagen_sharegpt", "datagen_alpaca"}
    for entry in info.values():
        assert set(entry) <= documented and entry["formatting"] in ("alpaca", "sharegpt")
        assert set(entry["columns"]) <= columns_keys and set(entry.get("tags", {})) <= tag_keys
        assert (dest / entry["file_name"]).is_file()
    sharegpt = info["datagen_sharegpt"]
    rows = datasets.load_dataset(
        "arrow", data_files=str(dest / sharegpt["file_name"]), split="train", cache_dir=str(tmp_path / "cache")
    )
    first = rows[0][sharegpt["columns"]["messages"]]
    assert first[0][sharegpt["tags"]["role_tag"]] == sharegpt["tags"]["system_tag"]
    assert first[1][sharegpt["tags"]["role_tag"]] == sharegpt["tags"]["user_tag"]
    alpaca = json.loads((dest / info["datagen_alpaca"]["file_name"]).read_text())
    assert all(set(info["datagen_alpaca"]["columns"].values()) <= set(row) for row in alpaca)
    assert alpaca[0]["history"] == [["What is 2+2?", "4."], ["And times 3?", "12."]]

    card = (dest / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "cc-by-4.0" and header["language"] == ["en", "zh"]
    assert header["size_categories"] == ["n<1K"]
    assert "seeds/seed_tasks.jsonl" in card and "kept: 4" in card and "self-instruct-multiturn" in card


def test_trl_sft_trainer_trains_one_step_on_the_hf_and_parquet_exports(tmp_path, tiny_model_dir):
    """The typed export is what trl expects: SFTTrainer runs a step on the messages column."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export(ALL, tmp_path / "ds", "hf")
    export(ALL, tmp_path / "d.parquet", "parquet")
    cache = str(tmp_path / "cache")
    for dataset in (
        datasets.load_dataset(str(tmp_path / "ds"), split="train", cache_dir=cache),
        datasets.load_dataset("parquet", data_files=str(tmp_path / "d.parquet"), split="train", cache_dir=cache),
    ):
        assert dataset.num_rows == 4
        trainer = trl.SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
            processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
            train_dataset=dataset,
            args=trl.SFTConfig(
                output_dir=str(tmp_path / "sft"),
                max_steps=1,
                per_device_train_batch_size=2,
                report_to=[],
                use_cpu=True,
                save_strategy="no",
                max_length=64,
                logging_steps=1,
            ),
        )
        result = trainer.train()
        assert result.global_step == 1 and result.training_loss > 0


def test_prompt_completion_and_text_formats(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    export(ALL, tmp_path / "pc.jsonl", "prompt-completion")
    rows = [json.loads(line) for line in (tmp_path / "pc.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == MULTI.messages[:-1] and rows[0]["completion"] == [MULTI.messages[-1]]
    assert read_any(tmp_path / "pc.jsonl")[0].messages == MULTI.messages

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def render(messages: list[dict[str, str]]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False)

    export(ALL, tmp_path / "t.jsonl", "text", chat_template=render)
    texts = [json.loads(line)["text"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert texts[0] == render(MULTI.messages) and "<|im_start|>system\nBe brief." in texts[0]


def test_alpaca_data_json_is_one_array(tmp_path):
    export([PLAIN, MULTI], tmp_path / "alpaca_data.json", "alpaca-json")
    rows = json.loads((tmp_path / "alpaca_data.json").read_text())
    assert isinstance(rows, list) and rows[0] == {"instruction": "Name a colour.", "input": "", "output": "Blue."}


def test_preference_pairs_kept_against_rejected_answers_to_one_prompt(tmp_path):
    """A pair exists only where one prompt has a kept and a (different) rejected answer; the rest is counted."""
    kept = [PLAIN, ZH]
    bad = Example(instruction="Name a colour.", output="Colour.", reject={"stage": "judge", "reason": "low_score"})
    unrelated = Example(instruction="Other?", output="x", reject={"stage": "heuristics", "reason": "too_short"})
    source, rejects = tmp_path / "curated.jsonl", tmp_path / "rejects.jsonl"
    write_jsonl(source, kept)
    write_jsonl(rejects, [bad, unrelated])
    result = CliRunner().invoke(
        cli, ["convert", str(source), str(tmp_path / "p.jsonl"), "--to", "preference", "--rejected", str(rejects)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 1 pairs" in result.output and "on 1 record(s)" in result.output
    (pair,) = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert pair["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert pair["chosen"][0]["content"] == "Blue." and pair["rejected"][0]["content"] == "Colour."
    assert pair["rejected_reason"] == "low_score"
    missing = CliRunner().invoke(cli, ["convert", str(source), str(tmp_path / "q.jsonl"), "--to", "preference"])
    assert missing.exit_code == 2 and "rejected" in missing.output


def test_export_of_a_run_writes_its_seeds_and_filter_figures_into_the_card(tmp_path):
    run = tmp_path / "run"
    write_jsonl(run / "filter" / "curated.jsonl", ALL)
    write_jsonl(run / "filter" / "rejects.jsonl", [])
    (run / "filter" / "filter_stats.json").write_text(
        json.dumps({"records_in": 9, "kept": 4, "rejected": 5, "rejects_by_reason": {"too_short": 5}})
    )
    (run / "manifest.json").write_text(
        json.dumps(
            {
                "name": "run",
                "config": {
                    "self_instruct": {"seeds": "seeds/seed_tasks.jsonl", "seed": 13},
                    "self_qa": {"docs": "seeds/docs"},
                },
            }
        )
    )
    result = CliRunner().invoke(cli, ["export", str(run), str(tmp_path / "ds"), "--to", "hf", "--license", "mit"])
    assert result.exit_code == 0, result.output
    card = (tmp_path / "ds" / "README.md").read_text()
    assert yaml.safe_load(card.split("---\n")[1])["license"] == "mit"
    for fact in (
        "self_instruct.seeds: seeds/seed_tasks.jsonl",
        "self_qa.docs: seeds/docs",
        "self_instruct.seed: 13",
        "records_in: 9",
        "kept: 4",
        '"too_short": 5',
    ):
        assert fact in card, fact


def test_convert_to_text_with_a_tokenizer(tmp_path, tiny_model_dir):
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [MULTI])
    result = CliRunner().invoke(
        cli, ["convert", str(source), str(tmp_path / "t.jsonl"), "--to", "text", "--tokenizer", str(tiny_model_dir)]
    )
    assert result.exit_code == 0, result.output
    text = json.loads((tmp_path / "t.jsonl").read_text())["text"]
    assert (
        text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "<|im_start|>assistant\n10.<|im_end|>" in text
    )


def test_load_dataset_never_serves_a_stale_cache_after_a_re_export(tmp_path):
    """datasets caches a folder by its name and data file names: the data file is named by its content."""
    import datasets

    cache = str(tmp_path / "cache")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    export([PLAIN], tmp_path / "a" / "ds", "hf")
    export(ALL, tmp_path / "b" / "ds", "hf")
    assert datasets.load_dataset(str(tmp_path / "a" / "ds"), split="train", cache_dir=cache).num_rows == 1
    assert datasets.load_dataset(str(tmp_path / "b" / "ds"), split="train", cache_dir=cache).num_rows == 4
    export(ALL[:2], tmp_path / "a" / "ds", "hf", overwrite=True)
    assert datasets.load_dataset(str(tmp_path / "a" / "ds"), split="train", cache_dir=cache).num_rows == 2
    assert datasets.load_from_disk(str(tmp_path / "a" / "ds"))["train"].num_rows == 2


def test_seed_export_says_it_keeps_only_the_first_exchange(tmp_path):
    result = export(ALL, tmp_path / "seed.jsonl", "seed")
    assert result.dropped["system prompt and turns after the first exchange (seed tasks are single-turn)"] == 2
    assert result.dropped["meta (provenance)"] == 3 and "is_classification" not in result.dropped
