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


#: Function words: the commonest words of English and of the Latin-script languages an English request is most
#: often wrongly answered in. A text's function words say its language better than its letters do.
_FUNCTION_WORDS = {
    "en": frozenset(["the", "of", "and", "to", "a", "in", "is", "that", "it", "for", "was", "on", "are", "with", "as", "be", "this", "by", "at", "from", "or", "an", "have", "not", "you", "they", "we", "his", "her", "which", "can", "will", "has", "its", "their", "but", "also", "more"]),
    "es": frozenset(["el", "la", "los", "las", "de", "que", "y", "en", "un", "una", "es", "por", "con", "para", "del", "al", "se", "lo", "como", "su", "pero", "más", "está", "son"]),
    "fr": frozenset(["le", "la", "les", "de", "des", "du", "et", "en", "un", "une", "est", "que", "qui", "pour", "dans", "par", "sur", "au", "aux", "ce", "cette", "il", "elle", "pas", "sont", "avec", "plus", "se", "ne"]),
    "de": frozenset(["der", "die", "das", "und", "ist", "nicht", "mit", "von", "zu", "den", "dem", "ein", "eine", "auf", "sich", "des", "im", "für", "auch", "wird", "wurde", "hat", "sind", "oder", "aber"]),
    "it": frozenset(["il", "lo", "gli", "di", "che", "è", "per", "non", "una", "sono", "del", "della", "con", "le", "si", "da", "nel", "alla", "più"]),
    "pt": frozenset(["o", "os", "as", "de", "que", "e", "do", "da", "em", "um", "uma", "para", "com", "não", "por", "mais", "dos", "das", "se", "na", "no", "é", "são"]),
}
_LATIN_TOKEN = re.compile(r"[^\W\d_]+")


def latin_language(text: str) -> str:
    """``"en"``, or the code of the other Latin-script language whose function words clearly dominate.

    Only for text ``detect_lang`` calls English: "Le recyclage réduit la quantité de déchets" is French.

    >>> latin_language("The firewall blocks traffic that breaks the rules."), latin_language(
    ...     "Una firewall controla el tráfico que entra y sale de una red.")
    ('en', 'es')
    """
    words = [w.lower() for w in _LATIN_TOKEN.findall(text)]
    if len(words) < 6:
        return "en"
    counts = {lang: sum(w in vocab for w in words) for lang, vocab in _FUNCTION_WORDS.items()}
    best = max((lang for lang in counts if lang != "en"), key=lambda lang: counts[lang])
    if counts[best] >= 3 and counts[best] >= 2 * counts["en"] + 1:
        return best
    return "en"
