"""Each heuristic rule rejects its case, in English and in Chinese, and lets good records through.

Every case runs through the filter stage itself (heuristics only), so each test also checks
|in| = |curated| + |rejects| and the reject's stage, reason and detail.
"""

from __future__ import annotations

import pytest

from datagen.filter.heuristics import RULES, evaluate, repeated_ngram_ratio, truncation, unbalanced
from datagen.filter.pipeline import FilterConfig
from datagen.records import Example
from datagen.text import find_phrase, normalize_text
from tests.filter.test_pipeline import run_filtered

HEURISTICS_ONLY = {"exact_dedup": False, "rouge_dedup": False, "embed_dedup": False}


def ex(instruction: str, output: str, input: str = "", **meta) -> Example:
    return Example(instruction=instruction, input=input, output=output, meta=meta)


GOOD_EN = ex(
    "Explain why the sky is blue.",
    "Sunlight is scattered by the molecules of the air, and blue light is scattered the most because "
    "its wavelength is short. That scattered blue light reaches our eyes from every direction.",
)
GOOD_ZH = ex(
    "解释天空为什么是蓝色的。",
    "阳光穿过大气时会被空气分子散射，波长较短的蓝光散射得最强，所以我们从各个方向看到的天空都是蓝色的。",
)


def _long_en(words: int) -> str:
    return " ".join(f"term{i}" for i in range(words)) + "."


def _long_zh(chars: int) -> str:
    return "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(chars)) + "。"


#: rule → (English case, Chinese case, good records that look close but must pass, config overrides)
CASES = {
    "instruction_empty": (ex("   ", "The sky is blue."), ex("", "天空是蓝色的。"), [], {}),
    "output_empty": (ex("Explain why the sky is blue.", ""), ex("解释天空为什么是蓝色的。", " \n "), [], {}),
    "instruction_too_short": (
        ex("Sky?", "The sky is blue."),
        ex("天空？", "天空是蓝色的。"),
        [ex("Sort these numbers.", "1, 2, 3"), ex("写一首诗。", "春风又绿江南岸。")],
        {},
    ),
    "instruction_too_long": (
        ex(_long_en(160), "The sky is blue."),
        ex(_long_zh(320), "天空是蓝色的。"),
        [ex(_long_en(140), "The sky is blue.")],
        {},
    ),
    "output_too_short": (
        ex("Explain why the sky is blue.", "Scattering."),
        ex("解释天空为什么是蓝色的。", "散射。"),
        [],
        {"output_length": (3, 2000), "output_length_zh": (5, 4000)},
    ),
    "output_too_long": (
        ex("Explain why the sky is blue.", _long_en(2100)),
        ex("解释天空为什么是蓝色的。", _long_zh(4100)),
        [ex("Is the sky blue?", "Yes.")],
        {},
    ),
    "output_equals_input": (
        ex("Correct the grammar of the sentence.", "He go to school every day.", input="He go to school every day."),
        ex(
            "修改下面句子中的语病。",
            "通过这次活动，使我们认识到了劳动的价值",
            input="通过这次活动，使我们认识到了劳动的价值。",
        ),
        [
            ex(
                "Correct the grammar of the sentence.",
                "He goes to school every day.",
                input="He go to school every day.",
            )
        ],
        {},
    ),
    "blacklisted_keyword": (
        ex("Draw a picture of a cat.", "Here is a cat."),
        ex("画一张公司组织结构的流程图。", "好的，这是流程图。"),
        [ex("Describe a cat in two sentences.", "Cats are small, curious hunters. They sleep a lot.")],
        {},
    ),
    "leading_punctuation": (
        ex("- Explain why the sky is blue.", GOOD_EN.output),
        ex("。解释天空为什么是蓝色的。", GOOD_ZH.output),
        [
            ex("《红楼梦》的作者是谁？", "《红楼梦》的作者是曹雪芹。"),
            ex('"Carpe diem": what does it mean?', "It means seize the day."),
        ],
        {},
    ),
    "url_in_prompt": (
        ex("Summarize the article.", "It is about rain.", input="https://example.com/news/rain"),
        ex("总结这篇文章的要点。", "文章讲的是降雨。", input="请看 www.example.cn/news/1"),
        [ex("Summarize the article.", "It is about rain.", input="Rain fell all week in the city.")],
        {},
    ),
    "image_placeholder": (
        ex("Describe what you see.", "A dog on a beach.", input="<image>"),
        ex("描述你看到的内容。", "沙滩上有一只狗。", input="[图片]"),
        [],
        {},
    ),
    "ai_identity": (
        ex("How do you feel today?", "As an AI language model, I do not have feelings."),
        ex("你今天心情怎么样？", "作为一个AI语言模型，我没有情绪。"),
        [ex("What is a language model?", "A language model predicts the next word in a text.")],
        {},
    ),
    "refusal": (
        ex("Tell me a joke about cats.", "I'm sorry, but I can't help with that request."),
        ex("讲一个关于猫的笑话。", "抱歉，我无法回答这个问题。"),
        [
            ex(
                "Give advice on sleep.",
                "Keep a fixed bedtime, a dark and cool room, and a screen-free last "
                "hour before bed. Caffeine late in the day and heavy dinners both make falling asleep harder. "
                "I cannot stress enough how much a regular wake-up time helps.",
            )
        ],
        {},
    ),
    "truncated": (
        ex(
            "Explain why the sky is blue.",
            "The sky is blue because sunlight is scattered by the small molecules in the",
        ),
        ex("解释天空为什么是蓝色的。", "天空是蓝色的，因为阳光在大气中被散射，"),
        [ex("Is 7 prime?", "Yes"), ex("列出三种水果。", "苹果、香蕉、橙子")],
        {},
    ),
    "unbalanced": (
        ex("Explain why the sky is blue.", "The sky is blue (because of Rayleigh scattering."),
        ex("解释天空为什么是蓝色的。", "天空是蓝色的（因为瑞利散射。"),
        [
            ex("List the steps to make tea.", "Steps: 1) boil water 2) add the tea 3) wait. Enjoy :)"),
            ex("解释“温故而知新”。", "“温故而知新”的意思是复习旧知识能得到新的体会。"),
        ],
        {},
    ),
    "repetition": (
        ex("Say something nice.", "I love you. " * 30),
        ex("说一句好听的话。", "我爱你，" * 40 + "我爱你。"),
        [
            ex(
                "Write four small Python functions.",
                "```python\n" + "".join(f"def f{i}(a, b):\n    return a + b\n\n" for i in range(6)) + "```",
            )
        ],
        {},
    ),
    "language_mismatch": (
        ex("Explain why the sky is blue.", GOOD_ZH.output),
        ex("解释天空为什么是蓝色的。", GOOD_EN.output),
        [
            ex("Translate into Chinese: good morning", "早上好，祝你今天愉快。"),
            ex("把这句话翻译成英文：早上好", "Good morning, have a nice day."),
            ex("用Python写一个函数，计算两个数的和。", "```python\ndef add(a, b):\n    return a + b\n```"),
            ex(
                "Summarize the text.",
                "文章介绍了城市里越来越多的年轻人在阳台上种菜。",
                input="越来越多的年轻人开始在阳台上种菜，既能吃到新鲜蔬菜，也能放松心情。",
            ),
        ],
        {},
    ),
}


