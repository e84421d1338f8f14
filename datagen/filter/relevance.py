"""Is the answer about its task at all? The ``unrelated_answer`` rule, a batched step of the heuristics stage.

An answer can pass every rule that reads it alone and still answer another question: "The stock market closed
higher today" to "Write a poem about the ocean". English answers are compared with their task by the shipped
sentence encoder (all-MiniLM-L6-v2, ``datagen.filter.semantic.load_encoder``): cosine of task and answer.
Measured on it, sound short answers score 0.18-0.63 ("What is the chemical symbol for gold?" → "Au" 0.18,
"Suggest a name for a bakery." → "Sweet Rise" 0.18, "What is the capital of Australia?" → "Canberra." 0.62),
answers to another task -0.05-0.04; ``relevance_min_cosine`` (0.1) sits between them.

Cost: the encoder is most of the filter's time, so it only reads the answers cheap signals leave in doubt.
An answer sharing a content word with its task ("sky", "scatter") is on topic and is never encoded; nor are
classification labels, yes/no answers, numbers, code and translations (whose answers rightly share no word
and no meaning vector with the request). Texts are encoded once per distinct string, in batches.

MiniLM reads Chinese as ``[UNK]`` (``semantic``'s module doc): measured on the quality fixtures, unrelated
Chinese answers score 0.38-0.66 against their task and sound ones 0.32-0.57, so the encoder cannot tell them
apart and Chinese answers are judged by the characters they share with the task instead. A Chinese answer of
``relevance_min_chars_zh`` CJK characters or more is unrelated when

- the task gives an input and the answer shares no character *bigram*, Latin word or number with task and
  input ("判断这句话的情感。" + a review → "地球绕太阳公转一周大约需要 365 天。"); or
- the task has no input, asks a question or for an explanation rather than for creative writing or a list, and
  the answer shares not one content character with it ("解释一下什么是人工智能。" → "红烧肉要先焯水……").

Creative tasks ("描述一下你理想中的周末", "写一句广告语") and lists ("列举中国的四大发明" → "造纸术 …") rightly
share no character with their prompt and are left alone, as are labels such as "积极": too little text. Known
gap: a sound answer to a short question can share no character with it ("我想学做饭，先学什么菜？" →
"可以从番茄炒蛋开始……") and is rejected.

    >>> overlap("What is the capital of Australia?", "Canberra."), overlap("Why is the sky blue?", "The sky scatters")
    (0, 1)
    >>> zh_unrelated("给下面的数字从小到大排序：8, 3, 5, 1", "熊猫主要生活在四川的竹林里。", 10)
    True
    >>> zh_unrelated("解释这行代码的作用：nums = sorted(set(nums))", "先用 set 去掉 nums 中的重复元素，再排序。", 10)
    False
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datagen.text import HAN, LANGUAGE_CUE, STOP_WORDS, detect_lang, is_cjk, latin_language

RULE = "unrelated_answer"

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_NUMERIC = re.compile(r"^[\s\d.,:%°+\-*/=×÷^()$€£¥]+[A-Za-z°%]{0,4}\.?$")
_YES_NO = re.compile(r"^\W*(?:yes|no|true|false|correct|incorrect|right|wrong|maybe)\b", re.IGNORECASE)


def content_stems(text: str) -> set[str]:
    """The English content words of ``text``, stemmed to 5 letters, stopwords out."""
    return {w.lower()[:5] for w in _WORD.findall(text) if w.lower() not in STOP_WORDS["en"] and len(w) > 2}


def overlap(task: str, answer: str) -> int:
    """Content words (stemmed to 5 letters, stopwords out) that ``task`` and ``answer`` share."""
    return len(content_stems(task) & content_stems(answer))


def zh_unrelated(task: str, answer: str, min_chars: int, has_input: bool = True) -> bool:
    """A Chinese answer of ``min_chars``+ CJK characters that shares nothing with its task (see module doc)."""
    if sum(1 for c in answer if is_cjk(c)) < min_chars:
        return False
    if has_input:
        return not _zh_tokens(task, bigrams=True) & _zh_tokens(answer, bigrams=True)
    if _CREATIVE_ZH.search(task) or _LISTED.search(answer):
        return False
    return not _zh_tokens(task) & _zh_tokens(answer)


_CREATIVE_ZH = re.compile(
    r"写|描述|创作|编|想象|设计|构思|起名|取名|广告|口号|诗|故事|祝福|列举|列出|推荐几|安排|计划"
)
_LISTED = re.compile(r"^\s*(?:\d+[.、)]|[-*•])", re.MULTILINE)


def _zh_tokens(text: str, bigrams: bool = False) -> set[str]:
    latin = {w.lower() for w in re.findall(r"[A-Za-z]{2,}|\d+", text)}
    if bigrams:
        runs = re.findall(f"[{HAN}]+", text)
        return latin | {r[k : k + 2] for r in runs for k in range(len(r) - 1)} | {r for r in runs if len(r) == 1}
    return ({c for c in text if is_cjk(c)} - STOP_WORDS["zh"]) | latin


#: Characters of a task or answer the encoder reads (about 80 words).
_HEAD = 500


@dataclass
class Item:
    """One answer to check: its record's index, the task text and the answer."""

    index: int
    task: str
    answer: str
    is_classification: bool | None = None
    has_input: bool = False


def needs_encoder(item: Item) -> bool:
    """Whether cheap signals leave this English answer in doubt (only those are encoded)."""
    answer = item.answer.strip()
    if item.is_classification or "```" in answer or _NUMERIC.match(answer) or _YES_NO.match(answer):
        return False
    if detect_lang(answer) != "en" or detect_lang(item.task) != "en":
        return False
    if LANGUAGE_CUE.search(item.task) and (len(answer.split()) < 6 or latin_language(answer) != "en"):
        return False  # a translation shares no word with its request; a long English answer to one is checked
    if not _WORD.search(answer):
        return False
    return overlap(item.task, answer) == 0


def unrelated(
    items: Sequence[Item],
    *,
    min_cosine: float,
    min_chars_zh: int,
    model: str | None = None,
    device: str | None = None,
    batch_size: int = 64,
) -> tuple[list[tuple[int, str]], dict[str, float]]:
    """``(index, detail)`` for every item whose answer is unrelated to its task, and the step's stats."""
    found: list[tuple[int, str]] = []
    doubtful: list[Item] = []
    for item in items:
        if detect_lang(item.answer) == "zh" or detect_lang(item.task) == "zh":
            if (
                detect_lang(item.answer) == detect_lang(item.task)
                and not item.is_classification
                and zh_unrelated(item.task, item.answer, min_chars_zh, item.has_input)
            ):
                found.append((item.index, "no content character in common with the task"))
        elif needs_encoder(item):
            doubtful.append(item)
    stats = {"checked": len(items), "encoded": len(doubtful)}
    if doubtful:
        from datagen.filter import (
            semantic,  # loads torch: only when an answer is in doubt
        )

        # The head of each text says what it is about; shorter inputs encode faster (cost grows with length).
        texts = sorted({t[:_HEAD] for item in doubtful for t in (item.task, item.answer)})
        vectors = semantic.encode(texts, model, device, batch_size)
        row = {t: k for k, t in enumerate(texts)}
        for item in doubtful:
            cosine = float(np.dot(vectors[row[item.task[:_HEAD]]], vectors[row[item.answer[:_HEAD]]]))
            if cosine < min_cosine:
                found.append((item.index, f"cosine {cosine:.2f} < {min_cosine} between task and answer"))
    found.sort()
    return found, stats
