"""Multi-turn Self-Instruct: openers, simulated follow-ups, per-turn filters, cut-back, resume, Chinese.

Scripted tests run against the fault server, whose responder plays a decent model: it continues opener
lists, answers about the last user turn, and writes follow-ups that pick up a word of the last answer. A test
makes one turn of every conversation fail in a named way and checks what the filters do with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import ConfigError
from datagen.formats import read_any
from datagen.generate.multiturn import (
    FOLLOWUP_KINDS,
    MultiTurnConfig,
    build_followup_prompt,
    check_answer,
    check_followup,
    generate,
    plan_conversation,
    read_seed_dialogues,
    request_hash,
    role_alternation_error,
)
from datagen.llm.client import LLMConfig
from datagen.records import read_examples
from datagen.rouge import rouge_l
from datagen.text import detect_lang
from tests.plugins.faults import MODEL_ID

SEEDS_EN = "seeds/seed_dialogues.jsonl"
SEEDS_ZH = "seeds/seed_dialogues.zh.jsonl"

VERBS = ["fix", "plan", "explain", "improve", "choose", "clean", "organise", "compare", "learn", "repair"]
NOUNS = [
    "garden",
    "bicycle",
    "budget",
    "kitchen",
    "resume",
    "aquarium",
    "spreadsheet",
    "guitar",
    "balcony",
    "laptop",
    "recipe",
    "marathon",
    "sourdough",
    "terrarium",
    "podcast",
    "compost",
    "sweater",
    "telescope",
    "violin",
    "tent",
]
VOCAB_ZH = list("山水风云雨雪花草树木鸟鱼虫石金银铜铁春夏秋冬东西南北天地日月星辰江河湖海")
FOLLOWUP_HEAD = ("In each conversation the user reads", "在每段对话里")
CHAT_HEAD = ("Here is a conversation", "下面是一段")
OPENER_HEAD = ("Come up with a series of questions", "请想出一系列用户", "You are asked to come up with", "请设计")


def fake_opener(digest: bytes, i: int, lang: str) -> str:
    rng = random.Random(digest + bytes([i]))
    if lang == "zh":
        return f"怎么照顾{''.join(rng.sample(VOCAB_ZH, 6))}的花园？"
    words = rng.sample(NOUNS, 6)
    return f"How to {rng.choice(VERBS)} {' '.join(words[:3])} with {' '.join(words[3:])}?"


def transcript_users(prompt: str) -> list[str]:
    """User turns of the conversation in a follow-up prompt (the block after the worked example)."""
    block = prompt.rstrip().rsplit("\n\n", 1)[-1] if "\n\n" in prompt else prompt
    return [
        re.sub(r"^(User: |用户：)", "", line)
        for line in block.splitlines()[:-1]
        if line.startswith(("User: ", "用户："))
    ]


def scripted_answer(user: str, turn: int, lang: str) -> str:
    """The scripted assistant's answer to ``user`` at ``turn``: about its words, worded differently per turn."""
    if lang == "zh":
        topic = re.sub(r"[^\u4e00-\u9fff]", "", user)[:6]
        return [
            f"关于{topic}，先从小处做起，每天记录一次。",
            f"{topic}的关键是拆成几个小目标，每周检查进度。",
            f"如果时间紧，就只做{topic}里最重要的部分，其余的以后再说。",
        ][turn]
    words = [w for w in re.findall(r"[a-z]+", user.lower()) if len(w) > 4] or ["things"]
    return [
        f"For {words[-1]}, start small and keep notes on the {words[0]} every evening.",
        f"The {words[-1]} part matters most: check it twice a week and adjust slowly if results lag.",
        f"With so little time, focus on the {words[-1]} alone and skip everything optional.",
    ][turn]


