"""The filter stage end to end: stage order, exact and ROUGE-L dedup, keep policies, the LLM judge, the CLI.

Every test checks the stage's contract, |in| = |curated| + |rejects|, through `run_filtered` or
`assert_invariant` (which the heuristics and embedding tests import from here).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import ConfigError, RecordError
from datagen.filter.pipeline import FilterConfig, load_config, run_filter, similarity_text
from datagen.formats import read_any
from datagen.records import Example, read_examples, write_jsonl
from tests.plugins.faults import MODEL_ID

#: The cheap stages only: no model is loaded.
NO_EMBED = {"embed_dedup": False}


def assert_invariant(inputs: list[Path], out: Path, stats: dict | None = None) -> tuple[list[Example], list[Example]]:
    """Read OUT's curated and rejects files and check that they hold exactly the input records, once each."""
    records = [e for path in inputs for e in read_any(path)]
    curated = read_examples(out / "curated.jsonl")
    rejects = read_examples(out / "rejects.jsonl")
    assert len(curated) + len(rejects) == len(records)
    assert Counter(e.id for e in curated) + Counter(e.id for e in rejects) == Counter(e.id for e in records)
    assert all(r.reject and r.reject["stage"] and r.reject["reason"] for r in rejects)
    assert all(e.reject is None for e in curated)
    stats = stats or json.loads((out / "filter_stats.json").read_text())
    assert stats["records_in"] == len(records)
    assert (stats["curated"], stats["rejected"]) == (len(curated), len(rejects))
    assert sum(s.get("rejected", 0) for s in stats["stages"].values()) == len(rejects)
    return curated, rejects


def run_filtered(tmp_path: Path, records: list, **overrides) -> tuple[list[Example], list[Example], dict]:
    """Filter `records` (Examples or dicts) with config `overrides`; return curated, rejects and stats."""
    path = tmp_path / "in.jsonl"
    write_jsonl(path, records)
    out = tmp_path / "out"
    stats = asyncio.run(run_filter(FilterConfig(inputs=(path,), out=out, **overrides)))
    curated, rejects = assert_invariant([path], out, stats)
    return curated, rejects, stats


def ex(
    instruction: str, output: str = "A complete and helpful answer to the request.", input: str = "", **meta
) -> Example:
    return Example(instruction=instruction, input=input, output=output, meta=meta)


def by_instruction(examples: list[Example]) -> dict[str, Example]:
    return {e.instruction: e for e in examples}


# ---------------------------------------------------------------------------------------------- exact dedup


def test_exact_dedup_folds_case_whitespace_punctuation_and_width(tmp_path):
    records = [
        ex("Explain how vaccines train the immune system."),
        ex("explain   how vaccines train the immune system"),
        ex("Explain how vaccines train the immune system!!"),
        ex("Ｅｘｐｌａｉｎ ｈｏｗ ｖａｃｃｉｎｅｓ ｔｒａｉｎ ｔｈｅ ｉｍｍｕｎｅ ｓｙｓｔｅｍ．"),
        ex(
            "解释疫苗如何训练免疫系统。",
            "疫苗让免疫系统提前认识病原体，产生记忆细胞，之后真正感染时能更快地清除病原体。",
        ),
        ex(
            "解释疫苗如何训练免疫系统",
            "疫苗让免疫系统提前认识病原体，产生记忆细胞，之后真正感染时能更快地清除病原体。",
        ),
        ex(
            "解释疫苗如何训练免疫系统？",
            "疫苗让免疫系统提前认识病原体，产生记忆细胞，之后真正感染时能更快地清除病原体。",
        ),
        ex("Explain how vaccines train the immune system.", input="For a ten-year-old."),  # another prompt
    ]
    curated, rejects, stats = run_filtered(tmp_path, records, heuristics=False, rouge_dedup=False, **NO_EMBED)
    assert [e.instruction for e in curated] == [records[0].instruction, records[4].instruction, records[7].instruction]
    assert {r.reject["reason"] for r in rejects} == {"exact_duplicate"}
    assert all(r.reject["stage"] == "exact_dedup" and r.reject["score"] == 1.0 for r in rejects)
    assert [r.reject["duplicate_of"] for r in rejects] == [records[0].id] * 3 + [records[4].id] * 2
    assert stats["stages"]["exact_dedup"]["reasons"] == {"exact_duplicate": 5}


