"""Heuristic rules, the filter's first stage: cheap, named checks that drop broken or useless records.

Run it (with the other stages):  datagen filter gen/records.jsonl --out curated/
Skip rules by name:              skip_rules: [blacklisted_keyword]     (in filter.yaml)

Every rule has a name (the reject ``reason``) and its thresholds in ``FilterConfig``. English and Chinese are
equally first-class: lengths count words in English and characters in Chinese (``datagen.lang``), and every
phrase list has both halves (``datagen.textrules``). Instruction rules look at the instruction (the first user
turn of a conversation) or at every prompt-side text; answer rules run on every assistant turn of a
``messages`` record, against the user turn before it, and name the turn in their detail.

    >>> from datagen.filter.pipeline import FilterConfig
    >>> answer = "As an AI language model, I think 7."
    >>> evaluate(Example(instruction="Name a prime.", output=answer), FilterConfig()).flags
    [('ai_identity', 'as an ai language model')]

Each record also gets a graded ``heuristic_score`` in [0, 1] (0 when a rule fires), which the dedup stages
can use to keep the better of two duplicates; see ``score_turn``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from datagen.lang import count_units, detect_lang
from datagen.records import Example
from datagen.textrules import (
    AI_IDENTITY,
    BLACKLIST,
    LANGUAGE_WORDS,
    REFUSAL_WINDOW,
    REFUSALS,
    find_blacklisted,
    find_phrase,
    normalize_text,
    starts_with_punctuation,
)

if TYPE_CHECKING:  # the config lives with the stage runner; only its fields are read here
    from datagen.filter.pipeline import FilterConfig

STAGE = "heuristics"

#: Every rule, in the order they are checked: a record that breaks several is rejected for the first.
RULES = (
    "instruction_empty", "output_empty",
    "instruction_too_short", "instruction_too_long", "output_too_short", "output_too_long",
    "output_equals_input", "blacklisted_keyword", "leading_punctuation", "url_in_prompt", "image_placeholder",
    "ai_identity", "refusal", "truncated", "unbalanced", "repetition", "language_mismatch",
)

_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
_FENCED_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?(^[ \t]*\1[^\n]*$|\Z)", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.[\w-]+\.[\w.-]+\S*", re.I)
_PLACEHOLDER = re.compile(r"<\s*/?\s*(image|img|video|audio|imagehere|image_\d+)\b[^>]*>|"
                          r"\[\s*(image|img|video|audio|picture|图片|图像|视频|音频)\s*\d*\s*\]", re.I)
# "1)", "a)", "iv)", "2）" list markers and ":)" smileys close a parenthesis nobody opened, and are fine.
_LIST_MARKER = re.compile(r"(?:^|[\s:：;；,，])(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})$")
_SMILEY_EYES = ":;=-"
_PARENS = (("(", ")"), ("（", "）"))
_BRACKETS = (("[", "]"), ("{", "}"), ("【", "】"), ("《", "》"), ("「", "」"), ("『", "』"), ("“", "”"))
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+")
# An answer ending on one of these words stopped mid-sentence ("... and the").
_DANGLING_EN = frozenset(
    "a an the and or but nor of to with for in on at by from into onto about than that which who whose whom "
    "is are was were be been being because as if so such my your his her its our their this these those "
    "including like between during while when where whether".split())
_DANGLING_END = tuple(",;:(-[{“‘，、；：（《【「『")
#: Answers shorter than this are too short for a repetition ratio to mean anything.
_REPETITION_MIN_TOKENS = 20
#: Answer length (words / CJK characters) at which the length part of ``heuristic_score`` saturates.
_SCORE_UNITS = {"en": 50, "zh": 100}


@dataclass
class Turn:
    """One assistant answer and the user text it answers (for a single-turn record: instruction + input)."""

    instruction: str          # what the user asked (the instruction, or the user turn)
    input: str                # the record's ``input`` (single-turn records only)
    answer: str
    index: int                # position of the answer in ``messages`` (0 for a single-turn record)
    last: bool                # the final assistant turn: the one a finish_reason refers to


@dataclass
class HeuristicResult:
    """What the stage says about one record: every rule it breaks (first = the reject reason) and its score."""

    flags: list[tuple[str, Any]] = field(default_factory=list)
    score: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.flags


# ---------------------------------------------------------------------------------------------- text helpers


def strip_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans (code has its own rules)."""
    return _INLINE_CODE.sub(" ", _FENCED_BLOCK.sub(" ", text))


def units(text: str) -> tuple[int, str]:
    """Length in words (English) or characters (Chinese), and the language it was counted in."""
    lang = detect_lang(text)
    return count_units(text, lang), lang