def scripted(lang: str = "en", fail: dict | None = None):
    """A responder playing a decent model; ``fail[(role, turn)]`` replaces the answer at that turn.

    A replacement is text, ``(text, finish_reason)``, or a callable of the conversation's user turns.
    """
    fail = fail or {}

    def respond(kind, body):
        if kind == "chat" and not body["messages"][-1]["content"].startswith(OPENER_HEAD + FOLLOWUP_HEAD + CHAT_HEAD):
            users = [m["content"] for m in body["messages"] if m["role"] == "user"]
            turn = len(users) - 1
            if ("assistant", turn) in fail:
                reply = fail[("assistant", turn)]
                return reply(users) if callable(reply) else reply
            return scripted_answer(users[-1], turn, lang)
        prompt = body.get("prompt") if kind == "completion" else body["messages"][-1]["content"]
        digest = hashlib.sha256(prompt.encode() + str(body.get("seed")).encode()).digest()
        if prompt.startswith(OPENER_HEAD):
            start = len(re.findall(r"^\d+\.", prompt, re.M))
            items = [fake_opener(digest, i, lang) for i in range(3)]
            if kind == "chat":
                return "\n".join(f"{k}. {t}" for k, t in enumerate(items, start=1))
            return " " + items[0] + "".join(f"\n{start + k}. {t}" for k, t in enumerate(items[1:], start=1))
        users = transcript_users(prompt)
        turn = len(users)
        if ("user", turn) in fail:
            reply = fail[("user", turn)]
            return reply(users) if callable(reply) else reply
        answer = re.findall(r"(?:Assistant: |助手：)(.*)", prompt)[-1]
        if lang == "zh":
            return [f" {answer[2:6]}具体要怎么做？", f" 如果每天只有二十分钟，{answer[:4]}还来得及吗？"][turn - 1]
        words = [w for w in re.findall(r"[a-z]+", answer.lower()) if len(w) > 4]
        if turn == 1:
            return f" Could you say more about the {words[0]} part?"
        return f" What if I only have {turn * 10} minutes a day for the {words[-1]}, does that change things?"

    return respond


def config(tmp_path, url, **overrides):
    settings = dict(
        seeds=SEEDS_EN,
        out=tmp_path / "out",
        num_conversations=6,
        batch_size=2,
        llm=LLMConfig(base_urls=(url,), model=MODEL_ID, cache_path=tmp_path / "cache.sqlite", backoff_base=0.01),
    )
    settings.update(overrides)
    return MultiTurnConfig(**settings)


def assert_alternates(messages):
    assert role_alternation_error(messages) is None, messages
    body = messages[1:] if messages[0]["role"] == "system" else messages
    assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2)
    assert all(m["content"].strip() for m in body)


# ------------------------------------------------------------------------------------------ end to end


def test_end_to_end_records_alternate_and_carry_the_first_exchange(fault_server, tmp_path):
    fault_server.responder = scripted()
    stats = asyncio.run(generate(config(tmp_path, fault_server.url)))
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert stats["conversations"] == stats["kept"] == len(records) == 6 and stats["target_reached"]
    assert stats["rejected"] == sum(stats["opener_rejects"].values()) and not stats["turn_failures"]
    seeds_first = {s["instruction"] for s in read_seed_dialogues(SEEDS_EN)}
    lines = (tmp_path / "out" / "openers.jsonl").read_text().splitlines()
    openers = {json.loads(line)["instruction"] for line in lines}
    for record in records:
        assert_alternates(record.messages)
        users = [m["content"] for m in record.messages if m["role"] == "user"]
        answers = [m["content"] for m in record.messages if m["role"] == "assistant"]
        assert record.messages[0] == {
            "role": "system",
            "content": "You are a helpful assistant. Answer briefly, in at most four sentences.",
        }
        assert record.instruction == users[0] and record.output == answers[0] and record.input == ""
        assert record.meta["method"] == "self-instruct-multiturn" and record.lang == "en"
        assert record.meta["turns"] == len(users) == record.meta["planned_turns"] and 2 <= len(users) <= 3
        assert len(record.meta["followups"]) == len(users) - 1 and set(record.meta["followups"]) <= set(FOLLOWUP_KINDS)
        assert (
            record.meta["model"] == MODEL_ID and record.meta["prompt"]["followup"]["name"] == "en/multiturn_followup"
        )
        assert record.meta["source"]["seeds"] and set(record.meta["source"]["machine"]) <= openers
        assert users[0] not in seeds_first and "cut" not in record.meta
    assert stats["turns"] == {
        str(n): sum(r.meta["turns"] == n for r in records)
        for n in (2, 3)
        if any(r.meta["turns"] == n for r in records)
    }
    assert sum(stats["turns"].values()) == 6 and stats["llm"]["succeeded"] == len(fault_server.log)
    # the records read back as conversations in the formats module too
    assert [e.messages for e in read_any(tmp_path / "out" / "records.jsonl")] == [r.messages for r in records]


