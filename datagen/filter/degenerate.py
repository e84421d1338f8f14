"""Degenerate answers: rules that read an answer against its task, not alone.

A small model asked for instances of a task often copies what the prompt showed it: a class label of a
few-shot example ("Unsupport" as the answer to "Write a short story about a man who can turn into a robot"),
the example's output, the prompt's own scaffolding ("Task: …", "Class label: …"), or the instruction itself.
Each passes every rule that reads the answer alone. The rules here compare the answer with the task and with
the in-context examples the model saw: ``meta.in_context`` of the record (the outputs and labels shown to the
model when it wrote the answer) and the few-shot examples of our own Self-Instruct prompts
(``prompts/<lang>/self_instruct_*.j2``).

    >>> task = TaskContext.of("Write a short story about a man who can transform his body into a robot.", "")
    >>> label_copy("Unsupport", task), short_open_answer("Unsupport", task)
    ("copies the in-context label 'Unsupport'", '1 word for an open task (write)')
    >>> capital = TaskContext.of("What is the capital of Australia?", "")
    >>> label_copy("Canberra.", capital), short_open_answer("Canberra.", capital)
    (None, None)
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz

from datagen.filter.relevance import content_stems
from datagen.prompts import prompts_dir
from datagen.text import CJK, CODE_TASK, is_cjk, normalize_text

#: Our few-shot prompts; their example labels, outputs, inputs and tasks are what a copying model repeats.
_FEW_SHOT_TEMPLATES = ("self_instruct_output_first.j2", "self_instruct_input_first.j2")
_FIELD = re.compile(r"^(Task|Class label|Input|Output|任务|类别标签|输入|输出)\s*[:：]\s*(.+?)\s*$", re.MULTILINE)


@functools.lru_cache(maxsize=4)
def template_examples(root: str | None = None) -> dict[str, frozenset[str]]:
    """Normalised few-shot fields of our Self-Instruct prompts, en + zh: ``labels``, ``outputs``, ``inputs``,
    ``tasks`` (each a set of ``normalize_text`` forms; Jinja lines and ``<noinput>`` left out)."""
    base = prompts_dir() if root is None else Path(root)
    found: dict[str, set[str]] = {"labels": set(), "outputs": set(), "inputs": set(), "tasks": set()}
    kind = {
        "Task": "tasks",
        "任务": "tasks",
        "Class label": "labels",
        "类别标签": "labels",
        "Input": "inputs",
        "输入": "inputs",
        "Output": "outputs",
        "输出": "outputs",
    }
    for lang in ("en", "zh"):
        for name in _FEW_SHOT_TEMPLATES:
            path = base / lang / name
            if not path.exists():
                continue
            for key, value in _FIELD.findall(path.read_text(encoding="utf-8")):
                if "{{" in value or value.strip("<>") in ("noinput", "无"):
                    continue
                found[kind[key]].add(normalize_text(value))
    return {k: frozenset(v - {""}) for k, v in found.items()}


def in_context_texts(meta: dict[str, Any]) -> list[str]:
    """The in-context outputs/labels a record says its answer was written after (``meta.in_context``):
    strings, or mappings whose ``output``/``label`` (and ``input``) are taken."""
    value = meta.get("in_context")
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for item in value:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            out.extend(str(item[k]) for k in ("output", "label") if isinstance(item.get(k), (str, int, float)))
    return out


# ---------------------------------------------------------------------------------------------- the task


#: Label families: a label of the family is a right kind of answer to a task carrying one of its cues.
_FAMILIES = (
    (
        r"^(?:positive|negative|neutral|mixed|正面|负面|中性|积极|消极|中立|褒义|贬义)$",
        r"sentiment|feeling|tone|mood|emotion|opinion|attitude|review|polarity|情感|情绪|态度|评价|倾向|褒贬|口碑|看法",
    ),
    (
        r"^(?:yes|no|true|false|correct|incorrect|right|wrong|是|否|对|错|正确|错误|不是|不对|有|没有|会|不会|能|不能)$",
        r"\?|？|\b(?:true or false|yes or no|whether|is it|are they|does it|do they)\b|"
        r"是否|吗|判断|对不对|是不是|有没有|会不会|能不能",
    ),
    (
        r"^(?:(?:not )?promotion|spam|not spam|ham|advert\w*|广告|非广告|垃圾邮件|正常邮件)$",
        r"e-?mail|message|\bad\b|advert|promot|spam|邮件|短信|广告|消息|推销",
    ),
    (
        r"^(?:support|unsupport|supported|unsupported|refute[sd]?|not enough info|支持|不支持|反驳)$",
        r"support|claim|evidence|document|fact[- ]?check|声明|证据|支持|论断|文档",
    ),
)
_FAMILY_RES = tuple((re.compile(label, re.IGNORECASE), re.compile(cue, re.IGNORECASE)) for label, cue in _FAMILIES)

#: An open task asks for text of some length: a story, a plan, an explanation, a list.
_OPEN_EN = re.compile(
    r"(?:^|[.!?;:\n]\s*|,\s*(?:and\s+|then\s+)?)(?:(?:please|now|then|also|can you|could you|would you|i want you to|"
    r"i need you to|help me)\s+)*"
    r"(?P<verb>write|compose|draft|plan|design|describe|explain|list|outline|discuss|summari[sz]e|elaborate on|"
    r"develop|brainstorm|compare|contrast|analy[sz]e|argue|justify|tell me about|tell me a story|tell a story|"
    r"create|generate|prepare|propose|give (?:me )?(?:some |a few |several |\d+ |three |five |ten )?(?:tips|advice|"
    r"examples|reasons|ideas|suggestions|steps|instructions|an overview|a summary|a description|an explanation|"
    r"an example|a list|recommendations)|suggest (?:some|a few|several|ways|\d+|three|five)|"
    r"(?:give|provide|offer|share|make|prepare|draw up|put together|come up with|suggest|recommend)(?: me| us)?"
    r"(?= (?:\S+ ){0,3}?(?:post|dialogue|quiz|faq|press release|tweet|plan|guide|overview|description|explanation|"
    r"summary|list|story|essay|poem|letter|email|report|outline|"
    r"biography|profile|review|analysis|argument|comparison|itinerary|recipe|tutorial|introduction|speech|article|"
    r"paragraph|advice|tips|examples|reasons|ideas|suggestions|steps|instructions|recommendations|strategy|"
    r"proposal|schedule|routine|program|checklist|agenda|pitch|toast|eulogy|lesson)s?\b)|"
    r"what(?:'s| is| are) (?:the |some )?(?:best|easiest|quickest|fastest|simplest|most effective) ways? to|"
    r"what(?:'s| is| are) (?:the |a |an |some )?(?:most |least )?(?:\w+ )?facts? about|"
    r"how (?:do|can|should|would) "
    r"(?:i|we|you|one)|how to|what are (?:some|the (?:benefits|advantages|disadvantages|pros|cons|steps|differences|"
    r"causes|effects|main|key))|walk me through|teach me|review|tell (?:me |us |them )?(?:a |an |the )?(?:\S+ ){0,3}?"
    r"(?:story|tale|fable|anecdote|joke|legend))\b",
    re.IGNORECASE,
)
#: After an open verb, objects whose whole answer is a word or two: "Write the plural of mouse", "Create a
#: name for a bakery".
_SHORT_OBJECT_EN = re.compile(
    r"^\W*(?:(?:down|out)\s+)?(?:(?:me|us)\s+)?(?:(?:the|a|an|one|single|new|catchy|short|good|creative|\d+|two|three)\s+)*"
    r"(?:single\s+)?(?:word|number|name|title|headline|slogan|tagline|synonym|antonym|plural|singular|abbreviation|"
    r"acronym|letter|digit|date|answer|result|value|opposite|past tense|present tense|past participle|adjective|"
    r"noun|verb|adverb|hashtag|emoji|formula|equation|symbol|password|username|rhyme|term|phrase|nickname|motto|"
    r"label|category|color|colour|code name|brand name|domain name|sum|product|total|score|grade|rating|"
    r"prime|integer|fraction|percentage|ratio|unit|chemical symbol|capital|country|city)s?\b"
    r"(?=\s*(?:$|[.,:;!?\"'“(]|(?:of|for|that|which|to|in|from|with|and|or|about|based|using|meaning|describing|"
    r"ending|starting|beginning|rhyming|summari[sz]ing)\b))",
    re.IGNORECASE,
)
_OPEN_ZH = re.compile(
    r"(?P<verb>写(?:一篇|一首|一封|一段|一个故事|一份|一则|篇|首|封|段|个故事|份)|写(?:一|个|篇|首|封|段|份|则)"
    r"[^，。？！\n]{0,12}?(?:故事|文章|诗|信|短文|作文|介绍|报告|演讲稿|计划|日记|评论|对话|文案|邮件|段落|总结|剧本|歌词|"
    r"散文|通知|祝福|感想|读后感|方案|攻略|指南|教程)|撰写|编写|创作|描述|解释|列出|列举|说明|阐述|"
    r"讨论|分析|总结|概括|介绍|比较|设计|制定|规划|起草|谈谈|讲(?:一个|个)?故事|给出(?:一些|几条|几个|\d+条|三条|五条)?"
    r"(?:建议|理由|例子|步骤|方法|原因)|提出(?:一些|几条)?建议|如何|怎样|怎么(?:做|才能|样才能))"
)
_SHORT_OBJECT_ZH = re.compile(
    r"^(?:出|下|一下)?(?:一个|两个|几个)?(?:词|字|名字|名称|标题|口号|答案|结果|数字|日期|成语|反义词|"
    r"近义词|同义词|拼音|缩写|颜色|国家|城市|首都)"
)
#: The task itself asks for a word or two.
_BRIEF = re.compile(
    r"\b(?:in|with|using)\s+(?:one|a single|two|a|1|2)\s+words?\b|\bone[- ]word\b|\btwo[- ]word\b|"
    r"\bsingle word\b|\bone or two words\b|\bin a word\b|\bjust (?:the|a) (?:name|word|number)\b|"
    r"(?:用|以)?(?:一个|两个|一|两|1|2)(?:个)?(?:词|字)|一词|二字|两字",
    re.IGNORECASE,
)
#: Code or math notation in a short answer ("x++;", "a^2+b^2", "f(x)"). A bare number is not in it: "5" is no
#: whole answer to "Explain the Pythagorean theorem", and tasks that want a number ("Write the sum of …") are
#: not open (``_SHORT_OBJECT_EN``).
_CODE_OR_MATH = re.compile(r"[;{}=<>\[\]+*/\\|^$]|\w\(")
#: A task that chooses among options ("判断…是新闻、诗歌还是说明文", "Which of these…") is not open.
_CHOICE = re.compile(
    r"判断|是否|还是|哪个|哪一|哪种|属于|分类|归类|选择|选出|\bwhich (?:of|one)\b|\bclassify\b|"
    r"\bcategori[sz]e\b|\btrue or false\b|\byes or no\b|\bwhether\b|\bidentify the (?:type|category|"
    r"genre|tone|sentiment)\b",
    re.IGNORECASE,
)
_LIST_SEP = re.compile(r"[,，、;；/\n]|\band\b|\bor\b|和|与")


@dataclass
class TaskContext:
    """What a rule needs to know about the request an answer answers."""

    instruction: str
    input: str = ""
    is_classification: bool | None = None
    in_context: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, instruction: str, input: str, meta: dict[str, Any] | None = None, is_classification: bool | None = None
    ) -> TaskContext:
        return cls(instruction, input, is_classification, in_context_texts(meta or {}))

    @functools.cached_property
    def text(self) -> str:
        return f"{self.instruction}\n{self.input}"

    @functools.cached_property
    def words(self) -> set[str]:
        return set(normalize_text(self.text).split())

    @functools.cached_property
    def open_verb(self) -> str | None:
        """The verb that makes the task open (``write``, ``describe``, ``解释``), or None.

        A generator's ``is_classification`` does not close a task whose own words open it: the flag comes from
        a classifier that can be wrong ("What is the most surprising fact about a famous movie?" routed
        output-first got the label "Unrelieved"), while the words of a real classification task name a choice
        (``_CHOICE``: "classify", "which of", 判断…)."""
        if _BRIEF.search(self.instruction) or _CHOICE.search(self.instruction) or CODE_TASK.search(self.instruction):
            return None
        for match in _OPEN_EN.finditer(self.instruction):
            if not _SHORT_OBJECT_EN.match(self.instruction[match.end() :]):
                return match.group("verb").lower()
        for match in _OPEN_ZH.finditer(self.instruction):
            if not _SHORT_OBJECT_ZH.match(self.instruction[match.end() :]):
                return match.group("verb")
        return None


def _answer_words(answer: str) -> tuple[int, str]:
    """Size of a short answer in "words": Latin words, plus CJK characters counted two to a word."""
    cjk = sum(1 for c in answer if is_cjk(c))
    latin = len(re.findall(r"[^\W_]+", re.sub(f"[{CJK}]", " ", answer)))
    return latin + (cjk + 1) // 2, "zh" if cjk > latin else "en"


# ---------------------------------------------------------------------------------------------- the rules


def label_copy(answer: str, task: TaskContext) -> str | None:
    """The answer is an output or class label of an in-context example that does not fit this task.

    Fires on "Unsupport" to "Write a short story about …", on "Promotion" to "Is this sentence grammatical?",
    and on a verbatim few-shot output ("Jamaica, United Kingdom") for another task. Must not fire where the
    label is the right kind of answer: "positive" to "What is the sentiment of this review?", "Support" to a
    task that offers "Support or Unsupport", "正面" to "判断这条评论的情感倾向". Labels come from
    ``meta.in_context`` and from our own few-shot prompts.
    """
    norm = normalize_text(answer)
    if not norm or len(norm) > 200:
        return None
    shown = template_examples()
    context = {normalize_text(t) for t in task.in_context} - {""}
    labels = context | shown["labels"]
    outputs = context | shown["outputs"]
    if norm in labels and len(norm.split()) <= 3:
        if _label_fits(norm, task):
            return None
        return f"copies the in-context label {answer.strip()!r}"
    if norm in outputs and norm not in normalize_text(task.text):
        return f"copies an in-context example's output {answer.strip()[:60]!r}"
    return None


def _label_fits(norm: str, task: TaskContext) -> bool:
    """A label fits a task that names it ("Support or Unsupport"), or whose cues match the label's family."""
    if task.open_verb:
        return False
    text = normalize_text(task.text)
    if f" {norm} " in f" {text} " or (any(is_cjk(c) for c in norm) and norm in text):
        return True
    for label, cue in _FAMILY_RES:
        if label.match(norm):
            return bool(cue.search(task.text))
    return False