def test_every_rule_has_a_case():
    from tests.filter.test_rules_context import CONTEXT_CASES

    assert set(CASES) | set(CONTEXT_CASES) == set(RULES)


@pytest.mark.parametrize("rule", list(CASES))
def test_rule_rejects_its_case_in_english_and_chinese(tmp_path, rule):
    bad_en, bad_zh, goods, overrides = CASES[rule]
    records = [bad_en, GOOD_EN, bad_zh, GOOD_ZH, *goods]
    curated, rejects, stats = run_filtered(tmp_path, records, **HEURISTICS_ONLY, **overrides)
    assert [r.id for r in rejects] == [bad_en.id, bad_zh.id]
    assert all(r.reject["stage"] == "heuristics" and r.reject["reason"] == rule for r in rejects), [
        (r.reject, r.meta) for r in rejects
    ]
    assert all(
        r.meta["filter"]["heuristic_score"] == 0.0 and r.meta["filter"]["heuristic_flags"][0] == rule for r in rejects
    )
    assert [e.id for e in curated] == [GOOD_EN.id, GOOD_ZH.id, *(g.id for g in goods)]
    assert all(0 < e.meta["filter"]["heuristic_score"] <= 1 for e in curated)
    assert stats["stages"]["heuristics"]["reasons"] == {rule: 2}


def test_skip_rules_lets_a_rule_through(tmp_path):
    bad = CASES["blacklisted_keyword"][0]
    curated, rejects, _ = run_filtered(tmp_path, [bad], skip_rules=("blacklisted_keyword",), **HEURISTICS_ONLY)
    assert [e.id for e in curated] == [bad.id] and rejects == []
    curated, rejects, _ = run_filtered(tmp_path, [bad], blacklist=(), **HEURISTICS_ONLY)
    assert [e.id for e in curated] == [bad.id] and rejects == []
    curated, rejects, _ = run_filtered(tmp_path, [GOOD_EN], blacklist=("sky",), **HEURISTICS_ONLY)
    assert curated == [] and rejects[0].reject["detail"] == "sky"