def test_opener_prompts_show_six_seed_and_two_machine_first_turns(fault_server, tmp_path):
    fault_server.responder = scripted()
    asyncio.run(generate(config(tmp_path, fault_server.url, num_conversations=8)))
    seeds = {" ".join(s["instruction"].split()) for s in read_seed_dialogues(SEEDS_EN)}
    prompts = [e["body"]["prompt"] for e in fault_server.log if e["body"].get("prompt", "").startswith(OPENER_HEAD)]
    assert len(prompts) >= 4
    for i, prompt in enumerate(prompts):
        listed = re.findall(r"^\d+\. (.*)$", prompt, re.M)
        assert len(listed) == 8 and prompt.rstrip().endswith("9.")
        assert sum(t in seeds for t in listed) == (8 if i < 2 else 6)  # round 0 has no machine openers yet


def test_followup_prompts_name_one_kind_and_hold_the_whole_conversation(fault_server, tmp_path):
    fault_server.responder = scripted()
    asyncio.run(generate(config(tmp_path, fault_server.url, min_turns=3, max_turns=3)))
    prompts = [e["body"]["prompt"] for e in fault_server.log if e["body"].get("prompt", "").startswith(FOLLOWUP_HEAD)]
    assert len(prompts) == 12  # 6 conversations × 2 follow-ups
    goals = {
        "clarify": "asks what something",
        "deeper": "asks for more detail",
        "constraint": "adds a new condition",
        "format": "asks for the last answer",
    }
    for prompt in prompts:
        assert sum(goal in prompt for goal in goals.values()) == 1
        assert prompt.endswith("\nUser:") and len(transcript_users(prompt)) in (1, 2)
    for record in read_examples(tmp_path / "out" / "records.jsonl"):
        users = [m["content"] for m in record.messages if m["role"] == "user"]
        mine = sorted((p for p in prompts if transcript_users(p)[0] == users[0]), key=len)
        # one prompt per follow-up, the second with both earlier user turns in view, each naming its own kind
        assert [transcript_users(p) for p in mine] == [users[:1], users[:2]]
        assert [goals[k] in p for k, p in zip(record.meta["followups"], mine)] == [True, True]


def test_turn_counts_and_kinds_come_from_the_seeded_rng():
    cfg = MultiTurnConfig(seeds="s", out="o", min_turns=2, max_turns=4, seed=3)
    plans = [plan_conversation(cfg, i, f"opener {i}") for i in range(200)]
    assert plans == [plan_conversation(cfg, i, f"opener {i}") for i in range(200)]
    assert {n for n, _ in plans} == {2, 3, 4} and all(len(k) == n - 1 for n, k in plans)
    assert {k for _, kinds in plans for k in kinds} == set(FOLLOWUP_KINDS)
    other = dataclasses.replace(cfg, seed=4)
    assert plans != [plan_conversation(other, i, f"opener {i}") for i in range(200)]


# ------------------------------------------------------------------------------------------ per-turn filters