_BARE_NUMBER = re.compile(r"\W*\d[\d.,]*\W*")
#: A task that asks for code to be written ("Create a new version of the following code…"), not for a value.
_WRITES_CODE = re.compile(
    r"\b(?:write|create|implement|modify|rewrite|refactor|fix|new version|code that)\b|编写|写一个|实现|修改",
    re.IGNORECASE,
)


def short_open_answer(answer: str, task: TaskContext) -> str | None:
    """A one- or two-word answer to an open task (write, plan, describe, explain, list, compose…; 写、描述…).

    Fires on "Unsupport" to "Write a short story about …" and "春天" to "写一首关于春天的诗". Must not fire on
    "Canberra." to "What is the capital of Australia?", "积极" to a sentiment task, "Mice" to "Write the plural
    of mouse", "Red, blue" to "List two colours" (a list), or "Joyful" to "Describe your mood in one word".
    """
    if (
        CODE_TASK.search(task.instruction)
        and _WRITES_CODE.search(task.instruction)
        and _BARE_NUMBER.fullmatch(answer.strip())
    ):
        return "a bare number for a task that asks for code"
    if not answer.strip() or "```" in answer or _CODE_OR_MATH.search(answer):
        return None  # "x++;" to "Write a C line that increments x" is a whole answer
    size, _ = _answer_words(answer)
    if size > 2:
        return None
    verb = task.open_verb
    if verb is None:
        return None
    items = [p for p in _LIST_SEP.split(answer.strip()) if p.strip(" .。!！")]
    if len(items) >= 2:
        return None
    return f"{size} word{'s' * (size != 1)} for an open task ({verb})"


