"""Self-KG: samplers and coverage, template mode (en + zh), the grounding check, llm mode over HTTP, resume."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import ConfigError
from datagen.generate.graph import entity_label, load_graph
from datagen.generate.kg_sampling import FactIndex, KGSampler, Sample
from datagen.generate.self_kg import (
    DEFAULT_SAMPLING,
    Grounding,
    SelfKGConfig,
    build_messages,
    copied_from_prompt,
    generate,
    parse_qa,
    template_phrasings,
)
from datagen.llm.cache import ResponseCache, cache_key
from datagen.llm.client import LLMConfig, SamplingParams
from datagen.records import read_examples
from tests.plugins.faults import MODEL_ID

SEEDS = Path(__file__).resolve().parents[2] / "seeds" / "kg"

KG = """head\trelation\ttail
rose\tplant_family\trosaceae
apple\tplant_family\trosaceae
tulip\tplant_family\tliliaceae
rose\tflower_color\tred
rose\tflower_color\tpink
tulip\tflower_color\tred
rose\tcommon_pest\taphid
apple\tcommon_pest\taphid
apple\tcommon_pest\tcodling_moth
aphid\ttreated_by\tneem_oil
codling_moth\ttreated_by\tpheromone_trap
rosaceae\torder\trosales
liliaceae\torder\tliliales
"""
LABELS_ZH = """id\tlabel_zh
rose\t玫瑰
apple\t苹果
tulip\t郁金香
rosaceae\t蔷薇科
liliaceae\t百合科
red\t红色
pink\t粉色
aphid\t蚜虫
codling_moth\t苹果蠹蛾
neem_oil\t印楝油
pheromone_trap\t性诱捕器
rosales\t蔷薇目
liliales\t百合目
plant_family\t所属科
flower_color\t花色
common_pest\t常见害虫
treated_by\t防治方法
order\t目
"""


@pytest.fixture
def kg(tmp_path):
    (tmp_path / "kg.tsv").write_text(KG, encoding="utf-8")
    (tmp_path / "labels.zh.tsv").write_text(LABELS_ZH, encoding="utf-8")
    return tmp_path / "kg.tsv", tmp_path / "labels.zh.tsv"


def run(cfg):
    return asyncio.run(generate(cfg))


def _mentions(label: str, text: str) -> bool:
    if re.search(r"[\u4e00-\u9fff]", label):
        return label in text
    return re.search(rf"(?<!\w){re.escape(label.casefold())}(?:e?s)?(?!\w)", text.casefold()) is not None


def assert_supported(record, G, every_tail=True):
    """The answer rests on ``meta.source.triples``: real facts, their tails named, no other entity named."""
    source = record.meta["source"]
    facts = [tuple(t) for t in source["triples"]]
    assert facts and all(G.has_edge(h, t, key=r) for h, r, t in facts), facts
    named = [t for _, _, t in facts if _mentions(source["labels"][t], record.output)]
    assert (len(named) == len(facts)) if every_tail else named, (record.output, facts)
    own = {source["labels"][e] for h, _, t in facts for e in (h, t)}
    for node in G.nodes:
        label = entity_label(G, node, record.lang)
        if node in own or any(label in mine for mine in own):
            continue
        for text in (record.instruction, record.output):
            assert not _mentions(label, text), (label, text)


# ---------------------------------------------------------------------------------------------- sampling


def test_samplers_return_well_formed_samples(kg):
    G = load_graph(kg[0])
    sampler = KGSampler(G, seed=1, max_facts=8)
    fact = sampler.fact()
    head, relation = fact.slots["head"], fact.slots["relation"]
    assert fact.triples == tuple((head, relation, t) for t in sorted(G.succ[head]) if relation in G.succ[head][t])
    assert fact.answers == tuple(t for _, _, t in fact.triples) and fact.slots["complete"]

    hood = sampler.neighbourhood()
    entity = hood.slots["entity"]
    assert len(hood.triples) == G.out_degree(entity) >= 2 and all(h == entity for h, _, _ in hood.triples)
    assert [g["relation"] for g in hood.slots["groups"]] == sorted({r for _, r, _ in hood.triples})

    path = sampler.path()
    (a, r1, b), (b2, r2, c) = path.triples
    assert b == b2 and len({a, b, c}) == 3 and G.has_edge(a, b, key=r1) and G.has_edge(b, c, key=r2)
    assert path.answers == (c,)

    comparison = sampler.comparison()
    relation, first, second = (comparison.slots[k] for k in ("relation", "first", "second"))
    assert first != second and {h for h, _, _ in comparison.triples} == {first, second}
    assert all(r == relation for _, r, _ in comparison.triples)
    assert set(comparison.answers) == {t for _, _, t in comparison.triples}


def test_neighbourhood_caps_facts_and_says_so(tmp_path):
    (tmp_path / "kg.tsv").write_text("".join(f"hub\tr{i % 2}\tleaf{i}\n" for i in range(5)))
    sample = KGSampler(load_graph(tmp_path / "kg.tsv"), max_facts=3).neighbourhood()
    assert len(sample.triples) == 3 and sample.slots["complete"] is False


def test_paths_never_cycle_back_and_self_loops_are_not_paths(tmp_path):
    (tmp_path / "kg.tsv").write_text("x\tr\ty\ny\tr\tx\ny\ts\tz\ny\tt\ty\n")
    G = load_graph(tmp_path / "kg.tsv", keep_self_loops=True)
    assert G.has_edge("y", "y", key="t")
    sampler = KGSampler(G, seed=3)
    paths = sampler.sample(20, ["path"])
    assert [s.triples for s in paths] == [(("x", "r", "y"), ("y", "s", "z"))]
    assert sampler.coverage()["exhausted"] == ["path"]


def test_every_pattern_covers_the_small_graph_and_is_deterministic(kg):
    G = load_graph(kg[0])
    sampler = KGSampler(G, seed=0)
    samples = sampler.sample(200)
    assert len({s.key for s in samples}) == len(samples) < 200  # it ran out of new material and stopped
    coverage = sampler.coverage()
    assert coverage["entities"] == {"touched": 13, "total": 13, "share": 1.0}
    assert coverage["relations"]["share"] == 1.0 and coverage["triples"]["share"] == 1.0
    assert set(coverage["by_pattern"]) == {"neighbourhood", "fact", "path", "comparison"}
    assert [s.key for s in KGSampler(G, seed=0).sample(200)] == [s.key for s in samples]
    assert [s.key for s in KGSampler(G, seed=1).sample(10)] != [s.key for s in samples[:10]]


def test_fact_sampling_visits_every_head_relation_pair_once(kg):
    G = load_graph(kg[0])
    samples = KGSampler(G, seed=5).sample(100, ["fact"])
    pairs = {(h, r) for h, _, r in G.edges(keys=True)}
    assert sorted((s.slots["head"], s.slots["relation"]) for s in samples) == sorted(pairs)


def test_rare_relations_are_sampled_early(tmp_path):
    rows = [f"plant{i}\tcommon_pest\tpest{i % 7}\n" for i in range(60)] + ["plant3\tplant_family\trosaceae\n"]
    (tmp_path / "kg.tsv").write_text("".join(rows))
    for seed in range(5):
        first_two = KGSampler(load_graph(tmp_path / "kg.tsv"), seed=seed).sample(2, ["fact"])
        assert {s.slots["relation"] for s in first_two} == {"common_pest", "plant_family"}


def test_least_used_entities_first_gives_full_entity_coverage_quickly(tmp_path):
    rows = [f"e{i % 40}\trel{i % 3}\te{(i * 7 + i // 40 + 1) % 40}\n" for i in range(120)]
    (tmp_path / "kg.tsv").write_text("".join(rows))
    sampler = KGSampler(load_graph(tmp_path / "kg.tsv"), seed=0)
    sampler.sample(40, ["neighbourhood"])
    assert sampler.coverage()["entities"]["share"] == 1.0  # 40 neighbourhoods, 40 different centres


# ---------------------------------------------------------------------------------------------- template mode


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_template_mode_records_are_supported_by_their_triples(kg, tmp_path, lang):
    out = tmp_path / f"out-{lang}"
    stats = run(SelfKGConfig(graph=kg[0], labels=kg[1], out=out, num=30, lang=lang))
    records = read_examples(out / "records.jsonl")
    assert stats["kept"] == len(records) == stats["sampled"] > 10 and stats["rejected"] == 0
    G = load_graph(kg[0], labels=kg[1])
    for record in records:
        assert record.lang == lang and record.input == ""
        assert record.meta["method"] == "self-kg" and record.meta["template"]["name"] == f"{lang}/self_kg_templates"
        assert_supported(record, G)
    if lang == "zh":
        assert all(re.search(r"[\u4e00-\u9fff]", r.instruction) for r in records)
    assert {r.meta["pattern"] for r in records} == {"neighbourhood", "fact", "path", "comparison"}
    assert len({r.meta["template"]["variant"] for r in records}) > 1  # several phrasings in use
    written = json.loads((out / "stats.json").read_text())
    assert written["coverage"]["entities"]["share"] == 1.0 and written["graph"]["triples"] == 13
    # deterministic: a second run writes the same bytes
    first = (out / "records.jsonl").read_bytes()
    run(SelfKGConfig(graph=kg[0], labels=kg[1], out=out, num=30, lang=lang))
    assert (out / "records.jsonl").read_bytes() == first


def test_template_phrasings_state_the_facts(kg):
    G = load_graph(kg[0], labels=kg[1])
    sample = Sample(
        "fact",
        (("rose", "flower_color", "pink"), ("rose", "flower_color", "red")),
        ("pink", "red"),
        {"head": "rose", "relation": "flower_color", "tails": ["pink", "red"], "complete": True},
    )
    en = template_phrasings(sample, G, "en")
    assert ("What does the flower color of rose include?", "The flower color of rose includes pink and red.") in en
    assert len(en) >= 3 and all("pink" in a and "red" in a for _, a in en)
    zh = template_phrasings(sample, G, "zh")
    assert ("玫瑰的“花色”是什么？", "玫瑰的“花色”是粉色和红色。") in zh


def test_cli_template_mode(kg, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "self-kg",
            "--graph",
            str(kg[0]),
            "--num",
            "8",
            "--out",
            str(tmp_path / "o"),
            "--labels",
            str(kg[1]),
            "--lang",
            "zh",
            "--seed",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote 8 records to {tmp_path / 'o' / 'records.jsonl'}, 0 rejected; covered ")
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["config"]["seed"] == 4


def test_config_errors_name_the_key(kg, tmp_path):
    with pytest.raises(ConfigError, match="self_kg.num"):
        SelfKGConfig(graph=kg[0], out=tmp_path, num=0)
    with pytest.raises(ConfigError, match="self_kg.mode"):
        SelfKGConfig(graph=kg[0], out=tmp_path, mode="magic")
    with pytest.raises(ConfigError, match="self_kg.patterns"):
        SelfKGConfig(graph=kg[0], out=tmp_path, patterns=("fact", "riddle"))
    with pytest.raises(ConfigError, match="self_kg.graph"):
        SelfKGConfig(graph=tmp_path / "nope.tsv", out=tmp_path)
    assert SelfKGConfig(graph=kg[0], out=tmp_path, patterns="fact, path").patterns == ("fact", "path")


# ---------------------------------------------------------------------------------------------- grounding


@pytest.fixture
def grounding(kg):
    G = load_graph(kg[0], labels=kg[1])
    return G, Grounding(G, FactIndex(G))


ROSE_FAMILY = Sample(
    "fact",
    (("rose", "plant_family", "rosaceae"),),
    ("rosaceae",),
    {"head": "rose", "relation": "plant_family", "tails": ["rosaceae"], "complete": True},
)


def test_grounding_keeps_a_faithful_answer(grounding):
    _, check = grounding
    assert (
        check.check("Which plant family does rose belong to?", "Roses belong to the Rosaceae family.", ROSE_FAMILY)
        is None
    )
    assert check.check("玫瑰属于哪个科？", "玫瑰属于蔷薇科。", ROSE_FAMILY) is None


def test_grounding_rejects_an_invented_entity(grounding):
    _, check = grounding
    reason, detail = check.check(
        "Which plant family does rose belong to?",
        "Rose belongs to rosaceae, and it is often attacked by aphids.",
        ROSE_FAMILY,
    )
    assert reason == "invented_entity" and detail == {"mentions": {"aphid": ["aphid"]}}
    reason, detail = check.check("What is the family of rose, unlike tulip?", "Rosaceae.", ROSE_FAMILY)
    assert reason == "invented_entity" and "tulip" in detail["mentions"]


def test_grounding_rejects_a_contradiction_of_a_single_valued_fact(grounding):
    _, check = grounding
    reason, detail = check.check(
        "Which plant family does rose belong to?", "The plant family of rose is liliaceae.", ROSE_FAMILY
    )
    assert reason == "contradicts_fact"
    assert detail["fact"] == ["rose", "plant_family", "rosaceae"] and detail["stated"] == ["liliaceae"]
    # within the sample: a comparison that swaps the two families
    swap = Sample(
        "comparison",
        (("apple", "plant_family", "rosaceae"), ("tulip", "plant_family", "liliaceae")),
        ("rosaceae", "liliaceae"),
        {},
    )
    reason, detail = check.check(
        "Compare the plant family of apple and tulip.",
        "The plant family of apple is liliaceae. Tulip is in rosaceae.",
        swap,
    )
    assert reason == "contradicts_fact" and detail["fact"] == ["apple", "plant_family", "rosaceae"]
    assert (
        check.check(
            "Compare the plant family of apple and tulip.",
            "The plant family of apple is rosaceae, while tulip's plant family is liliaceae.",
            swap,
        )
        is None
    )


def test_grounding_rejects_answers_missing_every_expected_tail_or_pointing_at_the_facts(grounding):
    _, check = grounding
    assert check.check("Which plant family is the largest?", "The largest is rosaceae.", ROSE_FAMILY) == (
        "off_topic",
        {"topic": ["rose"]},
    )
    assert check.check("What is the plant family of rose?", "Rose is a lovely flower.", ROSE_FAMILY) == (
        "omits_answer",
        {"expected": ["rosaceae"]},
    )
    assert (
        check.check("What is the plant family of rose?", "According to the facts, rosaceae.", ROSE_FAMILY)[0]
        == "refers_to_facts"
    )
    assert check.check("玫瑰属于哪个科？", "根据知识图谱，玫瑰属于蔷薇科。", ROSE_FAMILY)[0] == "refers_to_facts"


def test_grounding_matches_the_longest_name(tmp_path):
    (tmp_path / "kg.tsv").write_text("damask_rose\tplant_family\trosaceae\nrose\tflower_color\tred\n")
    G = load_graph(tmp_path / "kg.tsv")
    sample = Sample("fact", (("damask_rose", "plant_family", "rosaceae"),), ("rosaceae",), {})
    assert (
        Grounding(G, FactIndex(G)).check("What family is damask rose in?", "Damask roses are in rosaceae.", sample)
        is None
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Question: What is X?\nAnswer: Y.", ("What is X?", "Y.", False)),
        ("**Question:** What is X?\n**Answer:** Y is\nthe answer.", ("What is X?", "Y is\nthe answer.", False)),
        ("Sure! Here you go.\nQ: What is X?\nA: Y.\nQ: Another?\nA: Z.", ("What is X?", "Y.", True)),
        ("问题：X是什么？\n答案：Y。", ("X是什么？", "Y。", False)),
        ("What is X?\nAnswer: Y.", ("What is X?", "Y.", False)),
        ("Question: What is X?\nAnswer: Y.\n\nFacts:\n- a | b | c", ("What is X?", "Y.", True)),
        ("Question: What is X?", None),
        ("Answer:", None),
    ],
)
def test_parse_qa_is_tolerant(text, expected):
    assert parse_qa(text) == expected


def test_build_messages_and_echo_detection(kg):
    G = load_graph(kg[0], labels=kg[1])
    messages = build_messages(ROSE_FAMILY, G, "en")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]  # worked example as turns
    assert (
        messages[-1]["content"]
        == "Facts:\n- rose | plant family | rosaceae\nAsk about rose. The answer names: rosaceae."
    )
    zh = build_messages(ROSE_FAMILY, G, "zh")
    assert zh[-1]["content"] == "事实：\n- 玫瑰 | 所属科 | 蔷薇科\n请围绕玫瑰提问。答案应提到：蔷薇科。"
    example_answer = [line for m in messages for line in m["content"].splitlines() if line.startswith("Answer:")][-1]
    assert copied_from_prompt("What is it?", example_answer[len("Answer:") :], messages)[0] == "copied_prompt"
    assert copied_from_prompt("What is it?", "rose | plant family | rosaceae", messages)[0] == "copied_prompt"
    assert copied_from_prompt("What is rose's family?", "Rose is in rosaceae.", messages) is None
    assert copied_from_prompt("What is rose's family?", "Rosaceae. The answer names: rosaceae.", messages) == (
        "copied_prompt",
        {"field": "output", "phrase": "the answer name"},
    )
    assert copied_from_prompt("玫瑰属于哪个科？", "蔷薇科。请围绕玫瑰提问。", zh)[0] == "copied_prompt"


# ---------------------------------------------------------------------------------------------- llm mode


def facts_of(body):
    """The facts a verbalise request asks about: the ``- h | r | t`` lines after the last facts header."""
    text = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    block = re.split(r"^(?:Facts|事实)[:：]\s*$", text, flags=re.M)[-1]
    return [
        tuple(part.strip() for part in line[2:].split("|")) for line in block.splitlines() if line.startswith("- ")
    ]


def faithful(kind, body):
    facts = facts_of(body)
    return f"Question: What do you know about {facts[0][0]}?\nAnswer: " + " ".join(
        f"{h} {r} {t}." for h, r, t in facts
    )


def llm_cfg(kg, out, url, **kwargs):
    return SelfKGConfig(
        graph=kg[0],
        labels=kg[1],
        out=out,
        mode="llm",
        llm=LLMConfig(base_urls=(url,), model=MODEL_ID, max_retries=1, backoff_base=0.01),
        **kwargs,
    )


def test_llm_mode_end_to_end(kg, tmp_path, fault_server):
    def responder(kind, body):
        facts = facts_of(body)
        if facts[0][0] == "tulip":
            return "I am not sure."  # unparseable
        if facts[0][0] == "aphid":
            return "Question: What treats aphid?\nAnswer: What treats aphid?"  # echoes the question
        if facts[0][0] == "apple" and len(facts) == 1:
            return f"Question: What about apple?\nAnswer: Apple {facts[0][1]} {facts[0][2]}, like tulip."  # invented
        return faithful(kind, body)

    fault_server.responder = responder
    out = tmp_path / "out"
    stats = run(llm_cfg(kg, out, fault_server.url, num=20))
    kept, rejects = read_examples(out / "records.jsonl"), read_examples(out / "rejects.jsonl")
    assert stats["kept"] == len(kept) > 5 and stats["rejected"] == len(rejects) > 0
    assert stats["llm"]["succeeded"] == stats["sampled"] == len(kept) + len(rejects)
    G = load_graph(kg[0], labels=kg[1])
    for record in kept:
        assert_supported(record, G)
        assert record.meta["model"] == MODEL_ID and record.meta["prompt"]["name"] == "en/self_kg_verbalise"
        assert record.meta["usage"]["completion_tokens"] > 0 and record.instruction.startswith("What do you know")
    reasons = {r.reject["reason"] for r in rejects}
    assert reasons <= {"unparseable", "invented_entity", "echoes_question"} and len(reasons) == 3
    for record in rejects:
        if record.reject["reason"] == "unparseable":
            assert record.output == "I am not sure." and record.reject["detail"] == "I am not sure."
        elif record.reject["reason"] == "echoes_question":
            assert record.output == record.instruction == "What treats aphid?"
        else:
            assert "tulip" in record.reject["detail"]["mentions"]
    assert stats["rejects_by_reason"] == {r: sum(x.reject["reason"] == r for x in rejects) for r in reasons}


def test_llm_mode_asks_again_only_for_failed_requests(kg, tmp_path, fault_server):
    G = load_graph(kg[0], labels=kg[1])
    texts = [build_messages(s, G, "en")[-1]["content"] for s in KGSampler(G).sample(12)]
    fault_server.responder = faithful
    fault_server.plan.script = {text: ["500"] * 5 for text in texts[:3]}
    out = tmp_path / "out"
    stats = run(llm_cfg(kg, out, fault_server.url, num=12))
    assert stats["kept"] == 9 and stats["rejects_by_reason"] == {"server_error": 3}
    fault_server.plan.script = {}
    fault_server.log.clear()
    again = run(llm_cfg(kg, out, fault_server.url, num=12))
    assert sorted(e["text"] for e in fault_server.log) == sorted(texts[:3])
    assert again["kept"] == 12 and again["rejected"] == 0 and again["resumed_from"] == 9


def test_killed_llm_run_resumes_with_the_same_result_and_no_repeated_calls(kg, tmp_path, fault_server):
    fault_server.responder = faithful
    fault_server.plan.latency = 0.05
    n = 30
    home = tmp_path / "home"
    env = {**os.environ, "DATAGEN_HOME": str(home)}
    cmd = [
        sys.executable,
        "-m",
        "datagen",
        "self-kg",
        "--graph",
        str(kg[0]),
        "--num",
        str(n),
        "--mode",
        "llm",
        "--labels",
        str(kg[1]),
        "--out",
        str(tmp_path / "out"),
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        "--concurrency",
        "2",
    ]
    state = tmp_path / "out" / ".state" / "verbalise.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (state.exists() and state.read_bytes().count(b"\n") >= n // 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (tmp_path / "out" / "records.jsonl").exists()
    G = load_graph(kg[0], labels=kg[1])
    messages = [build_messages(s, G, "en") for s in KGSampler(G).sample(n)]
    cache = ResponseCache(home / "llm_cache.sqlite")
    cached_keys = cache.keys()
    cache.close()
    request = DEFAULT_SAMPLING.to_request(0)
    cached = {m[-1]["content"] for m in messages if cache_key("chat", MODEL_ID, m, request, 0) in cached_keys}
    assert n // 3 <= len(cached) < len(messages)
    before = len(fault_server.log)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    asked_after = [e["text"] for e in fault_server.log[before:]]
    assert not set(asked_after) & cached and len(asked_after) == len(messages) - len(cached)
    sampled = len(messages)

    reference = run(llm_cfg(kg, tmp_path / "ref", fault_server.url, num=n))  # uninterrupted, no shared cache
    assert reference["kept"] == sampled
    assert (tmp_path / "out" / "records.jsonl").read_bytes() == (tmp_path / "ref" / "records.jsonl").read_bytes()


# ---------------------------------------------------------------------------------------------- seeds/kg


@pytest.mark.skipif(not (SEEDS / "plants.tsv").exists(), reason="seeds/kg/plants.tsv not written yet")
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_seed_graph_template_mode(tmp_path, lang):
    stats = run(
        SelfKGConfig(graph=SEEDS / "plants.tsv", labels=SEEDS / "labels.zh.tsv", out=tmp_path, num=120, lang=lang)
    )
    G = load_graph(SEEDS / "plants.tsv", labels=SEEDS / "labels.zh.tsv")
    records = read_examples(tmp_path / "records.jsonl")
    assert stats["kept"] == len(records) == 120 and stats["rejected"] == 0
    for record in records:
        assert_supported(record, G)
    assert stats["coverage"]["entities"]["share"] >= 0.95 and stats["coverage"]["relations"]["share"] == 1.0
    assert stats["graph"]["labels"]["unused"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not (SEEDS / "plants.tsv").exists(), reason="seeds/kg/plants.tsv not written yet")
def test_llm_mode_with_the_embedded_model(embedded_server_url, tmp_path):
    """Real SmolLM2-135M: whatever it keeps must be grounded; the yield is recorded in stats.json."""
    from tests.plugins.models import EMBEDDED_MODEL

    cfg = SelfKGConfig(
        graph=SEEDS / "plants.tsv",
        out=tmp_path,
        num=16,
        mode="llm",
        seed=0,
        llm=LLMConfig(base_urls=(embedded_server_url,), model=EMBEDDED_MODEL, timeout=300),
        sampling=SamplingParams(temperature=0.3, max_tokens=160, seed=0),
    )
    stats = run(cfg)
    G = load_graph(SEEDS / "plants.tsv")
    kept = read_examples(tmp_path / "records.jsonl")
    assert stats["llm"]["succeeded"] + stats["llm"]["cached"] == stats["sampled"] == 16
    assert stats["kept"] == len(kept) >= 1, stats["rejects_by_reason"]
    for record in kept:
        assert_supported(record, G, every_tail=False)
    print(f"\nSmolLM2-135M self-kg yield: {stats['kept']}/{stats['sampled']}, rejects {stats['rejects_by_reason']}")