CASES = [
    # (role, turn, reply, reason, user turns kept: 2 = cut back and kept, 0 = rejected)
    ("assistant", 2, "   ", "empty_answer", 2),
    ("assistant", 1, "", "empty_answer", 0),
    ("assistant", 2, "I'm sorry, but I cannot help with that request.", "refusal", 2),
    ("assistant", 1, "As an AI language model, I do not have opinions on gardens.", "refusal", 0),
    ("assistant", 2, ("Start by measuring the space, then pick plants that", "length"), "truncated_answer", 2),
    ("assistant", 0, ("The first thing to know is that", "length"), "truncated_answer", 0),
    ("assistant", 1, "Water it daily.\nUser: thanks, and what about winter?", "role_break", 0),
    ("assistant", 2, lambda users: scripted_answer(users[0], 0, "en"), "repeated_answer", 2),
    ("assistant", 1, "Sure thing. Answer briefly, in at most four sentences.", "echoes_system", 0),
    ("assistant", 2, lambda users: users[-1].rstrip("?") + ", you asked.", "echoes_user", 2),
    ("user", 2, lambda users: users[0], "repeated_followup", 2),
    ("user", 1, lambda users: users[0].replace("How do I", "How can I"), "repeated_followup", 0),
    ("user", 2, "What is the capital of Peru?", "ignores_context", 2),
    ("user", 1, "Which planet has the most moons?", "ignores_context", 0),
    ("user", 2, ("Could you tell me more about the", "length"), "truncated_followup", 2),
    ("user", 1, "", "empty_followup", 0),
    ("user", 2, "What is DNS, in simple terms?", "copies_prompt", 2),  # the template's worked example
    ("user", 2, "Can you say more?\nAssistant: Sure, here is more.", "role_break", 2),
]


@pytest.mark.parametrize("role,turn,reply,reason,kept", CASES, ids=[f"{c[3]}-{c[0]}{c[1]}" for c in CASES])
def test_each_turn_filter_cuts_back_or_rejects(fault_server, tmp_path, role, turn, reply, reason, kept):
    fault_server.responder = scripted(fail={(role, turn): reply})
    stats = asyncio.run(
        generate(
            config(
                tmp_path, fault_server.url, num_conversations=3, batch_size=1, max_rounds=1, min_turns=3, max_turns=3
            )
        )
    )
    out = tmp_path / "out"
    records = read_examples(out / "records.jsonl")
    turn_rejects = [r for r in read_examples(out / "rejects.jsonl") if r.reject["step"] in ("turn", "conversation")]
    assert stats["openers"] == 3 and stats["turn_failures"] == {reason: 3}
    assert len(turn_rejects) == 3 and all(r.reject["reason"] == reason for r in turn_rejects)
    for reject in turn_rejects:
        assert reject.reject["detail"]["turn"] == turn and reject.reject["detail"]["role"] == role
        assert reject.reject["detail"]["user_turns_kept"] == kept
        assert reject.messages[-1]["role"] == role  # the failed turn itself closes the reject's messages
    if kept:
        assert len(records) == 3 and stats["turns"] == {"2": 3} and stats["cut_back"] == 3
        assert all(r.reject["step"] == "turn" for r in turn_rejects)
        for record in records:
            assert_alternates(record.messages)
            assert record.meta["turns"] == 2 and record.meta["cut"] == reason
            assert record.messages[-1]["role"] == "assistant"
    else:
        assert records == [] and stats["conversation_rejects"] == {reason: 3} and not stats["target_reached"]
        assert all(r.reject["step"] == "conversation" for r in turn_rejects)


def test_failed_conversations_are_topped_up_with_new_openers(fault_server, tmp_path):
    """Half the conversations fail at their second answer; the run bootstraps more until 4 are kept."""

    def refuse_some(users):
        if int(hashlib.sha256(users[0].encode()).hexdigest(), 16) % 2:
            return "I'm sorry, but I can't help with that."
        return f"Keep the {users[-1].split()[-1].strip('?')} simple and review it weekly."

    fault_server.responder = scripted(fail={("assistant", 1): refuse_some})
    stats = asyncio.run(generate(config(tmp_path, fault_server.url, num_conversations=4, batch_size=1)))
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert len(records) == 4 and stats["target_reached"] and stats["conversation_rejects"]["refusal"] >= 1
    rejected = stats["conversation_rejects"]
    assert set(rejected) <= {"refusal", "over_target"} and stats["turn_failures"] == {"refusal": rejected["refusal"]}
    assert stats["openers"] == 4 + sum(rejected.values()) and stats["rounds"] >= 2
    for record in records:
        assert_alternates(record.messages)
        assert record.meta["turns"] >= 2