_SCAFFOLD = re.compile(
    r"^\s*(?:Task|Class label|Is it classification\?|任务|类别标签)\s*[:：]|^\s*(?:Example|示例)\s*\d+\s*$|"
    r"<noinput>|<无>|^\s*(?:Input|Output|输入|输出)\s*[:：]",
    re.MULTILINE | re.IGNORECASE,
)
_STRONG_SCAFFOLD = re.compile(
    r"^\s*(?:Task|Class label|任务|类别标签)\s*[:：]|^\s*(?:Example|示例)\s*\d+\s*$|"
    r"<noinput>|<无>|Is it classification\?",
    re.MULTILINE | re.IGNORECASE,
)


def echo(answer: str, task: TaskContext) -> str | None:
    """The answer repeats the request, the prompt's scaffolding, or an in-context example instead of answering.

    Fires on an answer equal to the instruction ("Write a poem about rain." → "Write a poem about rain."), one
    that is the instruction plus a few words or most of it restated ("Describe the process of making cheese." →
    "The process of making cheese."), one carrying the few-shot prompt's scaffolding ("Task: …\\nClass
    label: …", "<noinput>"), and one equal to a few-shot example's input or task. Must not fire on "Repeat
    after me: good morning" → "Good morning", nor on an answer that quotes the task then answers it at length.
    """
    norm = normalize_text(answer)
    if not norm:
        return None
    instruction = normalize_text(task.instruction)
    if len(instruction.split()) >= 3 or sum(1 for c in instruction if is_cjk(c)) >= 4:
        if norm == instruction:
            return "answer = instruction"
        if norm.startswith(instruction) and len(norm) <= 1.3 * len(instruction) + 8:
            return "answer = instruction + a few words"
        words = norm.split()
        if len(words) >= 3 and f" {norm} " in f" {instruction} " and len(words) >= 0.6 * len(instruction.split()):
            return "answer = the instruction restated"
    if len(_SCAFFOLD.findall(answer)) >= 2 and _STRONG_SCAFFOLD.search(answer):
        line = _STRONG_SCAFFOLD.search(answer)
        return f"answer carries the prompt's scaffolding ({line.group(0).strip()[:30]!r})"
    shown = template_examples()
    if (norm in shown["inputs"] or norm in shown["tasks"]) and norm not in normalize_text(task.text):
        return f"answer = a few-shot example of the prompt ({answer.strip()[:60]!r})"
    if restates_request(answer, task):
        return "answer restates the request instead of answering it"
    if adds_nothing(answer, task):
        return "answer adds nothing to the request: every content word of it comes from the instruction"
    if copies_input(answer, task):
        return f"answer is the input barely changed, for an open task ({task.open_verb})"
    return None