@pytest.mark.parametrize("keep, winner", [("first", 0), ("longest_output", 1), ("heuristic_score", 2)])
def test_keep_policy_picks_the_survivor_of_a_duplicate_group(tmp_path, keep, winner):
    long_repetitive = ("Water is good. " * 30).strip()  # longest, but heavily repeated
    rich = (
        "Drink water with every meal, keep a bottle on your desk, and eat fruit such as melon and "
        "oranges, which are mostly water. Thirst is a late signal, so sip regularly through the day, "
        "more in hot weather or when you exercise."
    )
    records = [
        ex("How can I drink more water each day?", "Drink more."),
        ex("How can I drink more water each day?", long_repetitive),
        ex("how can I drink more water each day", rich),
    ]
    curated, rejects, _ = run_filtered(
        tmp_path, records, keep=keep, skip_rules=("repetition", "short_open_answer"), **NO_EMBED
    )
    assert [e.id for e in curated] == [records[winner].id]
    assert {r.reject["duplicate_of"] for r in rejects} == {records[winner].id}
    assert all(r.reject["stage"] == "exact_dedup" for r in rejects)


def test_keep_policy_applies_to_rouge_groups_too(tmp_path):
    records = [
        ex("Write a short poem about the sea.", "Waves."),
        ex(
            "Write a short poem about the blue sea.",
            "The sea rolls in with silver light,\nit hums to sand and stone all night,\n"
            "and every tide that leaves the shore\ncomes back to sing the song once more.",
        ),
    ]
    curated, rejects, _ = run_filtered(
        tmp_path, records, keep="longest_output", skip_rules=("short_open_answer",), **NO_EMBED
    )
    assert [e.id for e in curated] == [records[1].id]
    assert rejects[0].reject["reason"] == "rouge_near_duplicate" and rejects[0].reject["duplicate_of"] == records[1].id


# ---------------------------------------------------------------------------------------------- ROUGE-L


ZH_SEEDS = Path(__file__).resolve().parents[2] / "seeds" / "seed_tasks.zh.jsonl"


def zh_seed_instructions() -> list[str]:
    return [json.loads(line)["instruction"] for line in ZH_SEEDS.read_text(encoding="utf-8").splitlines() if line]


def test_rouge_stage_drops_english_and_chinese_near_duplicates(tmp_path):
    records = [
        ex("Give three tips for staying healthy."),
        ex("Give 3 tips for staying healthy and fit."),  # ROUGE-L 0.714 vs the first
        ex("Write a short poem about the sea."),
        ex("写一首关于大海的诗。", "蔚蓝的大海轻轻摇晃，浪花把月光揉成碎银。"),
        ex("写一首关于大海的短诗。", "海风吹过礁石，潮水一遍遍吟唱古老的歌。"),  # rouge 0.95 vs the one before
        ex("解释光合作用的过程。", "植物利用光能，把二氧化碳和水合成有机物，并释放出氧气。"),
    ]
    curated, rejects, stats = run_filtered(tmp_path, records, **NO_EMBED)
    assert [e.id for e in curated] == [records[i].id for i in (0, 2, 3, 5)]
    assert [(r.id, r.reject["duplicate_of"]) for r in rejects] == [
        (records[1].id, records[0].id),
        (records[4].id, records[3].id),
    ]
    assert all(r.reject["stage"] == "rouge_dedup" and r.reject["score"] >= 0.7 for r in rejects)
    assert rejects[1].reject["score"] == pytest.approx(0.9474, abs=1e-4)
    assert stats["stages"]["rouge_dedup"]["rejected"] == 2