def test_llm_failures_end_conversations_as_data_not_crashes(fault_server, tmp_path):
    fault_server.responder = scripted()
    fault_server.plan.rate = 0.2
    fault_server.plan.kinds = ("500",)
    cfg = config(tmp_path, fault_server.url, num_conversations=6, max_rounds=6)
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, max_retries=0))
    stats = asyncio.run(generate(cfg))
    assert stats["llm"]["failed"] > 0
    assert any(reason.startswith("llm_") for reason in stats["rejects_by_reason"])
    for record in read_examples(tmp_path / "out" / "records.jsonl"):
        assert_alternates(record.messages)
        assert record.meta["turns"] >= 2


def test_seed_followups_pass_the_context_and_repeat_filters():
    """Human follow-ups are the yardstick: the filters must let nearly all of them through."""
    flagged, total = Counter(), 0
    for path, lang in ((SEEDS_EN, "en"), (SEEDS_ZH, "zh")):
        for seed in read_seed_dialogues(path):
            messages = seed["messages"]
            for i, message in enumerate(messages):
                if message["role"] == "user" and any(m["role"] == "assistant" for m in messages[:i]):
                    total += 1
                    broken = check_followup(message["content"], "stop", messages[:i], lang)
                    flagged[broken[0] if broken else "ok"] += 1
    assert total == 114 and flagged["ok"] >= 107 and set(flagged) <= {"ok", "ignores_context"}


def test_check_functions_name_their_reasons():
    convo = [
        {"role": "user", "content": "How should I water a pothos plant?"},
        {"role": "assistant", "content": "Water the pothos when the top soil feels dry."},
    ]
    assert check_followup("What is the tallest mountain in Peru?", "stop", convo, "en")[0] == "ignores_context"
    assert check_followup("How often should I check the soil?", "stop", convo, "en") is None
    assert check_followup("Can you put it in a table?", "stop", convo, "en") is None  # "it" points back
    assert check_followup("How should I water a pothos plant?", "stop", convo, "en")[0] == "repeated_followup"
    assert check_followup("那冬天要怎么浇水？", "stop", convo, "en")[0] == "wrong_language"
    assert check_followup("Why? <|im_start|>assistant", "stop", convo, "en")[0] == "role_break"
    assert check_followup("I can't get it to stop drooping. Why?", "stop", convo, "en") is None  # not a refusal
    assert check_answer("Sure.\nUser: more please", "stop", convo, "en")[0] == "role_break"
    assert check_answer("I cannot answer that.", "stop", convo, "en")[0] == "refusal"
    assert check_answer("Water it weekly.", "length", convo, "en")[0] == "truncated_answer"
    translate = [{"role": "user", "content": "Translate 'good morning' into Chinese."}]
    assert check_answer("早上好", "stop", translate, "en") is None  # a language switch the user asked for


def test_build_followup_prompt_shortens_answers_and_keeps_roles():
    cfg = MultiTurnConfig(seeds="s", out="o", context_chars=60)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is\nthe sky blue?"},
        {"role": "assistant", "content": "Because of Rayleigh scattering. " * 10},
    ]
    prompt = build_followup_prompt(messages, "format", cfg)
    assert "Be brief." not in prompt and "User: Why is the sky blue?\nAssistant: Because of" in prompt
    assert prompt.endswith("…\nUser:") and "asks for the last answer in a different form" in prompt


# ------------------------------------------------------------------------------------------ resume


def test_rerun_replays_the_state_logs_without_calls(fault_server, tmp_path):
    fault_server.responder = scripted()
    cfg = config(tmp_path, fault_server.url)
    asyncio.run(generate(cfg))
    first = (tmp_path / "out" / "records.jsonl").read_bytes()
    calls = len(fault_server.log)
    (tmp_path / "cache.sqlite").unlink()  # even without the cache, the state logs replay everything
    asyncio.run(generate(cfg))
    assert len(fault_server.log) == calls and (tmp_path / "out" / "records.jsonl").read_bytes() == first