_ANNOUNCE = re.compile(
    r"^\W*(?:(?:ok(?:ay)?|sure|good job|great|alright|of course|certainly|yes|absolutely)\W+)*"
    r"(?:i(?:'ll| will| am going to| can| shall)|let me|let's|here (?:is|are)|below (?:is|are))\b[^:：\n]{0,60}$"
    r"|^(?:好的|当然|没问题)?[，,]?(?:我(?:将|会|来|可以)|下面是|以下是|让我)[^：:\n]{0,25}$",
    re.IGNORECASE,
)


def announces_only(answer: str, task: TaskContext) -> str | None:
    """The answer says it will do the task, and stops: "Good job, I will prepare a list of 3 tips.", "Here are
    five ideas.", "好的，我来写一首诗。" Must not fire on "Here is the list: apples, pears" (the content follows a
    colon), "I will be there at 5." to "Reply to the invitation" (the promise is the answer: no open task), or
    on a long answer that starts with "Let me explain" and explains.
    """
    text = answer.strip()
    if not task.open_verb or "\n" in text or len(text.split()) > 20:
        return None
    return "announces the answer instead of giving it" if _ANNOUNCE.match(text) else None


#: Questions whose answer is a duration ("How long does it take…", 多久) ...
_DURATION_QUESTION = re.compile(
    r"^\W*how long\b|多久|多长时间|多少(?:天|年|小时|分钟)|几(?:天|年|小时|分钟)", re.IGNORECASE
)
#: ... or a number or a date ("How many…", "What year…", "When did…", 哪一年).
_NUMBER_QUESTION = re.compile(
    r"^\W*(?:how (?:many|old|far|tall|high|big|large|heavy|deep|wide)|in what year|what year|which year|"
    r"when (?:did|was|were))\b|哪一年|几岁|多少(?:个|人|次|种|钱|米|公里)|几(?:个|次|种|人)|多高|多重|多远",
    re.IGNORECASE,
)
#: What a duration holds: a digit or a unit of time or length ("ten minutes", "overnight", "三天左右").
_DURATION = re.compile(
    r"\d|\b(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?|decades?|centur(?:y|ies)|overnight|"
    r"millenni(?:um|a)|meters?|metres?|kilomet(?:er|re)s?|km|miles?|feet|foot|inches?)\b"
    r"|[天周年月日时秒]|小时|分钟|星期|世纪|公里|米",
    re.IGNORECASE,
)
#: What a number or a date holds: a digit, a number word, a month or an era.
_NUMBER = re.compile(
    r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|"
    r"seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundreds?|thousands?|"
    r"millions?|billions?|dozens?|none|zero|no|a couple|several|a few|once|twice|january|february|march|april|"
    r"may|june|july|august|september|october|november|december|bc|bce|ad|ce)\b"
    r"|[一二三四五六七八九十百千万亿两零]|世纪|年代",
    re.IGNORECASE,
)