def test_rouge_stage_keeps_distinct_chinese_instructions(tmp_path):
    instructions = zh_seed_instructions()
    assert len(instructions) >= 60
    records = [ex(text, "这是一个完整、有帮助的回答，内容准确。") for text in instructions]
    curated, rejects, _ = run_filtered(tmp_path, records, heuristics=False, **NO_EMBED)
    assert rejects == [] and len(curated) == len(records)


def test_instances_of_one_task_stay_together(tmp_path):
    """Self-Instruct writes one record per instance: same instruction, different inputs. They are one unit."""
    task = "Classify the sentiment of the review as positive or negative."
    records = [
        ex(task, "Positive", input="I loved every minute of it."),
        ex(task, "Negative", input="The plot made no sense."),
        ex(task, "Negative", input="Terrible acting and a boring story."),
        ex("Classify the sentiment of this review as positive or negative!", "Positive", input="Great fun."),
        ex("Name the capital of Italy.", "Rome."),
    ]
    curated, rejects, stats = run_filtered(tmp_path, records, **NO_EMBED)
    assert [e.id for e in curated] == [records[i].id for i in (0, 1, 2, 4)]
    assert rejects[0].id == records[3].id and rejects[0].reject["duplicate_of"] == records[0].id
    assert stats["stages"]["rouge_dedup"]["units"] == 3


def test_messages_records_dedup_on_opening_turn_plus_conversation(tmp_path):
    def chat(*turns):
        roles = ["user", "assistant"] * len(turns)
        return {"messages": [{"role": r, "content": c} for r, c in zip(roles, turns)]}

    base = (
        "How do I make my sourdough starter more active?",
        "Feed it twice a day with equal weights of flour and water, and keep it somewhere warm.",
        "How warm is warm?",
        "Around 24 to 27 degrees Celsius is ideal for most starters.",
    )
    records = [
        chat(*base),
        chat(*base[:3], "Around 24 to 27 degrees Celsius is ideal for nearly all starters."),
        chat(base[0], "Use whole rye flour for a few feedings; its wild yeasts wake a sluggish starter."),
    ]
    curated, rejects, _ = run_filtered(tmp_path, records, **NO_EMBED)
    assert len(curated) == 2 and len(rejects) == 1
    assert rejects[0].reject["reason"] == "rouge_near_duplicate"
    assert rejects[0].messages[-1]["content"].endswith("nearly all starters.")
    example = read_any(tmp_path / "in.jsonl")[0]
    assert similarity_text(example).startswith(base[0] + "\n" + base[1])


# ---------------------------------------------------------------------------------------------- stats, order, meta


def test_stage_order_stats_and_scores(tmp_path):
    records = [
        ex("Name a prime number.", "As an AI language model, I think 7 is prime."),
        ex("Give three tips for staying healthy.", "Eat vegetables, sleep eight hours, and walk daily."),
        ex("give three tips for staying healthy", "Sleep."),
        ex("Give 3 tips for staying healthy and fit.", "Walk, sleep, eat well."),
    ]
    curated, rejects, stats = run_filtered(tmp_path, records, skip_rules=("short_open_answer",), **NO_EMBED)
    assert [r.reject["stage"] for r in rejects] == ["heuristics", "exact_dedup", "rouge_dedup"]
    assert list(stats["stages"]) == ["heuristics", "exact_dedup", "rouge_dedup", "embed_dedup", "judge"]
    assert stats["stages"]["embed_dedup"] == {"enabled": False}
    assert [stats["stages"][s]["in"] for s in ("heuristics", "exact_dedup", "rouge_dedup")] == [4, 3, 2]
    assert stats["rejects_by_reason"] == {"ai_identity": 1, "exact_duplicate": 1, "rouge_near_duplicate": 1}
    assert all(isinstance(s["seconds"], float) for s in stats["stages"].values() if s["enabled"])
    assert curated[0].meta["filter"]["heuristic_score"] > 0
    assert rejects[0].meta["filter"] == {"heuristic_score": 0.0, "heuristic_flags": ["ai_identity"]}
    assert stats["config"]["rouge_threshold"] == 0.7 and stats["config"]["llm"] is None