def repeated_ngram_ratio(text: str, n: int) -> float | None:
    """Share of the word n-grams (CJK: character n-grams) that repeat an earlier one; None if too short.

    Degenerate generations loop ("I love you. I love you. ...": 0.97 at n=4); ordinary prose scores
    < 0.17 at n=4 (max over the en and zh seed answers, measured). Code blocks are left out: code repeats
    by nature (four small functions score 0.31).
    """
    tokens = _TOKEN.findall(strip_code(text).lower())
    if len(tokens) < max(_REPETITION_MIN_TOKENS, n + 1):
        return None
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def unbalanced(text: str) -> str | None:
    """Which bracket, quote or code fence is left open (or closed unopened) in ``text``, or None."""
    if len(_FENCE.findall(text)) % 2:
        return "code fence ``` left open"
    prose = strip_code(text)
    for opening, closing in _PARENS:
        problem = _paren_problem(prose, opening, closing)
        if problem:
            return problem
    for opening, closing in _BRACKETS:
        a, b = prose.count(opening), prose.count(closing)
        if a != b:
            return f"{a} '{opening}' vs {b} '{closing}'"
    if prose.count('"') % 2:
        return "odd number of '\"'"
    return None


def _paren_problem(prose: str, opening: str, closing: str) -> str | None:
    """Scan one kind of parenthesis; a closer with nothing open is fine after a list marker or smiley eyes."""
    if opening not in prose and closing not in prose:
        return None
    depth = 0
    for match in re.finditer(re.escape(opening) + "|" + re.escape(closing), prose):
        k = match.start()
        eyes = k > 0 and prose[k - 1] in _SMILEY_EYES
        if match.group() == opening:
            depth += not eyes  # ":(" opens nothing
        elif depth:
            depth -= 1
        elif not (eyes or _LIST_MARKER.search(prose, max(0, k - 6), k)):
            return f"'{closing}' with no '{opening}'"
    return f"'{opening}' left open" if depth else None


def truncation(answer: str, last: bool, finish_reason: str | None) -> str | None:
    """Why ``answer`` looks cut off, or None: finish_reason "length", an open code fence, a dangling end."""
    if last and finish_reason == "length":
        return "finish_reason=length"
    if len(_FENCE.findall(answer)) % 2:
        return "ends inside a code fence"
    tail = answer.rstrip()
    if not tail:
        return None
    if tail.endswith(_DANGLING_END):
        return f"ends with {tail[-1]!r}"
    words = tail.split()
    if len(words) >= 8 and tail[-1].isalpha() and words[-1].lower() in _DANGLING_EN:
        return f"ends mid-sentence on {words[-1]!r}"
    return None


def language_mismatch(turn: Turn, min_units: int) -> str | None:
    """``"zh → en"`` when the answer is in another language than the request, None when they agree or the
    question does not apply: a request naming a language (translation), an input in a third language, or
    too little text to tell (numbers, labels, code)."""
    asked = strip_code(turn.instruction)
    answer = strip_code(turn.answer)
    if len(_TOKEN.findall(asked)) < 2 or len(_TOKEN.findall(answer)) < min_units:
        return None
    if find_phrase(asked, LANGUAGE_WORDS["en"] + LANGUAGE_WORDS["zh"]):
        return None
    want = detect_lang(asked)
    if turn.input.strip() and detect_lang(strip_code(turn.input)) != want:
        return None
    got = detect_lang(answer)
    return f"{want} → {got}" if got != want else None


# ---------------------------------------------------------------------------------------------- the rules


def turns(example: Example) -> list[Turn]:
    """The assistant answers of a record, each with the user text it answers."""
    if not example.messages:
        return [Turn(example.instruction, example.input, example.output, 0, True)]
    out: list[Turn] = []
    user = ""
    answers = [i for i, m in enumerate(example.messages) if m["role"] == "assistant"]
    for i, message in enumerate(example.messages):
        if message["role"] == "user":
            user = message["content"]
        elif message["role"] == "assistant":
            out.append(Turn(user, "", message["content"], i, i == answers[-1]))
    return out


def prompt_texts(example: Example) -> list[str]:
    """Every text on the prompt side: instruction and input, or every user turn."""
    if example.messages:
        return [m["content"] for m in example.messages if m["role"] == "user"]
    return [example.instruction, example.input]


def _length(text: str, bounds: tuple[int, int], bounds_zh: tuple[int, int]) -> tuple[str, str] | None:
    return _length_check(*units(text), bounds, bounds_zh)


def _length_check(n: int, lang: str, bounds: tuple[int, int], bounds_zh: tuple[int, int]) -> tuple[str, str] | None:
    lo, hi = bounds_zh if lang == "zh" else bounds
    unit = "characters" if lang == "zh" else "words"
    if n < lo:
        return "too_short", f"{n} {unit} < {lo}"
    if n > hi:
        return "too_long", f"{n} {unit} > {hi}"
    return None


def _finish_reason(example: Example) -> str | None:
    """The generator's ``finish_reason`` for the (last) answer, from ``meta.finish_reason``."""
    value = example.meta.get("finish_reason")
    return value if isinstance(value, str) else None