def wrong_answer_type(answer: str, task: TaskContext) -> str | None:
    """A question that asks for a duration, a number or a date ("How long does it take to make a starter?",
    "How many moons…", "哪一年") whose answer holds none. Must not fire on "About ten minutes.", "Two: Phobos and
    Deimos.", "In 1945.", "三天左右。", nor on "When should I water succulents?" (a "when" that asks for a
    condition). "Many yeasts…" is no answer to "How long…": a duration needs a unit or a digit.
    """
    question = task.instruction.strip()
    if task.is_classification:
        return None
    if _DURATION_QUESTION.search(question):
        return None if _DURATION.search(answer) else "a 'how long' question answered without a duration"
    if _NUMBER_QUESTION.search(question):
        return None if _NUMBER.search(answer) else "a 'how many / when' question answered without a number or date"
    return None


#: An instruction that works on its input ("Write the sentence in the plural", "把下面这句话…") may rightly answer
#: with a near-copy of it.
_WORKS_ON_INPUT = re.compile(
    r"\b(?:the|this|these|that|following|given|above|below) (?:sentences?|text|passage|"
    r"paragraphs?|phrases?|words?|input|code|list|story|poem|title|statement|quote|line)\b|"
    r"\bthe following\b|\bgiven\b|下面|以下|下列|这句|这段|这个句子|给定|上面|上述",
    re.IGNORECASE,
)