def test_all_stages_off_keeps_everything_and_empty_input_is_fine(tmp_path):
    records = [ex("Hi"), ex("Hi")]
    curated, rejects, _ = run_filtered(
        tmp_path, records, heuristics=False, exact_dedup=False, rouge_dedup=False, **NO_EMBED
    )
    assert len(curated) == 2 and rejects == []
    curated, rejects, stats = run_filtered(tmp_path, [], **NO_EMBED)
    assert curated == rejects == [] and stats["records_in"] == 0


def test_old_filter_meta_is_replaced(tmp_path):
    record = ex("Explain why the sky is blue.", "Air molecules scatter blue sunlight more than red light.")
    record.meta["filter"] = {"judge": {"score": 1}}
    curated, _, _ = run_filtered(tmp_path, [record], **NO_EMBED)
    assert set(curated[0].meta["filter"]) == {"heuristic_score"}


# ---------------------------------------------------------------------------------------------- config


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match="filter.rouge_threshold"):
        FilterConfig(rouge_threshold=0)
    with pytest.raises(ConfigError, match="filter.keep"):
        FilterConfig(keep="best")
    with pytest.raises(ConfigError, match="filter.skip_rules.*'no_such_rule'"):
        FilterConfig(skip_rules=("no_such_rule",))
    with pytest.raises(ConfigError, match="filter.output_length"):
        FilterConfig(output_length=(10, 5))
    with pytest.raises(ConfigError, match="filter.embed_grouping"):
        FilterConfig(embed_grouping="cliques")
    with pytest.raises(ConfigError, match="filter.embed_max_unknown"):
        FilterConfig(embed_max_unknown=1.5)
    with pytest.raises(ConfigError, match="filter.judge_min_score"):
        FilterConfig(judge_min_score=6)
    with pytest.raises(ConfigError, match="filter.heuristics must be true or false"):
        FilterConfig(heuristics="yes")


def test_yaml_config_precedence_and_unknown_keys(tmp_path):
    path = tmp_path / "filter.yaml"
    path.write_text(
        "filter:\n  rouge_threshold: 0.8\n  keep: longest_output\n  skip_rules: [refusal]\n"
        "  output_length: [2, 100]\n  llm:\n    concurrency: 3\n"
    )
    cfg = load_config(path, rouge_threshold=0.75, no_cache=True)
    assert (cfg.rouge_threshold, cfg.keep, cfg.skip_rules, cfg.output_length) == (
        0.75,
        "longest_output",
        ("refusal",),
        (2, 100),
    )
    assert cfg.llm.concurrency == 3 and cfg.llm.cache is False
    assert load_config(None).rouge_threshold == 0.7
    path.write_text("rouge_treshold: 0.8\n")
    with pytest.raises(ConfigError, match="rouge_treshold"):
        load_config(path)
    path.write_text("llm:\n  temperature: 0\n")
    with pytest.raises(ConfigError, match="temperature"):
        load_config(path)
    path.write_text("rouge_threshold: [oops\n")
    with pytest.raises(ConfigError, match=r"filter.yaml:\d+: invalid YAML"):
        load_config(path)
    path.write_text("embed_threshold: high\n")
    with pytest.raises(ConfigError, match="filter.embed_threshold: expected a number"):
        load_config(path)