def _answer_flags(turn: Turn, cfg: FilterConfig, finish_reason: str | None) -> tuple[dict[str, Any], float]:
    """Every answer rule ``turn`` breaks, by name (empty answers break only ``output_empty``), and its score."""
    answer = turn.answer
    if not answer.strip():
        return {"output_empty": None}, 0.0
    flags: dict[str, Any] = {}
    n, lang = units(answer)
    length = _length_check(n, lang, cfg.output_length, cfg.output_length_zh)
    if length:
        flags[f"output_{length[0]}"] = length[1]
    norm = normalize_text(answer)
    if turn.input.strip() and norm == normalize_text(turn.input):
        flags["output_equals_input"] = "output = input"
    elif norm and norm == normalize_text(turn.instruction):
        flags["output_equals_input"] = "output = instruction"
    phrase = find_phrase(answer, AI_IDENTITY)
    if phrase:
        flags["ai_identity"] = phrase
    phrase = find_phrase(answer, REFUSALS, window=REFUSAL_WINDOW)
    if phrase:
        flags["refusal"] = phrase
    cut = truncation(answer, turn.last, finish_reason)
    if cut:
        flags["truncated"] = cut
    open_ = unbalanced(answer)
    if open_:
        flags["unbalanced"] = open_
    ratio = repeated_ngram_ratio(answer, cfg.repetition_ngram)
    if ratio is not None and ratio > cfg.repetition_max:
        flags["repetition"] = f"{ratio:.2f} of {cfg.repetition_ngram}-grams repeat (max {cfg.repetition_max})"
    mismatch = language_mismatch(turn, cfg.language_min_units)
    if mismatch:
        flags["language_mismatch"] = mismatch
    return flags, _score(n, lang, ratio, cfg)


def _instruction_flags(example: Example, cfg: FilterConfig) -> dict[str, Any]:
    instruction = example.instruction
    flags: dict[str, Any] = {}
    if not instruction.strip():
        flags["instruction_empty"] = None
    else:
        length = _length(instruction, cfg.instruction_length, cfg.instruction_length_zh)
        # A conversation's opening turn often carries pasted material, which a single-turn record keeps in
        # ``input``: only the lower bound applies to it.
        if length and not (example.messages and length[0] == "too_long"):
            flags[f"instruction_{length[0]}"] = length[1]
        words = cfg.blacklist if cfg.blacklist is not None else BLACKLIST["en"] + BLACKLIST["zh"]
        word = find_blacklisted(instruction, "en", words)
        if word:
            flags["blacklisted_keyword"] = word
        if starts_with_punctuation(instruction):
            flags["leading_punctuation"] = instruction.lstrip()[0]
        open_ = unbalanced(instruction)
        if open_:
            flags["unbalanced"] = f"instruction: {open_}"
    for text in prompt_texts(example):
        url = _URL.search(text)
        if url and "url_in_prompt" not in flags:
            flags["url_in_prompt"] = url.group(0)[:100]
        placeholder = _PLACEHOLDER.search(text)
        if placeholder and "image_placeholder" not in flags:
            flags["image_placeholder"] = placeholder.group(0)
    return flags


def score_turn(turn: Turn, cfg: FilterConfig) -> float:
    """Graded quality of one answer that passed every rule: the mean of a length part (1 at 50 words /
    100 characters and above) and a repetition part (1 with no repeated n-gram, 0 at ``repetition_max``)."""
    return _score(*units(turn.answer), repeated_ngram_ratio(turn.answer, cfg.repetition_ngram), cfg)


def _score(n: int, lang: str, ratio: float | None, cfg: FilterConfig) -> float:
    length = min(1.0, n / _SCORE_UNITS[lang])
    novelty = 1.0 - min(1.0, (ratio or 0.0) / cfg.repetition_max) if cfg.repetition_max > 0 else 1.0
    return 0.5 * length + 0.5 * novelty


def evaluate(example: Example, cfg: FilterConfig) -> HeuristicResult:
    """Check ``example`` against every rule not in ``cfg.skip_rules``; flags come in ``RULES`` order."""
    found = _instruction_flags(example, cfg)
    answers = turns(example)
    finish_reason = _finish_reason(example)
    scores = []
    for turn in answers:
        turn_flags, score = _answer_flags(turn, cfg, finish_reason)
        scores.append(score)
        for rule, detail in turn_flags.items():
            if rule not in found:  # the first turn that breaks a rule names it
                found[rule] = f"turn {turn.index}: {detail}" if example.messages and detail else detail
    if not answers:
        found.setdefault("output_empty", "no assistant turn")
    skip = set(cfg.skip_rules)
    flags = [(rule, found[rule]) for rule in RULES if rule in found and rule not in skip]
    return HeuristicResult(flags=flags, score=0.0 if flags or not scores else round(sum(scores) / len(scores), 4))


def graded_score(example: Example, cfg: FilterConfig) -> float:
    """The mean ``score_turn`` over the record's answers, rounded to 4 places (rules not applied)."""
    answers = turns(example)
    if not answers:
        return 0.0
    return round(sum(score_turn(t, cfg) for t in answers) / len(answers), 4)

