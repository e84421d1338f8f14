"""Language facts every stage needs for English and Chinese to be equally first-class.

Word counts, length rules and tokenization differ: Chinese has no spaces, so "words" are characters.
The original Self-Instruct rule "drop instructions starting with a non-ASCII character" would delete every
Chinese instruction; rules here ask which language a text is in instead.

    >>> detect_lang("把这句话翻译成英文") , detect_lang("Translate this sentence.")
    ('zh', 'en')
    >>> count_units("Write a short poem", "en"), count_units("写一首短诗", "zh")
    (4, 5)
"""

from __future__ import annotations

import re

LANGS = ("en", "zh")

# CJK Unified Ideographs (+ extension A, compatibility), kana and hangul: scripts written without spaces.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z0-9]+")


def is_cjk(char: str) -> bool:
    return bool(_CJK.match(char))


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among letters (CJK characters + Latin letters/digits)."""
    cjk = len(_CJK.findall(text))
    latin = sum(len(w) for w in _LATIN_WORD.findall(text))
    # A Latin word weighs as much as ~2 CJK characters' worth of meaning; counting letters overweights it.
    latin_units = latin / 3
    total = cjk + latin_units
    return cjk / total if total else 0.0


def detect_lang(text: str) -> str:
    """``"zh"`` when CJK characters dominate, else ``"en"`` (the two languages we generate in)."""
    return "zh" if cjk_ratio(text) >= 0.3 else "en"


def count_units(text: str, lang: str) -> int:
    """Length in the unit the language's rules use: words for English, characters for Chinese."""
    if lang == "zh":
        return len(_CJK.findall(text)) + len(_LATIN_WORD.findall(text))
    return len(text.split())
