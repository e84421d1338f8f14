"""Tolerant parsers for what LLMs actually return: numbered lists, yes/no answers, labelled fields.

Models number lists every way there is (``1.``, ``1)``, ``(1)``, ``1 .``, ``Task 1:``, ``1、``, ``第1条``),
wrap them in chatter ("Sure! Here are ten tasks:" … "Let me know if…"), and break off mid-item when they hit
``max_tokens``. These functions take the text apart without trusting any of it; an unparseable answer is
data (an empty result the caller rejects with a reason), never an exception.

    >>> parse_numbered_list("Sure! Here you go:\\n1. Sort a list.\\n2) Name a colour.\\nHope this helps!")
    ['Sort a list.', 'Name a colour.']
    >>> parse_numbered_list(" Translate the word.\\n10. Add two numbers.", continuation=True)
    ['Translate the word.', 'Add two numbers.']
"""

from __future__ import annotations

import re

# An item marker at the start of a line: 1.  1)  (1)  1 .  #1  Task 1:  Instruction 2 -  1、 1：  第1条
_NUMBERED = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\*\*)?(?:(?:task|instruction|question|q)\s*#?\s*(\d{1,3})\s*[:.)\-–]|"
    r"\(?#?(\d{1,3})\s*[.)、．:：]|\(?(\d{1,3})\)|第\s*(\d{1,3})\s*[条个题项][:：、.]?)(?:\*\*)?\s*",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^\s*[-*•]\s+")
# Lines of chatter that end a list: sign-offs, not items.
_SIGN_OFF = re.compile(
    r"^\s*(?:i hope|hope (?:this|these)|let me know|feel free|these tasks|希望|如果你需要|以上)", re.I
)


def _clean(item: str) -> str:
    item = re.sub(r"\s+", " ", item).strip()
    item = re.sub(r"^\*\*(.+?)\*\*:?\s*", r"\1 ", item).strip()  # markdown bold lead-ins
    return item.strip().strip("\"“”'").strip()


def parse_numbered_list(text: str, continuation: bool = False) -> list[str]:
    """Items of a numbered (or, failing that, bulleted) list, in order, chatter dropped.

    ``continuation=True`` is for completion-style prompts that end with ``"9."``: the text before the
    first marker is the continued item, not a preamble. Items spanning several lines are joined.
    """
    items: list[list[str]] = []
    head: list[str] = []
    for line in text.splitlines():
        if _SIGN_OFF.match(line) and items:
            break
        match = _NUMBERED.match(line)
        if match:
            items.append([line[match.end() :]])
        elif items:
            if line.strip():
                items[-1].append(line)
            elif len(items[-1]) > 1 or items[-1][0].strip():
                items[-1].append("")  # paragraph break inside an item: keep going
        else:
            head.append(line)
    if continuation and "".join(head).strip():
        items.insert(0, [" ".join(head)])
    if not items:  # no numbers: fall back to a bulleted list
        bullets = [_BULLET.sub("", line) for line in text.splitlines() if _BULLET.match(line)]
        return [b for b in (_clean(b) for b in bullets) if b]
    return [i for i in (_clean(" ".join(part for part in item if part)) for item in items) if i]


_YES = re.compile(r"^\W*(yes|yeah|true|correct|是的?|对|可以)\b", re.I)
_NO = re.compile(r"^\W*(no|not|false|incorrect|否|不是|不可以|不)\b", re.I)


def parse_yes_no(text: str) -> bool | None:
    """``True``/``False`` for an answer that starts with yes/no (English or Chinese), ``None`` otherwise."""
    text = text.strip()
    if _YES.match(text) or text.startswith(("是", "对")):
        return True
    if _NO.match(text) or text.startswith(("否", "不")):
        return False
    return None


def split_labelled(text: str, labels: dict[str, str]) -> list[tuple[str, str]]:
    """Cut ``text`` into ``(field, value)`` pairs at line-leading labels such as ``Input:`` / ``输入：``.

    ``labels`` maps each spelling (case-insensitive, without the colon) to a field name. Text before the
    first label is dropped. Both ``:`` and the full-width ``：`` are accepted.
    """
    names = sorted(labels, key=len, reverse=True)
    # No \s* after ^ (with re.M it rescans a run of blank lines from each line start in it) and no two stars
    # that can trade characters (\s*\d*\s*): both are quadratic, and 20,000 newlines took 25 s to parse.
    pattern = re.compile(
        r"^[ \t]*(?:\*\*)?("
        + "|".join(re.escape(n) for n in names)
        + r")(?:\*\*)?[ \t]*(?:\d+[ \t]*)?[:：](?:\*\*)?[ \t]*",
        re.I | re.M,
    )
    pairs: list[tuple[str, str]] = []
    matches = list(pattern.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        field = labels[next(n for n in names if n.lower() == match.group(1).lower())]
        pairs.append((field, text[match.end() : end].strip()))
    return pairs


_INSTANCE_LABELS = {
    "en": {"input": "input", "output": "output", "class label": "label", "label": "label"},
    "zh": {
        "输入": "input",
        "输出": "output",
        "类别标签": "label",
        "类别": "label",
        "标签": "label",
        "input": "input",
        "output": "output",
    },
}
_NO_INPUT = re.compile(r"^\s*(?:<\s*no\s*input\s*>|<\s*无\s*>|none|n/?a|无)\s*\.?\s*$", re.I)
_EXAMPLE_HEAD = re.compile(
    r"^[ \t]*(?:\*\*)?(?:example|示例|例子)[ \t]*\d+[ \t]*(?:[:：][ \t]*)?(?:\*\*[ \t]*)?$", re.I | re.M
)


def _input_value(text: str) -> str:
    return "" if _NO_INPUT.match(text) else text.strip()


def parse_instances_input_first(text: str, lang: str = "en") -> list[tuple[str, str]]:
    """``(input, output)`` pairs from an input-first answer (``Example 1 / Input: … / Output: …``).

    The answer continues a prompt ending in ``Example 1``, so it may start with ``Input:`` directly. An
    ``Output:`` without an ``Input:`` before it is an instance with empty input; ``<noinput>`` means empty.
    """
    pairs = split_labelled(text, _INSTANCE_LABELS.get(lang, _INSTANCE_LABELS["en"]) | _INSTANCE_LABELS["en"])
    instances: list[tuple[str, str]] = []
    pending_input: str | None = None
    for field, value in pairs:
        value = _EXAMPLE_HEAD.split(value)[0].strip()  # text after the value up to the next "Example n"
        if field == "input":
            pending_input = _input_value(value)
        elif field == "output":
            instances.append((pending_input or "", value))
            pending_input = None
    return instances


def parse_instances_output_first(text: str, lang: str = "en") -> list[tuple[str, str]]:
    """``(input, label)`` pairs from an output-first answer (``Class label: … / Input: …``).

    Each label is followed by the input written for it; a label with no input (a task that needs none)
    yields an instance with empty input.
    """
    pairs = split_labelled(text, _INSTANCE_LABELS.get(lang, _INSTANCE_LABELS["en"]) | _INSTANCE_LABELS["en"])
    instances: list[tuple[str, str]] = []
    label: str | None = None
    for field, value in pairs:
        if field == "label":
            if label is not None:
                instances.append(("", label))
            label = value.splitlines()[0].strip() if value.strip() else ""
        elif field == "input" and label is not None:
            instances.append((_input_value(value), label))
            label = None
    if label is not None:
        instances.append(("", label))
    return instances
