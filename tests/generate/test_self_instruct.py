"""Self-Instruct: each filter, the 6+2 sampling, routing, parsing, resume, Chinese — against a scripted server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import ConfigError
from datagen.generate.bootstrap import check_instruction, clean_instruction, sample_prompt_tasks
from datagen.generate.parsing import parse_instances_input_first, parse_instances_output_first, parse_numbered_list
from datagen.generate.self_instruct import SelfInstructConfig, filter_instances, generate
from datagen.llm.client import LLMConfig
from datagen.records import read_examples
from datagen.rouge import rouge_l
from tests.plugins.faults import MODEL_ID

SEEDS_EN = "seeds/seed_tasks.jsonl"
SEEDS_ZH = "seeds/seed_tasks.zh.jsonl"

# ------------------------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "text,lang,reason",
    [
        ("", "en", "empty"),
        ("Sort these numbers.", "en", "too_short"),  # 3 words: the paper keeps only > 3
        ("word " * 151, "en", "too_long"),
        ("Describe the image below in two sentences.", "en", "blacklisted_keyword"),
        ("Draw a cat using ASCII characters only.", "en", "blacklisted_keyword"),
        ("Go to the website and summarise its homepage.", "en", "blacklisted_keyword"),
        ("Turn this flowchart into a list of steps.", "en", "blacklisted_keyword"),
        ('"Quote" the best line from the poem given.', "en", "leading_punctuation"),
        ("Write a program that prints the first ten primes.", "en", "write_a_program"),
        ("Éclairez the meaning of this French phrase please.", "en", "non_ascii_start"),
        ("请描述这张图片里的内容并写一段说明。", "zh", "blacklisted_keyword"),
        ("写诗。", "zh", "too_short"),
        ("“引用”这首诗中最好的一句并说明原因。", "zh", "leading_punctuation"),
        ("Summarise the following paragraph in one sentence.", "zh", "wrong_language"),
    ],
)
def test_each_instruction_filter_names_its_reason(text, lang, reason):
    assert check_instruction(clean_instruction(text) if text.strip() else "", lang)[0] == reason


@pytest.mark.parametrize(
    "text,lang",
    [
        ("Sort these numbers in ascending order.", "en"),
        ("Explain why the sky looks blue during the day.", "en"),
        ("Classify the review as positive or negative.", "en"),
        ("把下面这句话翻译成英文。", "zh"),  # starts with a non-ASCII character: must be kept in zh runs
        ("判断这条评论的情感是正面还是负面。", "zh"),
        ("用Python写一个函数，计算列表的平均值。", "zh"),  # mixed script stays Chinese
    ],
)
def test_good_instructions_pass(text, lang):
    assert check_instruction(clean_instruction(text), lang) is None


def test_clean_instruction_keeps_proper_nouns():
    assert clean_instruction("  explain   how Python's GIL works ") == "Explain how Python's GIL works"


def test_sampling_is_six_human_plus_two_machine():
    seeds = [{"id": f"s{i}", "instruction": f"seed {i}"} for i in range(20)]
    machine = [{"instruction": f"m{i}", "round": 0} for i in range(5)]
    cfg = SelfInstructConfig(seeds="x", out="y")
    rng = random.Random(0)
    for pool, expected_machine in [(machine, 2), (machine[:1], 1), ([], 0)]:
        chosen = sample_prompt_tasks(rng, seeds, pool, cfg)
        assert len(chosen) == 8 and len({c["instruction"] for c in chosen}) == 8
        assert sum("round" in c for c in chosen) == expected_machine


# ------------------------------------------------------------------------------------------- parsers

MESSY = [
    (
        " Sort the list.\n10. Name a colour.\n11. Add numbers together.",
        True,
        ["Sort the list.", "Name a colour.", "Add numbers together."],
    ),
    ("Sure! Here are some tasks:\n1. Sort the list.\n2. Name a colour.", False, ["Sort the list.", "Name a colour."]),
    ("1) Sort the list.\n2) Name a colour.", False, ["Sort the list.", "Name a colour."]),
    ("(1) Sort the list.\n(2) Name a colour.", False, ["Sort the list.", "Name a colour."]),
    ("1 . Sort the list.\n2 . Name a colour.", False, ["Sort the list.", "Name a colour."]),
    ("Task 1: Sort the list.\nTask 2: Name a colour.", False, ["Sort the list.", "Name a colour."]),
    ("**1.** Sort the list.\n**2.** Name a colour.", False, ["Sort the list.", "Name a colour."]),
    ("1. **Sorting**: Sort the list.\n2. Name a colour.", False, ["Sorting Sort the list.", "Name a colour."]),
    (
        "1. Sort the list\n   in descending order.\n2. Name a colour.",
        False,
        ["Sort the list in descending order.", "Name a colour."],
    ),
    ("1. Sort the list.\n2. Name a colour.\n\nI hope these help!", False, ["Sort the list.", "Name a colour."]),
    (
        "- Sort the list.\n- Name a colour.\n* Add numbers.",
        False,
        ["Sort the list.", "Name a colour.", "Add numbers."],
    ),
    ("1、把句子翻译成英文。\n2、写一首诗。", False, ["把句子翻译成英文。", "写一首诗。"]),
    ("1．把句子翻译成英文。\n2．写一首诗。", False, ["把句子翻译成英文。", "写一首诗。"]),
    ("第1条：把句子翻译成英文。\n第2条：写一首诗。", False, ["把句子翻译成英文。", "写一首诗。"]),
    ("1. \"Sort the list.\"\n2. 'Name a colour.'", False, ["Sort the list.", "Name a colour."]),
    ("#1. Sort the list.\n#2. Name a colour.", False, ["Sort the list.", "Name a colour."]),
    (
        "Here you go.\n\n1. Sort the list.\n\n2. Name a colour.\n\nLet me know if you need more.",
        False,
        ["Sort the list.", "Name a colour."],
    ),
    ("", False, []),
    ("I cannot help with that.", False, []),
]


@pytest.mark.parametrize("text,continuation,expected", MESSY)
def test_numbered_list_parser_on_messy_completions(text, continuation, expected):
    assert parse_numbered_list(text, continuation=continuation) == expected


def test_instance_parsers():
    assert parse_instances_input_first("Input: <noinput>\nOutput: 42\nExample 2\nInput: 2+2\nOutput: 4") == [
        ("", "42"),
        ("2+2", "4"),
    ]
    assert parse_instances_input_first("Output: just an answer") == [("", "just an answer")]
    assert parse_instances_output_first("Class label: Yes\nInput: It rains.\nClass label: No\nInput: Dry.") == [
        ("It rains.", "Yes"),
        ("Dry.", "No"),
    ]
    assert parse_instances_output_first("类别标签：正面\n输入：很好吃。\n类别标签：负面\n输入：太难吃了。", "zh") == [
        ("很好吃。", "正面"),
        ("太难吃了。", "负面"),
    ]


def test_instance_filters_each_reason():
    pairs = [("a", "b"), ("", ""), ("x", "x"), ("q:", "z"), ("a", "b"), ("c", "d"), ("e", "cut off")]
    kept, dropped, conflicting = filter_instances(pairs, truncated=True, max_instances=5)
    assert kept == [("a", "b"), ("c", "d")] and not conflicting
    assert [reason for _, reason in dropped] == [
        "truncated",
        "empty_output",
        "input_equals_output",
        "ends_with_colon",
        "duplicate_instance",
    ]
    assert filter_instances([("same", "yes"), ("same", "no")], False, 5)[2] is True
    kept, dropped, _ = filter_instances([(str(i), f"o{i}") for i in range(8)], False, 5)
    assert len(kept) == 5 and [r for _, r in dropped] == ["over_max_instances"] * 3


# ------------------------------------------------------------------------------------------- scripted endpoint

VOCAB = (
    "amber basil cedar delta ember fjord glacier harbor iris juniper kelp lagoon meadow nectar orchid pebble "
    "quartz reef sierra tundra umber valley willow yarrow zephyr anchor beacon canyon dune estuary falcon grove "
    "heron inlet jasper kestrel lantern marble nomad opal prairie quill raven saffron thistle"
).split()
VERBS = [
    "Summarize",
    "Explain",
    "Describe",
    "Compare",
    "Rewrite",
    "Translate",
    "Outline",
    "Critique",
    "Paraphrase",
    "Evaluate",
    "Classify",
    "Categorize",
]
VOCAB_ZH = list("山水风云雨雪花草树木鸟鱼虫石金银铜铁春夏秋冬东西南北天地日月星辰江河湖海")


def fake_instruction(digest: bytes, i: int, lang: str) -> str:
    rng = random.Random(digest + bytes([i]))
    if lang == "zh":
        verb = rng.choice(["总结", "解释", "描述", "比较", "改写", "判断"])
        return f"{verb}{''.join(rng.sample(VOCAB_ZH, 8))}的特点。"
    return f"{rng.choice(VERBS)} the {' '.join(rng.sample(VOCAB, 7))}."


def scripted(lang: str = "en", extra: dict[str, str] | None = None):
    """A responder that plays a decent model: new tasks, yes/no classification, instances in the asked format."""

    def respond(kind, body):
        prompt = body.get("prompt") if kind == "completion" else body["messages"][-1]["content"]
        digest = hashlib.sha256(prompt.encode() + str(body.get("seed")).encode()).digest()
        task_line = re.findall(r"(?:Task|任务)[:：] ?(.*)", prompt)
        if extra:
            for needle, answer in extra.items():
                if needle in prompt:
                    return answer
        if prompt.rstrip().endswith(("Is it classification?", "是否分类：")):
            is_clf = task_line[-1].startswith(("Classify", "Categorize", "判断"))
            return (" Yes" if is_clf else " No") if lang == "en" else ("是" if is_clf else "否")
        if "Given the classification task definition" in prompt or "给定分类任务" in prompt:
            if lang == "zh":
                return "类别标签：甲\n输入：山水之间。\n类别标签：乙\n输入：风云之际。"
            return "Class label: alpha\nInput: the river bends.\nClass label: beta\nInput: the mountain stands."
        if "Come up with examples" in prompt or "请为下面的任务写出示例" in prompt:
            return (
                "输入：<无>\n输出：第一个答案。\n示例 2\n输入：一句话。\n输出：第二个答案。"
                if lang == "zh"
                else "Input: <noinput>\nOutput: first answer.\nExample 2\nInput: some text.\nOutput: second answer."
            )
        start = len(re.findall(r"^\d+\.", prompt, re.M))
        items = [fake_instruction(digest, i, lang) for i in range(4)]
        return items[0] + "".join(f"\n{start + k}. {t}" for k, t in enumerate(items[1:], start=1))

    return respond


def config(tmp_path, url, **overrides):
    settings = dict(
        seeds=SEEDS_EN,
        out=tmp_path / "out",
        num_instructions=12,
        batch_size=3,
        classifier_eval_seeds=10,
        llm=LLMConfig(base_urls=(url,), model=MODEL_ID, cache_path=tmp_path / "cache.sqlite", backoff_base=0.01),
    )
    settings.update(overrides)
    return SelfInstructConfig(**settings)


def test_end_to_end_routes_classification_output_first(fault_server, tmp_path):
    fault_server.responder = scripted()
    stats = asyncio.run(generate(config(tmp_path, fault_server.url)))
    out = tmp_path / "out"
    records = read_examples(out / "records.jsonl")
    assert stats["machine_instructions"] == 12 and stats["target_reached"]
    clf = {
        json.loads(l)["instruction"]: json.loads(l)["is_classification"]
        for l in (out / "is_clf.jsonl").read_text().splitlines()
    }
    assert len(clf) == 12 and any(clf.values()) and not all(clf.values())
    for record in records:
        assert record.meta["method"] == "self-instruct" and record.is_classification == clf[record.instruction]
        if record.is_classification:
            assert record.meta["route"] == "output_first" and record.output in ("alpha", "beta")
        else:
            assert record.meta["route"] == "input_first" and record.output in ("first answer.", "second answer.")
        assert len(record.meta["similar"]) == 10 and all(0 <= s < 0.7 for _, s in record.meta["similar"])
        assert record.meta["source"]["seeds"] and record.meta["prompt"]["name"] == "en/self_instruct_generate"
    # the prompts that produced instances really were the output-first template for classification tasks
    inst_prompts = [
        e["body"]["prompt"]
        for e in fault_server.log
        if "Task:" in e["body"].get("prompt", "")
        and not e["body"]["prompt"].rstrip().endswith("Is it classification?")
    ]
    for instruction, is_clf in clf.items():
        (prompt,) = [p for p in inst_prompts if p.rstrip().endswith(instruction) or f"Task: {instruction}\n" in p]
        assert ("Given the classification task definition" in prompt) == is_clf
    assert stats["routes"]["output_first"] + stats["routes"]["input_first"] == 12
    agreement = stats["classifier_agreement"]
    assert agreement["evaluated"] == 10 and 0 <= agreement["rate"] <= 1
    assert len(read_examples(out / "records.jsonl")) == stats["kept"]
    tasks = [json.loads(l) for l in (out / "instances.jsonl").read_text().splitlines()]
    assert all(set(t) == {"id", "name", "instruction", "instances", "is_classification"} for t in tasks)


def test_bootstrap_prompts_show_eight_tasks_six_seeds_two_machine(fault_server, tmp_path):
    fault_server.responder = scripted()
    asyncio.run(generate(config(tmp_path, fault_server.url)))
    seeds = {json.loads(l)["instruction"] for l in open(SEEDS_EN, encoding="utf-8")}
    boot = [
        e["body"]["prompt"]
        for e in fault_server.log
        if e["body"].get("prompt", "").startswith("Come up with a series")
    ]
    later = boot[3:]  # after round 0 there are machine tasks in the pool
    for prompt in boot:
        listed = re.findall(r"^\d+\. (.*)$", prompt, re.M)
        assert len(listed) == 8 and prompt.rstrip().endswith("9.")
    for prompt in later:
        listed = re.findall(r"^\d+\. (.*)$", prompt, re.M)
        assert sum(t in seeds for t in listed) == 6


def test_near_duplicates_truncation_and_blacklist_are_rejected_with_reasons(fault_server, tmp_path):
    seeds = [json.loads(l)["instruction"] for l in open(SEEDS_EN, encoding="utf-8")]
    seed = next(s for s in seeds if check_instruction(s, "en") is None and len(s.split()) > 10)
    near = seed.rstrip(".") + " today."
    assert 0.7 <= rouge_l(near, seed) < 1
    calls = {"n": 0}
    base = scripted()

    def respond(kind, body):
        prompt = body.get("prompt", "")
        if prompt.startswith("Come up with a series") and calls["n"] == 0:
            calls["n"] += 1
            return (
                f" {near}\n10. Draw a diagram of the water cycle for kids.\n11. Explain the sky orchid harbor "
                "meadow to children.\n12. Describe the last task that was cut off",
                "length",
            )
        return base(kind, body)

    fault_server.responder = respond
    asyncio.run(generate(config(tmp_path, fault_server.url, num_instructions=4, batch_size=1)))
    rejects = {r.instruction: r.reject for r in read_examples(tmp_path / "out" / "rejects.jsonl")}
    assert rejects[near]["reason"] == "near_duplicate" and rejects[near]["detail"]["similar"] == seed
    assert rejects["Draw a diagram of the water cycle for kids."]["reason"] == "blacklisted_keyword"
    assert rejects["Describe the last task that was cut off"]["reason"] == "truncated"
    kept = [
        json.loads(l)["instruction"]
        for l in (tmp_path / "out" / "machine_instructions.jsonl").read_text().splitlines()
    ]
    assert kept[0] == "Explain the sky orchid harbor meadow to children."


def test_conflicting_outputs_drop_the_task(fault_server, tmp_path):
    base = scripted()

    def respond(kind, body):
        prompt = body.get("prompt", "")
        if "Come up with examples" in prompt:
            return "Input: same\nOutput: one\nExample 2\nInput: same\nOutput: two"
        return base(kind, body)

    fault_server.responder = respond
    stats = asyncio.run(generate(config(tmp_path, fault_server.url, num_instructions=3, batch_size=1)))
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert all(r.is_classification for r in records)  # every input-first task was dropped
    assert stats["rejects_by_reason"]["conflicting_outputs"] > 0
    # the run topped up with new instructions until 3 tasks had valid instances
    assert stats["routes"] == {"output_first": 3} and stats["tasks_with_instances"] == 3 and stats["target_reached"]
    assert stats["machine_instructions"] == 3 + stats["rejects_by_reason"]["conflicting_outputs"]


def test_chinese_run_keeps_chinese_and_rejects_chinese_near_duplicates(fault_server, tmp_path):
    seeds = [json.loads(l)["instruction"] for l in open(SEEDS_ZH, encoding="utf-8")]
    near = seeds[0][:-1] + "吧。" if len(seeds[0]) > 8 else seeds[0] + "吧"
    assert rouge_l(near, seeds[0]) >= 0.7
    base = scripted("zh")
    first = {"done": False}

    def respond(kind, body):
        prompt = body.get("prompt", "")
        if prompt.startswith("请想出一系列任务") and not first["done"]:
            first["done"] = True
            return f" {near}\n10. 解释山水风云雨雪花草的特点。"
        return base(kind, body)

    fault_server.responder = respond
    stats = asyncio.run(
        generate(config(tmp_path, fault_server.url, seeds=SEEDS_ZH, lang="zh", num_instructions=6, batch_size=2))
    )
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert stats["machine_instructions"] == 6 and records
    assert all(r.lang == "zh" and re.search(r"[\u4e00-\u9fff]", r.instruction) for r in records)
    reasons = stats["instruction_rejects"]
    assert "non_ascii_start" not in reasons and "wrong_language" not in reasons
    rejects = {r.instruction: r.reject["reason"] for r in read_examples(tmp_path / "out" / "rejects.jsonl")}
    assert rejects[near] == "near_duplicate"
    assert "解释山水风云雨雪花草的特点。" in {
        json.loads(l)["instruction"] for l in (tmp_path / "out" / "is_clf.jsonl").read_text().splitlines()
    }


def test_llm_failures_become_rejects_not_crashes(fault_server, tmp_path):
    fault_server.responder = scripted()
    fault_server.plan.rate = 0.15
    fault_server.plan.kinds = ("500",)
    cfg = config(tmp_path, fault_server.url, num_instructions=8)
    cfg = SelfInstructConfig(**{**cfg.__dict__, "llm": LLMConfig(**{**cfg.llm.__dict__, "max_retries": 0})})
    stats = asyncio.run(generate(cfg))
    assert stats["llm"]["failed"] > 0
    assert any(reason.startswith("llm_") for reason in stats["rejects_by_reason"])


def test_rerun_makes_no_calls_and_gives_the_same_records(fault_server, tmp_path):
    fault_server.responder = scripted()
    cfg = config(tmp_path, fault_server.url)
    asyncio.run(generate(cfg))
    first = (tmp_path / "out" / "records.jsonl").read_bytes()
    calls = len(fault_server.log)
    (tmp_path / "cache.sqlite").unlink()  # even without the cache, the state log replays everything
    asyncio.run(generate(cfg))
    assert len(fault_server.log) == calls and (tmp_path / "out" / "records.jsonl").read_bytes() == first


def test_requests_that_failed_for_good_are_asked_again_on_resume(fault_server, tmp_path):
    """A bootstrap, a classify and an instance request fail for good: the run reports them and builds nothing
    on them; a re-run asks exactly those again and ends with the fault-free run's files, and then a further
    re-run asks nothing."""
    fault_server.responder = scripted()
    asyncio.run(generate(config(tmp_path / "clean", fault_server.url)))
    clean = tmp_path / "clean" / "out"
    first_task = json.loads((clean / "machine_instructions.jsonl").read_text().splitlines()[0])["instruction"]
    texts = list(dict.fromkeys(e["text"] for e in fault_server.log))
    # Round 0's bootstrap requests (a round starts when the one before has finished) arrive in any order: fail
    # one whose answer did not propose the first task, so that task is still absorbed and asked about.
    round0 = [e for e in fault_server.log if e["text"].startswith("Come up with a series")][:3]
    boot = [e["text"] for e in round0 if first_task not in fault_server.responder(e["kind"], e["body"])]
    about_first = [t for t in texts if f"Task: {first_task}" in t]
    assert len(boot) == 2 and len(about_first) == 2
    fault_server.plan.script = {text: ["500"] for text in [boot[0], *about_first]}  # round 0, classify, instances
    assert len(fault_server.plan.script) == 3
    fault_server.log.clear()
    fault_server.attempts.clear()

    cfg = config(tmp_path / "flaky", fault_server.url)
    cfg = SelfInstructConfig(**{**cfg.__dict__, "llm": LLMConfig(**{**cfg.llm.__dict__, "max_retries": 0})})
    stats = asyncio.run(generate(cfg))
    assert stats["llm"]["failed"] == 3 and {f["reason"] for f in stats["llm"]["failures"]} == {"server_error"}
    assert stats["rounds"] == 1 and not stats["target_reached"]  # no round was drawn from a pool missing an answer
    assert stats["rejects_by_reason"]["llm_server_error"] == 2  # the bootstrap and the instance request

    asked = len(fault_server.log)
    stats = asyncio.run(generate(cfg))
    assert stats["llm"]["failed"] == 0 and stats["target_reached"]
    flaky = tmp_path / "flaky" / "out"
    for name in ("records.jsonl", "rejects.jsonl", "machine_instructions.jsonl", "is_clf.jsonl", "instances.jsonl"):
        assert (flaky / name).read_bytes() == (clean / name).read_bytes(), name
    assert {e["text"] for e in fault_server.log[asked:]} >= set(fault_server.plan.script)

    asked = len(fault_server.log)
    asyncio.run(generate(cfg))
    assert (
        len(fault_server.log) == asked
        and (flaky / "records.jsonl").read_bytes() == (clean / "records.jsonl").read_bytes()
    )


def test_killed_run_resumes_to_the_uninterrupted_result(fault_server, tmp_path):
    """SIGKILL the CLI mid-bootstrap; the resumed run equals an uninterrupted run with the same seed."""
    fault_server.responder = scripted()
    fault_server.plan.latency = 0.03
    args = [
        "--seeds",
        SEEDS_EN,
        "--num-instructions",
        "20",
        "--batch-size",
        "2",
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        "--concurrency",
        "2",
    ]
    env = {**os.environ, "DATAGEN_HOME": str(tmp_path / "home-a")}
    reference = subprocess.run(
        [sys.executable, "-m", "datagen", "self-instruct", *args, "--out", str(tmp_path / "a")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr

    env_b = {**os.environ, "DATAGEN_HOME": str(tmp_path / "home-b")}
    cmd = [sys.executable, "-m", "datagen", "self-instruct", *args, "--out", str(tmp_path / "b")]
    proc = subprocess.Popen(cmd, env=env_b, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "b" / ".state" / "bootstrap.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state.exists() and state.read_bytes().count(b"\n") >= 4):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "records.jsonl").exists()
    before = len(fault_server.log)
    resumed = subprocess.run(cmd, env=env_b, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "b" / "records.jsonl").read_bytes() == (tmp_path / "a" / "records.jsonl").read_bytes()
    assert (tmp_path / "b" / "rejects.jsonl").read_bytes() == (tmp_path / "a" / "rejects.jsonl").read_bytes()
    # the resumed run asked only for what the killed one had not logged
    assert len(fault_server.log) - before < before


def test_cli_reports_bad_seed_file_with_line(tmp_path):
    bad = tmp_path / "seeds.jsonl"
    bad.write_text(
        '{"instruction": "ok", "instances": [{"input": "", "output": "x"}]}\n{"instruction": "no instances"}\n'
    )
    result = CliRunner().invoke(
        cli,
        [
            "self-instruct",
            "--seeds",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
        ],
    )
    assert result.exit_code == 2 and f"{bad}:2:" in result.output and "instances" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "field,value",
    [
        ("lang", "fr"),
        ("style", "poem"),
        ("num_instructions", 0),
        ("rouge_threshold", 1.5),
        ("num_machine_in_prompt", 9),
    ],
)
def test_config_errors_name_the_key(field, value):
    with pytest.raises(ConfigError, match=f"self_instruct.{field}"):
        SelfInstructConfig(seeds="s", out="o", **{field: value})


def test_dead_endpoint_stops_the_run_and_resume_finishes_it(fault_server, tmp_path):
    fault_server.responder = scripted()
    fault_server.plan.down = True
    cfg = config(tmp_path, fault_server.url)
    cfg = SelfInstructConfig(**{**cfg.__dict__, "llm": LLMConfig(**{**cfg.llm.__dict__, "circuit_breaker": 0.3})})
    from datagen.errors import CircuitOpen

    with pytest.raises(CircuitOpen):
        asyncio.run(generate(cfg))
    state = tmp_path / "out" / ".state" / "bootstrap.jsonl"
    assert not state.exists() or "circuit_open" not in state.read_text()  # nothing false was logged as settled
    fault_server.plan.down = False
    stats = asyncio.run(generate(cfg))
    assert stats["machine_instructions"] == 12