def test_truncated_by_finish_reason_and_by_an_open_code_fence(tmp_path):
    by_meta = ex(GOOD_EN.instruction, GOOD_EN.output, finish_reason="length")
    by_fence = ex(
        "Write a Python function that adds two numbers.", "Here it is:\n```python\ndef add(a, b):\n    return a + b\n"
    )
    zh_fence = ex("用Python写一个函数，计算两个数的和。", "代码如下：\n```python\ndef add(a, b):\n")
    curated, rejects, _ = run_filtered(tmp_path, [by_meta, by_fence, zh_fence, GOOD_EN], **HEURISTICS_ONLY)
    assert [e.id for e in curated] == [GOOD_EN.id]
    assert [(r.reject["reason"], r.reject["detail"]) for r in rejects] == [
        ("truncated", "finish_reason=length"),
        ("truncated", "ends inside a code fence"),
        ("truncated", "ends inside a code fence"),
    ]


def test_heuristics_run_on_every_assistant_turn(tmp_path):
    def chat(*turns):
        return {
            "messages": [{"role": "system", "content": "Be brief."}]
            + [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(turns)]
        }

    good = chat(
        "What is the boiling point of water?",
        "It boils at 100 degrees Celsius at sea level.",
        "And at the top of Everest?",
        "About 70 degrees Celsius, because the air pressure is lower.",
    )
    refusal_late = chat(
        "What is the boiling point of water?",
        "It boils at 100 degrees Celsius at sea level.",
        "And at the top of Everest?",
        "I'm sorry, but I cannot answer that.",
    )
    zh_mismatch = chat(
        "水的沸点是多少？",
        "在标准大气压下，水的沸点是100摄氏度。",
        "那在珠穆朗玛峰顶上呢？",
        "It is about 70 degrees Celsius because the pressure is lower.",
    )
    truncated_mid = chat(
        "Name three rivers in Europe.",
        "Three of the longest rivers are the Danube, the Rhine and the",
        "Thanks!",
        "You are welcome.",
    )
    records = [good, refusal_late, zh_mismatch, truncated_mid]
    curated, rejects, _ = run_filtered(tmp_path, records, **HEURISTICS_ONLY)
    assert len(curated) == 1 and curated[0].messages[-1]["content"].startswith("About 70")
    assert [(r.reject["reason"], r.reject["detail"]) for r in rejects] == [
        ("refusal", "turn 4: i'm sorry, but"),
        ("language_mismatch", "turn 4: zh → en"),
        ("truncated", "turn 2: ends mid-sentence on 'the'"),
    ]


def test_score_prefers_full_answers_without_repetition():
    cfg = FilterConfig()
    short = evaluate(
        ex("Explain why the sky is blue.", "Scattering."), FilterConfig(skip_rules=("short_open_answer",))
    )
    full = evaluate(GOOD_EN, cfg)
    looping = evaluate(
        ex("Explain why the sky is blue.", "Blue light scatters more. " * 12), FilterConfig(skip_rules=("repetition",))
    )
    assert full.passed and short.passed and looping.passed
    assert full.score > short.score and full.score > looping.score
    assert evaluate(ex("Sky?", "Blue."), cfg).score == 0.0


def test_flags_list_every_broken_rule_in_rule_order():
    result = evaluate(ex("- Draw a picture", "As an AI language model, I cannot draw (sorry"), FilterConfig())
    assert [rule for rule, _ in result.flags] == [
        "blacklisted_keyword",
        "leading_punctuation",
        "ai_identity",
        "refusal",
        "unbalanced",
    ]


def test_text_helpers():
    assert normalize_text("Ｈｅｌｌｏ，  World!") == "hello world"
    assert normalize_text("你好，世界！") == normalize_text("你好,世界!") == "你好 世界"
    assert find_phrase("抱歉, 我无法回答。", ["抱歉，我无法"]) == "抱歉，我无法"
    assert find_phrase("I’m sorry, but no.", ["i'm sorry, but"]) == "i'm sorry, but"
    assert repeated_ngram_ratio("too short", 4) is None
    assert repeated_ngram_ratio("I love you. " * 30, 4) > 0.9
    assert unbalanced("Call f(x) and g(y)") is None and unbalanced("a) one b) two :)") is None
    assert unbalanced("(see figure 1) and step 2) later") is None and unbalanced("步骤：1）烧水 2）加茶叶。") is None
    assert unbalanced("A sad day :( but fine.") is None and unbalanced("He said (that") == "'(' left open"
    assert unbalanced("Done) now") == "')' with no '('"
    assert unbalanced('He said "hi') == "odd number of '\"'"
    assert unbalanced("```python\nprint(1)\n") == "code fence ``` left open"
    assert truncation('He said "hello"', True, None) is None and truncation("好的，", True, None) == "ends with '，'"
    assert truncation("Yes", True, None) is None and truncation("Here is the list:", True, None) == "ends with ':'"
    assert (
        truncation("Fine.", True, "length") == "finish_reason=length" and truncation("Fine.", False, "length") is None
    )