def test_state_from_other_settings_is_refused(fault_server, tmp_path):
    fault_server.responder = scripted()
    asyncio.run(generate(config(tmp_path, fault_server.url)))
    with pytest.raises(ConfigError, match="other seeds or settings"):
        asyncio.run(generate(config(tmp_path, fault_server.url, seed=7)))


def test_killed_run_resumes_to_the_uninterrupted_result_without_asking_twice(fault_server, tmp_path):
    """SIGKILL the CLI mid-conversation; the re-run ends with the uninterrupted result and re-asks no logged turn."""
    fault_server.responder = scripted()
    fault_server.plan.latency = 0.05
    args = [
        "--seeds",
        SEEDS_EN,
        "--num-conversations",
        "8",
        "--batch-size",
        "2",
        "--max-turns",
        "3",
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        "--concurrency",
        "2",
    ]
    env_a = {**os.environ, "DATAGEN_HOME": str(tmp_path / "home-a")}
    reference = subprocess.run(
        [sys.executable, "-m", "datagen", "self-instruct-multiturn", *args, "--out", str(tmp_path / "a")],
        env=env_a,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr
    assert "wrote 8 conversations" in reference.stdout

    env_b = {**os.environ, "DATAGEN_HOME": str(tmp_path / "home-b")}
    cmd = [sys.executable, "-m", "datagen", "self-instruct-multiturn", *args, "--out", str(tmp_path / "b")]
    proc = subprocess.Popen(cmd, env=env_b, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "b" / ".state" / "turns.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state.exists() and state.read_bytes().count(b"\n") >= 6):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "b" / "records.jsonl").exists()
    logged = {
        json.loads(line)["prompt"]
        for name in ("turns", "openers")
        for line in (tmp_path / "b" / ".state" / f"{name}.jsonl").read_text().splitlines()
        if line.strip()
    }
    assert len(logged) >= 6
    before = len(fault_server.log)
    resumed = subprocess.run(cmd, env=env_b, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("records.jsonl", "rejects.jsonl"):
        assert (tmp_path / "b" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    asked_again = [
        e
        for e in fault_server.log[before:]
        if request_hash(e["kind"], e["body"]["messages" if e["kind"] == "chat" else "prompt"]) in logged
    ]
    assert asked_again == []
    assert 0 < len(fault_server.log) - before < before


# ------------------------------------------------------------------------------------------ Chinese, chat style


def test_chinese_seeds_yield_chinese_conversations(fault_server, tmp_path):
    fault_server.responder = scripted("zh")
    stats = asyncio.run(generate(config(tmp_path, fault_server.url, seeds=SEEDS_ZH, lang="zh", num_conversations=4)))
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert len(records) == 4 and stats["lang"] == "zh" and not stats["turn_failures"]
    for record in records:
        assert_alternates(record.messages)
        assert record.lang == "zh" and record.meta["turns"] >= 2
        assert all(detect_lang(m["content"]) == "zh" for m in record.messages)
        assert record.meta["prompt"]["openers"]["name"] == "zh/multiturn_openers"
    prompts = [e["body"]["prompt"] for e in fault_server.log if e["kind"] == "completion"]
    assert any(p.startswith("请想出一系列用户") for p in prompts) and any(p.endswith("\n用户：") for p in prompts)
    reasons = stats["opener_rejects"]
    assert "non_ascii_start" not in reasons and "wrong_language" not in reasons


def test_chat_style_asks_chat_questions_for_openers_and_followups(fault_server, tmp_path):
    fault_server.responder = scripted()
    stats = asyncio.run(generate(config(tmp_path, fault_server.url, style="chat", num_conversations=3)))
    assert stats["kept"] == 3 and all(e["kind"] == "chat" for e in fault_server.log)
    texts = [e["text"] for e in fault_server.log]
    assert any(t.startswith("You are asked to come up with 8 diverse first messages") for t in texts)
    assert any(t.startswith("Here is a conversation") and "Write the user's next message" in t for t in texts)


def test_opener_filters_reject_near_duplicates_and_blacklisted_first_turns(fault_server, tmp_path):
    seed = "I'm spending a week in Iceland in October. What should I pack?"
    near = "I'm spending a week in Iceland in November. What should I pack?"
    assert rouge_l(near, seed) >= 0.7
    base = scripted()
    first = {"done": False}

    def respond(kind, body):
        if body.get("prompt", "").startswith(OPENER_HEAD) and not first["done"]:
            first["done"] = True
            return (
                f" {near}\n10. Draw a diagram of my kitchen for me, please.\n"
                "11. How do I plan a tent trip with my guitar?"
            )
        return base(kind, body)

    fault_server.responder = respond
    asyncio.run(generate(config(tmp_path, fault_server.url, num_conversations=2, batch_size=1)))
    rejects = {
        r.instruction: r.reject
        for r in read_examples(tmp_path / "out" / "rejects.jsonl")
        if r.reject["step"] == "opener"
    }
    assert rejects[near]["reason"] == "near_duplicate" and rejects[near]["detail"]["similar"] == seed
    assert rejects["Draw a diagram of my kitchen for me, please."]["reason"] == "blacklisted_keyword"
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert records[0].instruction == "How do I plan a tent trip with my guitar?"


# ------------------------------------------------------------------------------------------ config and CLI


@pytest.mark.parametrize(
    "field,value",
    [
        ("lang", "fr"),
        ("style", "poem"),
        ("num_conversations", 0),
        ("min_turns", 1),
        ("max_turns", 1),
        ("rouge_threshold", 1.5),
        ("repeat_threshold", 0),
        ("followup_kinds", ("rant",)),
        ("num_machine_in_prompt", 9),
        ("max_rounds", 0),
    ],
)
def test_config_errors_name_the_key(field, value):
    with pytest.raises(ConfigError, match=f"multiturn.{field}"):
        MultiTurnConfig(seeds="s", out="o", **{field: value})


def test_cli_rejects_seed_dialogues_whose_roles_do_not_alternate(tmp_path):
    bad = tmp_path / "seeds.jsonl"
    good = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    broken = {
        "messages": [
            {"role": "user", "content": "Hi?"},
            {"role": "user", "content": "Anyone?"},
            {"role": "assistant", "content": "Hello."},
        ]
    }
    bad.write_text(json.dumps(good) + "\n" + json.dumps(broken) + "\n")
    result = CliRunner().invoke(
        cli,
        [
            "self-instruct-multiturn",
            "--seeds",
            str(bad),
            "--out",
            str(tmp_path / "o"),
            "--num-conversations",
            "2",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
        ],
    )
    assert result.exit_code == 2 and f"{bad}:2:" in result.output and "alternate" in result.output
    assert not (tmp_path / "o").exists()


def test_seed_files_read_as_alternating_conversations():
    en, zh = read_seed_dialogues(SEEDS_EN), read_seed_dialogues(SEEDS_ZH)
    assert len(en) == 45 and len(zh) == 23
    for seed in en + zh:
        assert role_alternation_error(seed["messages"]) is None
        assert 2 <= sum(m["role"] == "user" for m in seed["messages"]) <= 4


# ------------------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_real_model_grows_english_conversations(embedded_server_url, tmp_path):
    """SmolLM2-135M over HTTP: a small run yields multi-turn conversations that pass every filter."""
    cfg = MultiTurnConfig(
        seeds=SEEDS_EN,
        out=tmp_path / "out",
        num_conversations=3,
        batch_size=2,
        min_turns=2,
        max_turns=2,
        max_rounds=2,
        seed=0,
        opener_sampling=dataclasses.replace(MultiTurnConfig.opener_sampling, seed=0),
        answer_sampling=dataclasses.replace(MultiTurnConfig.answer_sampling, seed=0),
        followup_sampling=dataclasses.replace(MultiTurnConfig.followup_sampling, seed=0),
        llm=LLMConfig(base_urls=(embedded_server_url,), timeout=900, concurrency=8, cache_path=tmp_path / "c.sqlite"),
    )
    stats = asyncio.run(generate(cfg))
    records = read_examples(tmp_path / "out" / "records.jsonl")
    assert records, stats
    for record in records:
        assert_alternates(record.messages)
        assert record.meta["turns"] >= 2 and all(detect_lang(m["content"]) == "en" for m in record.messages)
