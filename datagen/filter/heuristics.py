"""Heuristic rules, the filter's first stage: cheap, named checks that drop broken or useless records.

Run it (with the other stages):  datagen filter gen/records.jsonl --out curated/
Skip rules by name:              skip_rules: [blacklisted_keyword]     (in filter.yaml)

Every rule has a name (the reject ``reason``) and its thresholds in ``FilterConfig``. English and Chinese are
equally first-class: lengths count words in English and characters in Chinese (``datagen.text``), and every
phrase list has both halves (``datagen.text``). Instruction rules look at the instruction (the first user
turn of a conversation) or at every prompt-side text; answer rules run on every assistant turn of a
``messages`` record, against the user turn before it, and name the turn in their detail.

    >>> from datagen.filter.config import FilterConfig
    >>> answer = "As an AI language model, I think 7."
    >>> evaluate(Example(instruction="Name a prime.", output=answer), FilterConfig()).flags
    [('ai_identity', 'as an ai language model')]

Rules read text in context: a blacklisted request is one a text-only model cannot do ("draw a picture of",
not "draw a conclusion"), brackets are checked in prose only, truncation knows code, lists and sign-offs, a
URL matters only where the task must open it, and output = input only where the task asks for a change. The
degenerate-answer rules (``echo``, ``label_copy``, ``short_open_answer``, ``announces_only``,
``wrong_answer_type``, ``placeholder``) live in
``datagen.filter.degenerate``; ``unrelated_answer`` needs the sentence encoder and runs batched over the
records that pass the rest (``datagen.filter.relevance``). ``prompt_injection`` also honours a generator's
``meta.flags: ["prompt_injection"]``.

Each record also gets a graded ``heuristic_score`` in [0, 1] (0 when a rule fires), which the dedup stages
can use to keep the better of two duplicates; see ``score_turn``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from datagen.filter.config import RULES, FilterConfig
from datagen.filter.degenerate import (
    TaskContext,
    announces_only,
    echo,
    label_copy,
    placeholder,
    short_open_answer,
    wrong_answer_type,
)
from datagen.records import Example
from datagen.text import (
    AI_IDENTITY,
    CJK,
    CODE_TASK,
    HAN,
    INJECTION_TOPIC,
    LANGUAGE_CUE,
    REFUSAL_WINDOW,
    REFUSALS,
    cjk_ratio,
    count_units,
    detect_lang,
    find_blacklisted,
    find_personal_experience,
    find_phrase,
    injection_line,
    is_cjk,
    is_sign_off,
    latin_language,
    starts_with_punctuation,
)

STAGE = "heuristics"

_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.MULTILINE)
_FENCED_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?(^[ \t]*\1[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.[\w-]+\.[\w.-]+\S*", re.IGNORECASE)
_PLACEHOLDER = re.compile(
    r"<\s*/?\s*(image|img|video|audio|imagehere|image_\d+)\b[^>]*>|"
    r"\[\s*(image|img|video|audio|picture|图片|图像|视频|音频)\s*\d*\s*\]",
    re.IGNORECASE,
)
# "1)", "a)", "iv)", "2）" list markers and ":)" smileys close a parenthesis nobody opened, and are fine.
_LIST_MARKER = re.compile(r"(?:^|[\s:：;；,，])(?:\d{1,3}|[A-Za-z]|[ivxIVX]{1,4})$")
_SMILEY_EYES = ":;=-"
_PARENS = (("(", ")"), ("（", "）"))
_BRACKETS = (("[", "]"), ("{", "}"), ("【", "】"), ("《", "》"), ("「", "」"), ("『", "』"), ("“", "”"))
_TOKEN = re.compile(rf"[{CJK}]|[^\W_]+")
#: Answers shorter than this are too short for a repetition ratio to mean anything.
_REPETITION_MIN_TOKENS = 20
#: Answer length (words / CJK characters) at which the length part of ``heuristic_score`` saturates.
_SCORE_UNITS = {"en": 50, "zh": 100}


@dataclass
class Turn:
    """One assistant answer and the user text it answers (for a single-turn record: instruction + input)."""

    instruction: str  # what the user asked (the instruction, or the user turn)
    input: str  # the record's ``input`` (single-turn records only)
    answer: str
    index: int  # position of the answer in ``messages`` (0 for a single-turn record)
    last: bool  # the final assistant turn: the one a finish_reason refers to
    task: TaskContext | None = None  # the request with what the model was shown (degenerate-answer rules)

    def context(self) -> TaskContext:
        return self.task or TaskContext.of(self.instruction, self.input)


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
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)


def unbalanced(text: str, code: bool = False) -> str | None:
    """Which bracket, quote or code fence is left open (or closed unopened) in the prose of ``text``, or None.

    Fires on prose: "The sky is blue (because of scattering." Code (fenced, inline or unfenced lines that read
    as code), regexes ("^[a-z]+\\d*$", "[^)]"), intervals ("[0, 1)"), enumerations ("1)", "a)", "2）"), inch
    marks (12") and emoticons (":)", ":-(", "(^_^)") are not prose and never fire: "Pick x in [0, 1) :)". With
    ``code=True`` (the task asks for code, SQL, a regex or a command) an answer without a fence is all code.
    """
    if len(_FENCE.findall(text)) % 2:
        return "code fence ``` left open"
    if code and not _FENCE.search(text):
        return None  # the answer to a code task ("Write a SQL statement ...") is code, fenced or not
    prose = prose_only(text)
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


# Tokens that are code or notation, not prose: regexes, intervals, emoticons, inch marks, list markers.
_REGEX_TOKEN = re.compile(
    r"(?:\\[A-Za-z\\.()\[\]{}^$*+?|/]|\[\^|\(\?|\.\*|\.\+|[)\]}][*+]|[)\]}]\?(?=\S)|\{\d+(?:,\d*)?\})\S*|"
    r"(?<!\S)\^\S+|\S+\$(?!\S)|(?<!\S)/\S*[()\[\]]\S*/[gimsuy]*(?!\S)"
)
_INTERVAL = re.compile(r"[\[(]\s*[-+−]?\s*[\w.∞π/√]+\s*[,;，]\s*[-+−]?\s*[\w.∞π/√]+\s*[\])]")
_EMOTICON = re.compile(
    r"(?<![\w(.,])[:;=][-'^o]?[()\[\]{}DPp/\\|3]+(?![\w)])|(?<!\w)[()\[\]][-'^]?[:;=](?!\w)|"
    r"\([^()\s]{0,3}[_^;ツ°□╯︵ω][^()\s]{0,3}\)|¯\\_\(ツ\)_/¯|<3|（[^（）\s]{0,3}[_^ω][^（）\s]{0,3}）"
)
_INCH = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?:['′]\d+)?\"(?!\w)")
_CODE_LINE = re.compile(
    r"[;{}]\s*$|^\s*(?:def|class|import|from\s+\S+\s+import|return|for|while|if|elif|else|try|except|catch|function|"
    r"const|let|var|public|private|static|void|int|#include|#define|SELECT|INSERT|UPDATE|DELETE|CREATE|print|"
    r"console\.|System\.|fn|func|package|using|namespace|echo|sudo|pip|npm|git|cd|ls|\$)\b|==|!=|=>|->|::|&&|\|\||"
    r"^\s*[\w.\[\]]+\s*[-+*/]?=\s*\S|^\s*\w+(?:\.\w+)*\([^)]*\)?\s*$|^ {4,}\S|^\t+\S|^\s*[<][/!?]?\w+[^>]*>",
    re.MULTILINE,
)


def looks_like_code(line: str) -> bool:
    """Whether one line reads as code or a shell command (unfenced answers often are code)."""
    return bool(_CODE_LINE.search(line))


def prose_only(text: str) -> str:
    """``text`` without code (fenced, inline, or lines that read as code) and notation tokens.

    >>> unbalanced(prose_only("Use `f(x` here. Steps: 1) boil, 2) pour :) with x in [0, 1)"))
    >>> unbalanced(prose_only("The sky is blue (because of scattering."))
    "'(' left open"
    """
    text = strip_code(text)
    lines = text.split("\n")
    if sum(looks_like_code(line) for line in lines if line.strip()) * 2 >= max(1, sum(1 for x in lines if x.strip())):
        lines = [line for line in lines if not looks_like_code(line)]  # a code answer without a fence
        text = "\n".join(line for line in lines if not re.search(r"[(){}\[\]]", line) or _prose_line(line))
    else:
        text = "\n".join(lines)
    text = _TOKEN_RUN.sub(_notation_token, text)  # regex tokens, one whitespace-delimited token at a time
    for pattern in (_INTERVAL, _EMOTICON, _INCH):  # list markers: see _paren_problem
        if _NOTATION_CHARS.search(text):
            text = pattern.sub(" ", text)
    return text


_TOKEN_RUN = re.compile(r"(?<!\S)[^\s\\^$\[\]{}*+?/]*[\\^$\[\]{}*+?/]\S*")
_NOTATION_CHARS = re.compile(r"[()\[\]{}（）\"]")


def _notation_token(match: re.Match[str]) -> str:
    token = match.group(0)
    return " " if _REGEX_TOKEN.search(token) else token


def _prose_line(line: str) -> bool:
    words = re.findall(f"[A-Za-z]{{2,}}|[{HAN}]", line)
    return len(words) >= 6


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


#: Words a cut-off English sentence ends on; a finished one does not ("... and the"). Kept to words that
#: cannot close a sentence: "That's who you are" and "Turn the lights on" end on words left out here.
_DANGLING = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "of",
        "to",
        "my",
        "your",
        "his",
        "her",
        "our",
        "their",
        "its",
        "whose",
        "including",
        "because",
        "than",
        "such",
        "with",
        "from",
        "into",
        "onto",
        "versus",
    ]
)
#: Chinese characters a sentence does not end on (conjunctions, prepositions): "因为阳光在" is cut off.
_DANGLING_ZH = (
    "和",
    "与",
    "及",
    "或",
    "在",
    "把",
    "被",
    "对",
    "从",
    "向",
    "因为",
    "所以",
    "但是",
    "而且",
    "如果",
    "将",
    "让",
    "给",
    "跟",
    "并",
    "以及",
    "或者",
    "还有",
    "比如",
    "例如",
    "包括",
)


def truncation(answer: str, last: bool, finish_reason: str | None) -> str | None:
    """Why ``answer`` looks cut off, or None.

    First ``finish_reason == "length"`` (the generator hit max_tokens; only the last answer of a record has
    one), then text signals: an open code fence, a last line ending on ",", ":", "(", "、" or "，", on a
    word no sentence ends on ("... and the", "...因为阳光在"), or a long prose line that holds a sentence break
    but stops without closing punctuation ("... the first person to win Nobel Prizes in two different"). It
    knows code, lists and letters: a trailing ";" on a code line ("return x;"), a list whose items all end in
    ";" and a sign-off ("Best,", "Kind regards,", "此致") are finished answers.
    Must not fire on: "Thanks for your help.\n\nBest,".
    """
    if last and finish_reason == "length":
        return "finish_reason=length"
    if len(_FENCE.findall(answer)) % 2:
        return "ends inside a code fence"
    tail = _TRAILING_EMOTICON.sub("", answer.rstrip()).rstrip()  # "see you then :-(" ends on a smiley
    if not tail:
        return None
    smiley = len(tail) < len(answer.rstrip())
    lines = [line for line in tail.split("\n") if line.strip()]
    last_line = lines[-1].strip()
    if is_sign_off(last_line):
        return None
    end = tail[-1]
    if end in ";；":
        items = [line for line in lines if _LIST_ITEM.match(line)]
        if looks_like_code(last_line) or (
            len(items) >= 2 and all(i.rstrip().endswith((";", "；")) for i in items[:-1])
        ):
            return None
        if len(lines) >= 2 and sum(looks_like_code(line) for line in lines) * 2 >= len(lines):
            return None
    if end in _DANGLING_END_CHARS:
        if end == "-" and last_line.endswith(("--", "—")):
            return None
        return f"ends with {end!r}"
    words = last_line.split()
    if (
        len(tail.split()) >= 8
        and end.isalpha()
        and end.isascii()
        and words[-1].lower() in _DANGLING
        and not _LIST_ITEM.match(last_line)
    ):
        return f"ends mid-sentence on {words[-1]!r}"
    if (
        is_cjk(end)
        and len(last_line) >= 10
        and re.search(r"[，。！？；]", last_line)
        and last_line.endswith(_DANGLING_ZH)
    ):
        return f"ends mid-sentence on {next(w for w in _DANGLING_ZH if last_line.endswith(w))!r}"
    # Prose that stops without closing punctuation: a long line that already holds a sentence break.
    if smiley or _LIST_ITEM.match(last_line) or looks_like_code(last_line) or not (end.isalnum() or is_cjk(end)):
        return None
    if is_cjk(end):
        if sum(1 for c in last_line if is_cjk(c)) >= 20 and re.search(r"[，。；：！？]", last_line[:-1]):
            return "stops mid-sentence without a full stop"
    elif len(words) >= 12 and re.search(r"[.;!?,]\s", last_line):
        return "stops mid-sentence without a full stop"
    return None


_TRAILING_EMOTICON = re.compile(r"(?:\s|^)(?:[:;=][-'^o]?[()\[\]DPp/|3]+|\([^()\s]{0,3}[_^;ツ°ω][^()\s]{0,3}\))+$")
_DANGLING_END_CHARS = frozenset(",;:(-[{“‘，、；：（《【「『")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•·]|\d{1,3}[.)、）]|[a-zA-Z][.)]|[（(]\d{1,3}[)）])\s*")


def language_mismatch(turn: Turn, min_units: int) -> str | None:
    """``"zh → en"`` when the answer is in another language than the request, else None.

    Fires on "解释天空为什么是蓝色的。" answered in English. Does not apply where the request names the
    answer's language ("Translate into Chinese", "用英文回答"), where the input or a quoted passage of the
    request is in the other language (an English passage to summarise in Chinese), to code (fenced or not),
    or to answers too short to tell (numbers, labels): "用Python写一个函数" answered with a code block passes.
    """
    asked = strip_code(turn.instruction)
    answer = _URL.sub(" ", prose_only(turn.answer))
    if len(_TOKEN.findall(asked)) < 2 or len(_TOKEN.findall(answer)) < min_units:
        return None
    if LANGUAGE_CUE.search(asked):
        return None
    want = detect_lang(asked)
    if turn.input.strip() and detect_lang(strip_code(turn.input)) != want:
        return None
    latin_words = len(re.findall(r"[A-Za-z]{2,}", asked))
    cjk_chars = sum(1 for c in asked if is_cjk(c))
    if (
        (want == "zh" and latin_words >= 4)
        or (want == "en" and cjk_chars >= 2)
        or (cjk_chars >= 2 and latin_words >= 2 and 0.2 <= cjk_ratio(asked) <= 0.6)
    ):
        return None  # the request quotes text in the other language: an answer in either may be right
    got = detect_lang(answer)
    if got == want == "en":
        other = latin_language(answer)
        return f"en → {other}" if other != "en" else None
    return f"{want} → {got}" if got != want else None


# ---------------------------------------------------------------------------------------------- the rules


def turns(example: Example) -> list[Turn]:
    """The assistant answers of a record, each with the user text it answers."""
    if not example.messages:
        task = TaskContext.of(example.instruction, example.input, example.meta, example.is_classification)
        return [Turn(example.instruction, example.input, example.output, 0, True, task)]
    out: list[Turn] = []
    user = ""
    answers = [i for i, m in enumerate(example.messages) if m["role"] == "assistant"]
    for i, message in enumerate(example.messages):
        if message["role"] == "user":
            user = message["content"]
        elif message["role"] == "assistant":
            first = not out
            task = TaskContext.of(
                user, "", example.meta if first else None, example.is_classification if first else None
            )
            out.append(Turn(user, "", message["content"], i, i == answers[-1], task))
    return out


def render_task(turn: Turn) -> str:
    """The request of one answer as one text: instruction, then input (for relevance and echo checks)."""
    return f"{turn.instruction}\n{turn.input}".strip()


def prompt_texts(example: Example) -> list[str]:
    """Every text on the prompt side: instruction and input, or every user turn."""
    if example.messages:
        return [m["content"] for m in example.messages if m["role"] == "user"]
    return [example.instruction, example.input]


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
    task = turn.context()
    n, lang = units(answer)
    length = _length_check(n, lang, cfg.output_length, cfg.output_length_zh)
    if length:
        flags[f"output_{length[0]}"] = length[1]
    line = injection_line(answer)
    if line and not INJECTION_TOPIC.search(task.text):
        flags["prompt_injection"] = f"answer: {line[:100]}"
    for rule, found in (  # what each rule found in the answer; None where it passes
        ("output_equals_input", output_equals_input(turn)),
        ("echo", echo(answer, task)),
        ("label_copy", label_copy(answer, task)),
        ("short_open_answer", short_open_answer(answer, task)),
        ("announces_only", announces_only(answer, task)),
        ("wrong_answer_type", wrong_answer_type(answer, task)),
        ("placeholder", placeholder(answer, task)),
        ("ai_identity", find_phrase(answer, AI_IDENTITY)),
        ("refusal", find_phrase(answer, REFUSALS, window=REFUSAL_WINDOW)),
        ("truncated", truncation(answer, turn.last, finish_reason)),
        ("unbalanced", unbalanced(answer, code=bool(CODE_TASK.search(task.text)))),
        ("language_mismatch", language_mismatch(turn, cfg.language_min_units)),
    ):
        if found:
            flags[rule] = found
    ratio = repeated_ngram_ratio(answer, cfg.repetition_ngram)
    if ratio is not None and ratio > cfg.repetition_max:
        flags["repetition"] = f"{ratio:.2f} of {cfg.repetition_ngram}-grams repeat (max {cfg.repetition_max})"
    return flags, _score(n, lang, ratio, cfg)


#: A request that asks for a change: an answer equal to its input did not do the task.
_CHANGE = re.compile(
    r"\b(?:re-?write|rephrase|paraphrase|reword|restate|translate|summari[sz]e|shorten|condense|simplify|expand|"
    r"elaborate|make (?:it|this|the \w+)?\s*(?:more|less|shorter|longer|simpler|clearer|formal|informal|polite|"
    r"friendlier|concise|professional|positive|negative|better)|turn (?:\w+ ){1,3}?into|recap|sum up|tl;?dr|"
    r"change (?:it|this|the|these)|transform|revise|improve|polish|debug|refactor|"
    r"(?:in|into|to) (?:french|german|spanish|chinese|english|japanese|italian|korean|russian|portuguese|arabic|"
    r"the passive|passive voice|the active|active voice|past tense|future tense|plural)\b|"
    r"(?:(?<![\w ])|(?<=^)|(?<=please )|(?<=and ))(?:fix|correct) (?:the|this|these|its|grammar|spelling|"
    r"punctuation|mistakes?|errors?|bugs?|typos?)|"
    r"put (?:\w+ ){1,3}?(?:in|into)|use (?:a |more )?(?:formal|informal|simpler|different))\w*"
    r"|改写|重写|改成|改为|修改|纠正|改正|修正|润色|翻译|译成|译为|转换|转化|转写|简化|缩写|扩写|压缩|精简|总结|概括|换一种说法|"
    r"用(?:英语|英文|中文|汉语|日语|法语|德语)(?:表达|说|写|改写|翻译|重述)|"
    r"换个说法|优化|改进|完善|修复|调整|变成|转为|转成|改错|订正|校对",
    re.IGNORECASE,
)
#: ... unless it allows none: "Fix the code if needed", "Correct any errors", "如有错误请改正".
_CONDITIONAL = re.compile(
    r"\bif (?:needed|necessary|any|there (?:are|is)|required|applicable|appropriate|it (?:is|has|contains|needs)|"
    r"they|you find|so|not)|\bwhere (?:needed|necessary|appropriate|applicable)|\bas (?:needed|necessary)\b|"
    r"\bor (?:leave|keep|return|say)|\bunchanged\b|\bas is\b|\bwhether\b|\bany (?:errors?|mistakes?|bugs?|"
    r"issues?|typos?|problems?)\b|\bcheck (?:if|for|whether)|\bif (?:anything|something)\b"
    r"|如有|如果有|若有|如果需要|如需|必要时|是否|有无|若无|如果没有|无需修改|不需要修改|检查|如存在|若存在",
    re.IGNORECASE,
)


def output_equals_input(turn: Turn) -> str | None:
    """The answer is the input unchanged, for a task that asks for a change.

    Compares raw text, save Unicode width, runs of whitespace and one final full stop ("。", ".", which a
    copy often drops): "Great job 🎉" is not "Great job", and "Hello, how are you?" is a change of
    "hello how are you". Fires only where the request asks for a change
    (rewrite, paraphrase, translate, summarise, fix/correct the …, 改写, 纠正…) without allowing none: "Correct
    the grammar of the sentence." answered with the sentence as given fires; "Fix this code if needed." with the
    code already correct, and tasks an input may already satisfy ("Sort these numbers", "Convert the title to
    title case", "Proofread the sentence", "Make sure it ends with correct punctuation") do not.
    """
    if not turn.input.strip():
        return None
    answer, source = _raw_form(turn.answer), _raw_form(turn.input)
    if answer != source:
        return None
    case = _CASE_TASK.search(turn.instruction)
    if case:  # verifiable: the input either is in the asked case already or is not
        want = case.group(1).lower()
        done = source == (source.lower() if want.startswith("lower") else source.upper())
        return None if done else f"output = input, which is not {want} yet"
    if not _CHANGE.search(turn.instruction) or _CONDITIONAL.search(turn.instruction):
        return None
    return "output = input, and the task asks for a change"


_CASE_TASK = re.compile(r"\b(upper ?case|lower ?case|all caps|capital letters)\b", re.IGNORECASE)


def _raw_form(text: str) -> str:
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()
    return text[:-1].rstrip() if text.endswith((".", "。")) else text


#: A request that must open what its URL points to: visit, open, download, or work on its content.
_OPEN_URL = re.compile(
    r"\b(?:visit|open|go to|browse|navigate to|click|download|fetch|access|read|watch|listen to|view|look at|"
    r"check out|refer to|see|load|scrape|crawl)\b(?![^.\n]{0,40}\b(?:url|link|domain|address)s? (?:format|structure|"
    r"syntax)\b)|访问|打开|浏览|点击|下载|阅读|查看|观看|进入|参考|前往|登录|爬取",
    re.IGNORECASE,
)
_CONTENT_TASK = re.compile(
    r"\b(?:summari[sz]e|describe|review|analy[sz]e|critique|evaluate|explain|translate|classify|what (?:does|is)|"
    r"tell me about|key points|main (?:idea|points?)|according to|based on|from (?:the|this) (?:article|page|post|"
    r"site|website|link|paper|video)|answer|rate|list)\b|总结|概括|描述|介绍|分析|评价|翻译|根据|主要内容|要点|讲了什么|说了什么|"
    r"回答|解释",
    re.IGNORECASE,
)
#: What a task about the URL itself does with it ("Extract the domain from …", "把链接写成 Markdown 格式").
_ABOUT_URL = re.compile(
    r"\b(?:domains?|hostnames?|hosts?|query (?:string|parameters?)|parameters?|paths?|slugs?|protocols?|schemes?|"
    r"tlds?|subdomains?|href|anchors?|regex|regular expressions?|patterns?|valid|validate|valid|parse|extract|"
    r"shorten|encode|decode|escape|format|markdown|html|citation|cite|bibliograph\w*|redirect|ports?|characters?|"
    r"components?|parts?|convert|rewrite|split|spell|secure|https? or|phishing|suspicious|safe)\b|"
    r"域名|参数|协议|格式|正则|提取|解析|验证|缩短|编码|解码|引用|组成|部分|转换|转成|写成|拆分|安全|钓鱼",
    re.IGNORECASE,
)


def url_task(instruction: str, texts: list[str]) -> str | None:
    """The URL a task needs to open, or None.

    Fires where the task must fetch what the URL points to: "Visit https://x.org and list its sections",
    "Summarise the article." with the input "https://x.org/news/1", "打开这个网址并总结内容". Must not fire
    where the task is about the URL itself: "Extract the domain from https://x.org/a", "Is www.x.org a valid
    address?", "把 https://x.org/a 转成 Markdown 链接", nor where the text to work on is given beside it.
    """
    for text in texts:
        url = _URL.search(text)
        if not url:
            continue
        if _MEDIA_CODE_CONTEXT.search(instruction):
            return None  # "Write a Python function that downloads https://…" is a code task
        # The material to work on besides the URL: the other texts, and a long instruction's own text.
        material = sum(len(_TOKEN.findall(_URL.sub(" ", t))) for t in texts if t != instruction)
        material += max(0, len(_TOKEN.findall(_URL.sub(" ", instruction))) - 15)
        if _ABOUT_URL.search(instruction):
            return None
        if _OPEN_URL.search(instruction):
            return url.group(0)[:100]
        if _CONTENT_TASK.search(instruction) and material <= 6:
            return url.group(0)[:100]
    return None


_MEDIA_CODE_CONTEXT = re.compile(
    r"\b(?:function|script|program|code|command|python|java|javascript|bash|shell|sql|api|class|method|snippet|"
    r"curl|wget|requests|http client)\b|代码|程序|脚本|函数|接口|命令",
    re.IGNORECASE,
)


def _instruction_flags(example: Example, cfg: FilterConfig) -> dict[str, Any]:
    instruction = example.instruction
    flags: dict[str, Any] = {}
    if not instruction.strip():
        flags["instruction_empty"] = None
    else:
        length = _length_check(*units(instruction), cfg.instruction_length, cfg.instruction_length_zh)
        # A conversation's opening turn often carries pasted material, which a single-turn record keeps in
        # ``input``: only the lower bound applies to it.
        if length and not (example.messages and length[0] == "too_long"):
            flags[f"instruction_{length[0]}"] = length[1]
        # No list: the request read in context ("draw a picture of", never "draw a conclusion"); a list: the
        # user's own bare words.
        word = find_blacklisted(instruction, cfg.blacklist)
        if word:
            flags["blacklisted_keyword"] = word
        asked = find_personal_experience(instruction)
        if asked:
            flags["personal_experience"] = f"asks for the assistant's own experience: {asked!r}"
        if starts_with_punctuation(instruction):
            flags["leading_punctuation"] = instruction.lstrip()[0]
        open_ = unbalanced(instruction)
        if open_:
            flags["unbalanced"] = f"instruction: {open_}"
    texts = prompt_texts(example)
    marks = example.meta.get("flags")
    if isinstance(marks, list) and "prompt_injection" in marks:
        flags["prompt_injection"] = "meta.flags: prompt_injection (the generator saw an injection line)"
    elif not INJECTION_TOPIC.search(" ".join(texts)):
        for text in texts:
            line = injection_line(text)
            if line:
                flags["prompt_injection"] = f"prompt: {line[:100]}"
                break
    url = url_task(instruction, [t for t in texts if t])
    if url:
        flags["url_in_prompt"] = url
    for text in texts:
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