def copies_input(answer: str, task: TaskContext) -> bool:
    """An answer to an open task that is its input barely changed ("Write a paragraph about your hobby." + "I
    love to play the guitar." → "I love playing the guitar."). Tasks that ask for a change of the input are
    ``output_equals_input``'s; a task that asks for more than the input holds gets a copy back only when the
    model did nothing."""
    source = task.input.strip()
    if (
        not task.open_verb
        or not source
        or len(answer.strip()) > 1.3 * len(source) + 10
        or _WORKS_ON_INPUT.search(task.instruction)
    ):  # "Write the sentence in the plural" rewrites it
        return False
    return fuzz.ratio(normalize_text(answer), normalize_text(source)) >= 80


def adds_nothing(answer: str, task: TaskContext) -> bool:
    """A short English answer to an open task built only from the instruction's own content words ("How many
    people can you hold with one hand? Explain." → "10 people can hold with one hand."). Only the instruction
    counts, not the input: "List the colours in the input" → "Red, green and blue" takes its words from the
    input and is an answer."""
    text = answer.strip()
    if (
        not task.open_verb
        or len(text.split()) > 20
        or "\n" in text
        or any(is_cjk(c) for c in text)
        or _CODE_OR_MATH.search(text)
    ):  # code ('printf("hello\\n");', a Makefile rule) reuses the task's words
        return False
    mine = content_stems(text)
    return len(mine) >= 2 and mine <= content_stems(task.instruction)


