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

MiniLM reads Chinese as ``[UNK]`` (``semantic``'s module doc), so Chinese answers are not encoded: a Chinese
answer of ``relevance_min_chars_zh`` CJK characters or more that shares not one content character with its
task is unrelated ("写一首关于春天的诗" → "量子计算利用量子比特进行运算……"). Shorter ones (labels such as "积极")
are left alone: too little text to judge by characters.

    >>> overlap("What is the capital of Australia?", "Canberra."), overlap("Why is the sky blue?", "The sky scatters")
    (0, 1)
    >>> zh_unrelated("写一首关于春天的诗。", "量子计算利用量子比特的叠加进行运算，速度远超传统电脑。", 15)
    True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datagen.lang import detect_lang, is_cjk

RULE = "unrelated_answer"

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_STOP = frozenset(
    "the a an and or but of to in on at by for with from into onto about as is are was were be been being this that "
    "these those it its they them their there here what which who whom whose when where why how do does did done "
    "can could would should will shall may might must have has had not no yes you your yours we our us i me my "
    "he she his her him one two some any all each every more most less few many much very so than then also just "
    "only please give write tell make list name describe explain provide create generate following below above "
    "using use based answer question task text sentence word words following given following".split())
#: Characters too common to show that two Chinese texts share a topic.
_STOP_ZH = frozenset("的了是在和有我你他她它们这那一个不也就都而及与或把被对从向为以之其上下中请写出给并说明简要"
                     "下面以下什么怎么如何吗呢吧啊哪些个种条首篇段句话用要会能可到来去人大小多少好很最更")
_NUMERIC = re.compile(r"^[\s\d.,:%°+\-*/=×÷^()$€£¥]+[A-Za-z°%]{0,4}\.?$")
_YES_NO = re.compile(r"^\W*(?:yes|no|true|false|correct|incorrect|right|wrong|maybe)\b", re.I)
_TRANSLATE = re.compile(r"translat|\b(?:in|into|to)\s+(?:french|german|spanish|chinese|japanese|italian|latin|"
                        r"korean|russian|portuguese|arabic)\b|翻译|译成|译为", re.I)


def _stems(text: str) -> set[str]:
    return {w.lower()[:5] for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 2}


def overlap(task: str, answer: str) -> int:
    """Content words (stemmed to 5 letters, stopwords out) that ``task`` and ``answer`` share."""
    return len(_stems(task) & _stems(answer))


def zh_unrelated(task: str, answer: str, min_chars: int) -> bool:
    """A Chinese answer of ``min_chars``+ CJK characters sharing no content character with its task."""
    chars = [c for c in answer if is_cjk(c)]
    if len(chars) < min_chars:
        return False
    return not ({c for c in task if is_cjk(c)} - _STOP_ZH) & (set(chars) - _STOP_ZH)


@dataclass
class Item:
    """One answer to check: its record's index, the task text and the answer."""

    index: int
    task: str
    answer: str
    is_classification: bool | None = None


def needs_encoder(item: Item) -> bool:
    """Whether cheap signals leave this English answer in doubt (only those are encoded)."""
    answer = item.answer.strip()
    if item.is_classification or "```" in answer or _NUMERIC.match(answer) or _YES_NO.match(answer):
        return False
    if _TRANSLATE.search(item.task) or detect_lang(answer) != "en" or detect_lang(item.task) != "en":
        return False
    if not _WORD.search(answer):
        return False
    return overlap(item.task, answer) == 0


def unrelated(items: Sequence[Item], *, min_cosine: float, min_chars_zh: int, model: str | None = None,
              device: str | None = None, batch_size: int = 64) -> tuple[list[tuple[int, str]], dict[str, float]]:
    """``(index, detail)`` for every item whose answer is unrelated to its task, and the step's stats."""
    found: list[tuple[int, str]] = []
    doubtful: list[Item] = []
    for item in items:
        if detect_lang(item.answer) == "zh" or detect_lang(item.task) == "zh":
            if detect_lang(item.answer) == detect_lang(item.task) and not item.is_classification \
                    and zh_unrelated(item.task, item.answer, min_chars_zh):
                found.append((item.index, "no content character in common with the task"))
        elif needs_encoder(item):
            doubtful.append(item)
    stats = {"checked": len(items), "encoded": len(doubtful)}
    if doubtful:
        from datagen.filter import semantic  # loads torch: only when an answer is in doubt

        texts = sorted({t for item in doubtful for t in (item.task, item.answer)})
        vectors = semantic.encode(texts, model, device, batch_size)
        row = {t: k for k, t in enumerate(texts)}
        for item in doubtful:
            cosine = float(np.dot(vectors[row[item.task]], vectors[row[item.answer]]))
            if cosine < min_cosine:
                found.append((item.index, f"cosine {cosine:.2f} < {min_cosine} between task and answer"))
    found.sort()
    return found, stats
