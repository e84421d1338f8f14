"""datagen.text: the text primitives every stage shares, defined once and read the same way by each user."""

from __future__ import annotations

import doctest
import re

import pytest

import datagen.text as text
from datagen.filter import degenerate, heuristics, relevance
from datagen.generate import self_qa
from datagen.rouge import tokenize
from datagen.text import CODE_TASK, HAN, LANGS, REFUSAL_WINDOW, REFUSALS, STOP_WORDS, find_phrase, is_cjk


def test_the_module_examples_hold():
    result = doctest.testmod(text)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize(
    "char, cjk",
    [
        ("茶", True),
        ("〇", True),
        ("\U00020000", True),
        ("か", True),
        ("カ", True),
        ("한", True),
        ("ｶ", True),
        ("・", False),
        ("。", False),
        ("，", False),
        ("a", False),
        ("é", False),
        ("😀", False),
        (" ", False),
    ],
)
def test_cjk_is_one_set_that_rouge_tokenizes_a_character_at_a_time(char, cjk):
    assert is_cjk(char) is cjk
    assert (len(tokenize(char * 2)) == 2) is cjk  # rouge reads the same CJK set, one token per character


def test_han_is_the_chinese_part_of_cjk():
    assert re.fullmatch(f"[{HAN}]+", "汉字〇\U00020000") and not re.search(f"[{HAN}]", "かな한글abc")
    assert all(is_cjk(c) for c in "汉字〇\U00020000")


def test_every_list_has_an_english_and_a_chinese_half():
    assert LANGS == ("en", "zh")
    for table in (STOP_WORDS, text.BLACKLIST, text.LANGUAGE_WORDS, text.SIGN_OFFS, text.MEDIA_TASK_PATTERNS):
        assert set(table) == set(LANGS) and all(table[lang] for lang in LANGS)
    for phrases in (REFUSALS, text.AI_IDENTITY):
        assert any(p.isascii() for p in phrases) and any(not p.isascii() for p in phrases)


def test_the_users_read_the_shared_objects():
    assert relevance.content_stems("Please write a poem about the sea") == {"poem", "sea"}
    assert heuristics.CODE_TASK is degenerate.CODE_TASK is CODE_TASK
    assert self_qa.is_refusal("抱歉，我不知道。") == "抱歉,我不知道"


@pytest.mark.parametrize(
    "answer, refusal",
    [
        ("I'm sorry, but I can't help with that.", "i'm sorry, but"),
        ("很抱歉，我无法回答这个问题。", "抱歉,我无法"),
        ("I don't know the answer to that.", "i don't know the answer"),
        ("I don't know how to thank you enough for the flowers.", None),  # a thank-you letter, not a refusal
        ("Practice daily. " * 20 + "I cannot stress this enough.", None),  # past the window: not an opener
    ],
)
def test_refusals_are_openers_in_both_languages(answer, refusal):
    assert find_phrase(answer, REFUSALS, window=REFUSAL_WINDOW) == refusal


@pytest.mark.parametrize(
    "task, code",
    [
        ("Write a shell command to list hidden files.", True),
        ("Write a Python one-liner that squares a list.", True),
        ("用正则表达式匹配邮箱地址。", True),
        ("写一个Python程序计算阶乘。", True),
        ("Write a video script about recycling.", False),
        ("Write a mission statement for a bakery.", False),
        ("Design a training program for a 5 km run.", False),
        ("Write the set of numbers greater than 5 in interval notation.", False),
    ],
)
def test_code_task_names_code_not_words_that_also_mean_other_things(task, code):
    assert bool(CODE_TASK.search(task)) is code