#: A task about templates or blanks may rightly answer with placeholders ("Write a form letter template").
_TEMPLATE_TASK = re.compile(
    r"template|placeholder|fill[- ]in|blank|lorem|todo|mail merge|jinja|mustache|handlebars|"
    r"format string|boilerplate|skeleton|stub|模板|占位|填空|样板|范本",
    re.IGNORECASE,
)
_CURLY_SLOT = re.compile(r"\{\{\s*[\w .'-]{1,30}\s*\}\}|\{[A-Z][A-Z_ ]{1,28}\}|<[A-Z][A-Z_ ]{1,28}>")
_BRACKET = re.compile(r"(?<![A-Za-z0-9_\]])\[([^\[\]\n]{1,40})\](?![(:\[])")
_SLOT_WORD = re.compile(
    r"\b(?:name|names|date|time|location|place|venue|company|organi[sz]ation|title|position|role|job|address|phone|"
    r"e-?mail|number|amount|price|field|link|url|adjective|noun|verb|dish|product|city|country|topic|event|day|month|"
    r"year|insert|your|his|her|their|recipient|sender|benefit|school|team|department|website|industry|skill|book|"
    r"author|brand|app|feature|item|quantity|percent(?:age)?|contact|signature|here|placeholder|details?|"
    r"programming languages?|organisation|landlord|manager|client|customer|x|y|n)\b"
    r"|名称|名字|姓名|日期|时间|地点|职位|公司|星期|活动|事情|某|你的|您的|对方|金额|电话|地址|邮箱|数字|链接|产品|学校|城市|[XxＸ]",
    re.IGNORECASE,
)
_CHECKBOX = re.compile(r"^\s*(?:[-*]\s*)?\[[ xX✓]\]", re.MULTILINE)
_STUB = re.compile(
    r"\bTODO\b|\bFIXME\b|\bTBD\b|lorem ipsum|\binsert (?:\w+ ){0,3}here\b|待实现|待补充|待填写|此处填写|"
    r"在此(?:处)?(?:填写|插入)|(?<![A-Za-z])(?:XXX|xxx)(?![A-Za-z])|某某某",
    re.IGNORECASE,
)
_NAME_LINE = re.compile(
    r"^\s*(?:your (?:full )?name|your title|sender'?s? name|name surname)\s*$", re.IGNORECASE | re.MULTILINE
)
_MEDIA_TAG = re.compile(r"<\s*(?:image|img|video|audio|picture|图片|视频)\b[^>]*>", re.IGNORECASE)