def test_bad_input_raises_before_writing_anything(tmp_path):
    good = tmp_path / "good.jsonl"
    write_jsonl(good, [ex("Explain why the sky is blue.")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok", "output": "fine"}\n{"instruction": 3, "output": "x"}\n')
    with pytest.raises(RecordError, match=f"{bad}:2:"):
        asyncio.run(run_filter(FilterConfig(inputs=(good, bad), out=tmp_path / "out", **NO_EMBED)))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- LLM judge


def _scripted_judge(kind, body):
    """Score by a marker "[sN]" in the judged conversation; "[sx]" gets an answer with no score."""
    prompt = body["messages"][-1]["content"]
    marker = re.search(r"\[s(\d|x)\]", prompt)
    if marker is None or marker.group(1) == "x":
        return "I like it a lot."
    label = "评分" if "评分标准" in prompt else "Score"
    return f"The answer follows the rubric.\n{label}: {marker.group(1)}"


def _judge_cfg(fault_server, **more):
    from datagen.llm.client import LLMConfig

    llm = LLMConfig(base_urls=(fault_server.url,), model=MODEL_ID, max_retries=1, backoff_base=0.01, backoff_max=0.02)
    return {"judge": True, "embed_dedup": False, "llm": llm, **more}


def test_llm_judge_scores_drops_and_records(fault_server, tmp_path):
    fault_server.responder = _scripted_judge
    records = [
        ex("Describe the water cycle. [s5]", "Water evaporates, condenses into clouds and falls as rain."),
        ex("Describe the nitrogen cycle. [s1]", "Nitrogen is a gas that plants do not need at all."),
        ex("Describe the carbon cycle. [s3]", "Carbon moves between air, living things, oceans and rocks."),
        ex("描述一下水循环的过程。[s4]", "水蒸发成水汽，遇冷凝结成云，再以雨雪的形式落回地面。"),
        ex("简要说明岩石是如何形成的。[s2]", "岩石永远不会发生任何变化，一直保持原样。"),
        ex("Describe the rock cycle. [sx]", "Rocks melt, cool, erode and are pressed into new rocks."),
    ]
    curated, rejects, stats = run_filtered(tmp_path, records, **_judge_cfg(fault_server))
    kept = by_instruction(curated)
    assert set(kept) == {records[i].instruction for i in (0, 2, 3)}
    assert [kept[records[i].instruction].meta["filter"]["judge"]["score"] for i in (0, 2, 3)] == [5, 3, 4]
    assert kept[records[0].instruction].meta["filter"]["judge"]["model"] == MODEL_ID
    assert "rubric" in kept[records[0].instruction].meta["filter"]["judge"]["rationale"]
    reasons = {r.instruction: (r.reject["reason"], r.meta["filter"]["judge"]["score"]) for r in rejects}
    assert reasons == {
        records[1].instruction: ("low_judge_score", 1),
        records[4].instruction: ("low_judge_score", 2),
        records[5].instruction: ("judge_unparseable", None),
    }
    assert next(r for r in rejects if r.id == records[5].id).reject["detail"] == "I like it a lot."
    # each record was judged with the rubric of its language
    prompts = [e["body"]["messages"][0]["content"] for e in fault_server.log]
    assert any("评分标准" in p and "水循环" in p for p in prompts)
    assert any("Rubric" in p and "water cycle" in p for p in prompts)
    assert stats["stages"]["judge"]["llm"]["succeeded"] == 6
    assert stats["config"]["llm"]["base_urls"] == [fault_server.url]

    # a second run replays every answer from the cache: no request reaches the server
    fault_server.log.clear()
    curated2, _, stats2 = run_filtered(tmp_path, records, **_judge_cfg(fault_server))
    assert fault_server.log == [] and stats2["stages"]["judge"]["llm"]["cached"] == 6
    assert [e.id for e in curated2] == [e.id for e in curated]


def test_llm_judge_threshold_and_failed_requests(fault_server, tmp_path):
    from datagen.filter.judge import judge_messages

    fault_server.responder = _scripted_judge
    records = [
        ex("Describe the water cycle. [s5]", "Water evaporates, condenses into clouds and falls as rain."),
        ex("Describe the carbon cycle. [s3]", "Carbon moves between air, living things, oceans and rocks."),
        ex("Explain how animals use oxygen. [s5]", "Their cells burn sugar with oxygen to release energy."),
    ]
    # the third record's request fails on every attempt (1 retry allowed)
    fault_server.plan.script = {judge_messages(records[2])[0]["content"]: ["500"] * 5}
    curated, rejects, stats = run_filtered(tmp_path, records, **_judge_cfg(fault_server, judge_min_score=4))
    assert [e.id for e in curated] == [records[0].id]
    assert {r.id: r.reject["reason"] for r in rejects} == {
        records[1].id: "low_judge_score",
        records[2].id: "judge_error",
    }
    assert "server_error" in next(r for r in rejects if r.id == records[2].id).reject["detail"]
    assert stats["stages"]["judge"]["llm"]["failed"] == 1


def test_judge_without_endpoint_is_a_config_error_before_any_work(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [ex("Explain why the sky is blue.")])
    cfg = FilterConfig(inputs=(tmp_path / "in.jsonl",), out=tmp_path / "out", judge=True, embed_dedup=False)
    with pytest.raises(ConfigError, match="no LLM endpoint"):
        asyncio.run(run_filter(cfg))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- CLI


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_filters_and_writes_all_outputs(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(
        a,
        [
            ex("Give three tips for staying healthy.", "Eat vegetables, sleep well and walk every day."),
            ex("Name a prime number.", "I'm sorry, but I cannot answer that."),
        ],
    )
    b.write_text(
        json.dumps(
            {
                "conversations": [
                    {"from": "human", "value": "Give three tips for staying healthy!"},
                    {"from": "gpt", "value": "Sleep, eat well, exercise."},
                ]
            }
        )
        + "\n"
    )
    out = tmp_path / "out"
    result = invoke("filter", a, b, "--out", out, "--no-embed-dedup")
    assert result.exit_code == 0, result.output
    assert "kept 1 of 3 records" in result.output
    curated, rejects = assert_invariant([a, b], out)
    assert {r.reject["reason"] for r in rejects} == {"refusal", "rouge_near_duplicate"}
    assert sorted(p.name for p in out.iterdir()) == ["curated.jsonl", "filter_stats.json", "rejects.jsonl"]


def test_cli_flags_override_the_config_file(tmp_path):
    records = [ex("Give three tips for staying healthy."), ex("Give 3 tips for staying healthy and fit.")]
    write_jsonl(tmp_path / "in.jsonl", records)
    (tmp_path / "filter.yaml").write_text(
        f"out: {tmp_path / 'from-yaml'}\nrouge_threshold: 0.95\nembed_dedup: false\n"
    )
    result = invoke("filter", tmp_path / "in.jsonl", "--config", tmp_path / "filter.yaml")
    assert result.exit_code == 0, result.output
    curated, _ = assert_invariant([tmp_path / "in.jsonl"], tmp_path / "from-yaml")
    assert len(curated) == 2  # ROUGE-L 0.714 < 0.95 from the YAML
    result = invoke(
        "filter",
        tmp_path / "in.jsonl",
        "--config",
        tmp_path / "filter.yaml",
        "--rouge-threshold",
        "0.7",
        "--out",
        tmp_path / "from-flag",
    )
    assert result.exit_code == 0, result.output
    curated, rejects = assert_invariant([tmp_path / "in.jsonl"], tmp_path / "from-flag")
    assert len(curated) == 1 and rejects[0].reject["reason"] == "rouge_near_duplicate"
    stats = json.loads((tmp_path / "from-flag" / "filter_stats.json").read_text())
    assert stats["config"]["rouge_threshold"] == 0.7 and stats["config"]["embed_dedup"] is False


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            '{"instruction": "ok", "output": "fine"}\n{"instruction": "no output"}\n',
            "in.jsonl:2: missing required field 'output'",
        ),
        ('{"instruction": "ok", "output": "fine"}\nnot json\n', "in.jsonl:2: invalid JSON"),
    ],
)
def test_cli_bad_input_exits_2_with_file_and_line_and_writes_nothing(tmp_path, content, expected):
    (tmp_path / "in.jsonl").write_text(content)
    result = invoke("filter", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--no-embed-dedup")
    assert result.exit_code == 2
    assert expected in result.output
    assert not (tmp_path / "out").exists()


def test_cli_usage_and_config_errors_exit_2(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [ex("Explain why the sky is blue.")])
    (tmp_path / "bad.yaml").write_text("keep_policy: first\n")
    result = invoke("filter", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--config", tmp_path / "bad.yaml")
    assert result.exit_code == 2 and "keep_policy" in result.output
    result = invoke("filter", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--rouge-threshold", "1.5")
    assert result.exit_code == 2
    result = invoke("filter", tmp_path / "in.jsonl")
    assert result.exit_code == 2 and "--out" in result.output
    result = invoke("filter", tmp_path / "missing.jsonl", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no such file" in result.output
    assert not (tmp_path / "out").exists()


def test_cli_judge_uses_the_llm_options(fault_server, tmp_path):
    fault_server.responder = _scripted_judge
    records = [
        ex("Describe the water cycle. [s4]", "Water evaporates, condenses into clouds and falls as rain."),
        ex("Describe the carbon cycle. [s2]", "Carbon moves between air, living things, oceans and rocks."),
    ]
    write_jsonl(tmp_path / "in.jsonl", records)
    no_endpoint = invoke("filter", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--judge", "--no-embed-dedup")
    assert no_endpoint.exit_code == 2 and "no LLM endpoint" in no_endpoint.output
    assert not (tmp_path / "out").exists()
    result = invoke(
        "filter",
        tmp_path / "in.jsonl",
        "--out",
        tmp_path / "out",
        "--no-embed-dedup",
        "--judge",
        "--judge-min-score",
        "3",
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        "--concurrency",
        "2",
    )
    assert result.exit_code == 0, result.output
    curated, rejects = assert_invariant([tmp_path / "in.jsonl"], tmp_path / "out")
    assert [e.meta["filter"]["judge"]["score"] for e in curated] == [4]
    assert rejects[0].reject == {"stage": "judge", "reason": "low_judge_score", "detail": "score 2 < 3", "score": 2}
    stats = json.loads((tmp_path / "out" / "filter_stats.json").read_text())
    assert stats["config"]["llm"]["concurrency"] == 2 and stats["config"]["judge_min_score"] == 3


def test_cli_help_shows_a_runnable_example():
    result = invoke("filter", "--help")
    assert result.exit_code == 0 and "datagen filter outputs/si/records.jsonl --out outputs/filter" in result.output


def test_cli_default_run_includes_embedding_dedup(tmp_path):
    """The default pipeline, model included: an English paraphrase goes, distinct Chinese stays."""
    records = [
        ex("List five countries in Europe.", "France, Spain, Italy, Germany and Poland."),
        ex("Name five European countries.", "Portugal, Austria, Greece, Sweden and Norway."),
        ex(
            "根据下面的经历，写一条简短活泼的朋友圈文案。",
            "周末去爬山，红叶正好，心情也跟着明亮起来了！",
            input="周末和爸妈一起去爬香山。",
        ),
        ex(
            "为下面这段文字拟三个合适的标题。",
            "1. 阳台上的菜园\n2. 城市里的小农夫\n3. 种菜成了新爱好",
            input="越来越多的年轻人开始在阳台上种菜。",
        ),
    ]
    write_jsonl(tmp_path / "in.jsonl", records)
    result = invoke("filter", tmp_path / "in.jsonl", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    curated, rejects = assert_invariant([tmp_path / "in.jsonl"], tmp_path / "out")
    assert [e.id for e in curated] == [records[i].id for i in (0, 2, 3)]
    assert rejects[0].reject["stage"] == "embed_dedup" and rejects[0].reject["duplicate_of"] == records[0].id
    assert rejects[0].reject["score"] >= 0.9
    stats = json.loads((tmp_path / "out" / "filter_stats.json").read_text())
    assert stats["stages"]["embed_dedup"]["model"] == "all-MiniLM-L6-v2"
