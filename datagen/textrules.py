"""Text rules more than one stage needs: keyword blacklists, refusal phrases, punctuation, normalisation.

Generators (Self-Instruct's keyword blacklist, Self-QA's refusal check) and the filter stage apply the same
rules; stages never import each other, so the word lists live here, one layer down, beside ``lang.py``.
Every list has an English and a Chinese half: a rule that only knows English lets Chinese data through
unchecked.

    >>> normalize_text("Ｈｅｌｌｏ，  World!")          # NFKC folds full-width forms, then case and punctuation
    'hello world'
    >>> find_blacklisted("Draw a picture of a cat.", "en"), find_blacklisted("画一张公司的流程图", "zh")
    ('picture', '画一')
    >>> find_phrase("As an AI language model, I cannot do that.", AI_IDENTITY)
    'as an ai language model'
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections.abc import Iterable

#: Tasks a text-only model cannot do (Self-Instruct's list, plus the media the project names). English
#: words match whole words; Chinese entries match as substrings (Chinese has no word boundaries).
BLACKLIST = {
    "en": ("image", "images", "picture", "pictures", "photo", "photos", "graph", "graphs", "file", "files",
           "map", "maps", "draw", "drawing", "plot", "go to", "video", "videos", "audio", "music",
           "flowchart", "diagram", "diagrams"),
    "zh": ("图片", "图像", "照片", "图表", "画图", "画一", "绘制", "绘图", "视频", "音频", "音乐", "歌曲",
           "流程图", "示意图", "地图", "文件", "网页", "上网", "打开网站"),
}

#: ASCII and CJK punctuation: Self-Instruct drops an instruction that starts with one.
PUNCTUATION = frozenset(string.punctuation) | frozenset("，。！？；：、（）《》【】“”‘’…—·「」『』〈〉")

#: AI-identity boilerplate: matched anywhere in an answer (after ``normalize_phrase``).
AI_IDENTITY = (
    "as an ai language model", "as a language model", "as an ai assistant", "as an ai model", "as an ai,",
    "i am an ai language model", "i'm an ai language model", "i am a language model", "i'm just an ai",
    "i am just an ai", "as a large language model", "i am an artificial intelligence",
    "作为一个ai语言模型", "作为一个人工智能", "作为一名人工智能", "作为人工智能", "作为一个语言模型",
    "作为ai语言模型", "作为一个ai助手", "作为ai助手", "我是一个人工智能", "我是一个ai语言模型", "我只是一个ai",
)

#: Refusal openers: matched only near the start of an answer (``REFUSAL_WINDOW`` characters), because
#: "I cannot" deep inside a real answer ("I cannot stress this enough") is not a refusal.
REFUSALS = (
    "i'm sorry, but", "i am sorry, but", "sorry, but i", "i apologize, but", "i cannot", "i can't", "i can not",
    "i'm unable to", "i am unable to", "i'm not able to", "i am not able to", "i won't be able to",
    "i'm afraid i can't", "i must decline", "i'm not comfortable",
    "抱歉,我无法", "抱歉,我不能", "对不起,我无法", "对不起,我不能", "很抱歉,我无法", "很抱歉,我不能",
    "抱歉,作为", "我无法提供", "我无法回答", "我不能提供", "我不能回答", "我无法完成", "我无法满足",
)
REFUSAL_WINDOW = 160

#: Words that name a language: an instruction holding one may rightly get an answer in another language.
LANGUAGE_WORDS = {
    "en": ("translat", "english", "chinese", "mandarin", "cantonese", "french", "german", "spanish", "japanese",
           "korean", "russian", "italian", "portuguese", "arabic", "hindi", "pinyin", "language"),
    "zh": ("翻译", "译成", "译为", "英文", "英语", "中文", "汉语", "普通话", "粤语", "日语", "日文", "韩语", "法语",
           "德语", "西班牙语", "俄语", "拼音", "语言"),
}

_NON_WORD = re.compile(r"[\W_]+")


def normalize_text(text: str) -> str:
    """The form exact dedup compares: NFKC (full-width → half-width), casefolded, punctuation, symbols
    and runs of whitespace folded to one space."""
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def normalize_phrase(text: str) -> str:
    """The form phrase lists are matched in: NFKC, casefolded, curly apostrophes straightened, whitespace
    collapsed. Punctuation stays (",", which NFKC makes of the full-width "，", is part of a phrase)."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\s+", " ", text)
    # Chinese text puts no space after a comma; NFKC turns "，" into "," — drop the space English puts there
    # only between CJK characters, so "抱歉, 我无法" and "抱歉，我无法" read the same.
    return re.sub(r"(?<=[\u4e00-\u9fff]), (?=[\u4e00-\u9fff])", ",", text)


def find_phrase(text: str, phrases: Iterable[str], window: int | None = None) -> str | None:
    """The first of ``phrases`` found in ``text`` (within its first ``window`` characters), or None."""
    haystack = normalize_phrase(text if window is None else text[: 2 * window])
    if window is not None:
        haystack = haystack[:window]
    for phrase, needle in _normalized(tuple(phrases)):
        if needle in haystack:
            return phrase
    return None


@functools.lru_cache(maxsize=64)
def _normalized(phrases: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((phrase, normalize_phrase(phrase)) for phrase in phrases)


def find_blacklisted(text: str, lang: str, words: Iterable[str] | None = None) -> str | None:
    """The first blacklisted keyword in ``text`` (list order): whole words in English, substrings in Chinese."""
    lowered = text.lower()
    tokens = set(_LATIN_WORD.findall(lowered))
    for word, needle, kind in _blacklist(tuple(BLACKLIST[lang] if words is None else words)):
        if (needle in tokens if kind == "word" else
                needle in text if kind == "cjk" else re.search(needle, lowered) is not None):
            return word
    return None


_LATIN_WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=16)
def _blacklist(words: tuple[str, ...]) -> tuple[tuple[str, str, str], ...]:
    """How to look for each word: a token (one Latin word), a substring (CJK) or a regex (several words)."""
    out = []
    for word in words:
        if any("\u4e00" <= c <= "\u9fff" for c in word):
            out.append((word, word, "cjk"))
        elif _LATIN_WORD.fullmatch(word.lower()):
            out.append((word, word.lower(), "word"))
        else:
            out.append((word, rf"\b{re.escape(word.lower())}\b", "regex"))
    return tuple(out)


#: Opening quotes and brackets: an instruction may rightly start with one ("《红楼梦》的作者是谁？").
OPENERS = frozenset("\"'“‘《「『（(【[〈")


def starts_with_punctuation(text: str, allow_openers: bool = True) -> bool:
    """Whether the first non-space character is punctuation: Self-Instruct's rule, which catches list debris
    (". Write", ") Name"). ``allow_openers`` lets a leading quote or bracket through; the paper's rule did not."""
    text = text.lstrip()
    return bool(text) and text[0] in PUNCTUATION and not (allow_openers and text[0] in OPENERS)