def placeholder(answer: str, task: TaskContext) -> str | None:
    """The answer holds an unfilled slot instead of content: "[Your Name]", "{{date}}", "[公司名称]", "我叫XXX",
    "# TODO: implement", "Lorem ipsum", "<video>".

    Must not fire on Markdown links ("[Docs](https://…)"), citations ("[1]"), checkboxes ("- [x] done"),
    stage directions ("[Chorus]", "[laughs]"), intervals ("[0, 1)"), nor on any answer to a task that asks
    for a template or blanks ("Write a fill-in-the-blank exercise", "写一份请假条模板").
    """
    if _TEMPLATE_TASK.search(task.instruction):
        return None
    stub = _STUB.search(answer)
    if stub:
        return f"unfilled placeholder {stub.group(0)!r}"
    prose = re.sub(r"```.*?(?:```|$)|`[^`\n]*`", " ", answer, flags=re.DOTALL)
    slot = _CURLY_SLOT.search(prose)
    if slot:
        return f"unfilled placeholder {slot.group(0)!r}"
    if CODE_TASK.search(task.instruction):
        prose = ""  # "[n * n for n in range(10)]", "[A-Z]": brackets in code and regexes are not slots
    prose = _CHECKBOX.sub(" ", prose)
    for match in _BRACKET.finditer(prose):
        inner = match.group(1).strip()
        if not re.search(r"[^\W\d_]", inner) or re.search(r"[=*()\\/<>+\"]|\bfor\b|^\^|\w-\w\b", inner):
            continue  # "[1]", "[0, 1)", code, a regex class
        if _SLOT_WORD.search(inner) or (inner.isupper() and len(inner) <= 30):
            return f"unfilled placeholder {match.group(0)!r}"
    line = _NAME_LINE.search(answer)
    if line:
        return f"unfilled placeholder {line.group(0).strip()!r}"
    tag = _MEDIA_TAG.search(answer)
    if tag and not CODE_TASK.search(task.instruction):
        return f"media placeholder {tag.group(0)!r}"
    return None


#: An answer that is itself a request ("解释一下什么是地震", "Explain what an earthquake is.") restates the task.
_REQUEST_START = re.compile(
    r"^\s*(?:please |can you |could you )?(?:write|compose|draft|describe|explain|list|outline|discuss|summari[sz]e|"
    r"tell me|give me|create|generate|translate|classify|identify|suggest|what|how|why|which|who|when|where)\s"
    r"(?!.*:)|^\s*(?:请|解释|描述|说明|介绍|列出|列举|写|谈谈|讲讲|告诉我|给出|翻译|判断|什么是|为什么|如何|怎么)(?!.*[:：])",
    re.IGNORECASE,
)
_ASKS_FOR_REQUESTS = re.compile(
    r"\b(?:question|questions|ask|instruction|instructions|prompt|prompts|command|"
    r"request|query|queries|quiz|faq|interview)\b|问题|提问|指令|提示词|问句|请求|面试|测验",
    re.IGNORECASE,
)


def restates_request(answer: str, task: TaskContext) -> bool:
    """The answer is a one-line request sharing words with the task, not an answer to it."""
    text = answer.strip()
    if (
        "\n" in text
        or len(text) > 80
        or not _REQUEST_START.search(text)
        or _ASKS_FOR_REQUESTS.search(task.instruction)
    ):
        return False
    if task.input.strip() and normalize_text(text) in normalize_text(task.input):
        return False  # a copy of the input is output_equals_input's to judge
    mine = set(normalize_text(text).split()) | {c for c in text if is_cjk(c)}
    theirs = set(normalize_text(task.instruction).split()) | {c for c in task.instruction if is_cjk(c)}
    shared = {w for w in mine & theirs if len(w) > 3 or is_cjk(w[0])}
    return len(shared) >= 2
