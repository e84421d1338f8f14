"""Root verb and first noun object of an instruction: what the Self-Instruct paper's diversity chart counts.

The paper (Wang et al., 2023, Fig. 2) parses each generated instruction, keeps those whose root is a verb
with a direct noun object, and plots the 20 commonest verbs with their 4 commonest objects. This module
does the same reading by rule, in English and Chinese, without a parser model: an imperative instruction
opens with its verb once politeness and framing are stepped over, and its object is the head of the noun
phrase that follows. Questions and statements have no imperative root and are left out, as in the paper.
"""

from __future__ import annotations

import re

from datagen.text import HAN, detect_lang

__all__ = ["verb_object"]


def verb_object(instruction: str) -> tuple[str, str | None] | None:
    """(root verb, first noun object) of an imperative instruction, as the paper's parse-tree chart counts them.

    No parser model: the instruction's opening is read by rule. Politeness ("Please", "Can you", 请, 帮我), a
    framing clause ("Given the list, …", 根据…，) and, in Chinese, a leading preposition (为/用/从/把…) are
    stepped over; an instruction that opens with a question word, a determiner or a statement has no
    imperative root and gives None (the paper's chart leaves those out too). The object is the head of the
    noun phrase right after the verb: "Give a shell command" → command; 把这句话翻译成英文 → (翻译, 话).

    >>> verb_object("Can you write a short poem about the sea?")
    ('write', 'poem')
    >>> verb_object("What is the capital of France?") is None
    True
    >>> verb_object("请写一首关于秋天的诗。")
    ('写', '诗')
    """
    text = instruction.strip()
    if not text:
        return None
    return _zh_verb_object(text) if detect_lang(text) == "zh" else _en_verb_object(text)


# English: an imperative instruction starts with its root verb once politeness and framing are stripped.
_EN_LEAD = re.compile(
    r"^(?:(?:please|kindly|now|then|also|just|and)\b[\s,]*|(?:can|could|would|will) you(?: please)?\b\s*|"
    r"i (?:want|need|would like) you to\b\s*|(?:help|let) me\b\s*|you (?:should|must|need to|are to)\b\s*)+",
    re.I,
)
_EN_FRAME = {
    "given",
    "for",
    "in",
    "using",
    "based",
    "with",
    "from",
    "after",
    "according",
    "if",
    "when",
    "as",
    "by",
    "imagine",
    "suppose",
    "assuming",
    "considering",
    "below",
    "here",
    "below,",
}
_EN_NOT_VERB = set(
    "one two three four five six seven eight nine ten first if once after before suppose imagine "
    "what which who whom whose how why when where whether is are was were do does did can could would "
    "will shall should may might must has have had a an the this that these those there it its i you "
    "he she we they my your our their his her some any each every all no not".split()
)
_EN_SKIP = set(
    "a an the this that these those some any each every all another other following given above below "
    "my your our his her its their me us him them it one two three four five six seven eight nine ten "
    "several few many more most short brief simple new good great detailed quick concise clear "
    "different same single whole entire full basic main key common possible creative funny catchy "
    "formal informal complete correct appropriate suitable useful interesting important".split()
)
#: Words that end the object's noun phrase (prepositions, conjunctions, verbs). Not ``text.STOP_WORDS``: that
#: list holds request nouns ("list", "name", "sentence") that are the very objects counted here.
_EN_PHRASE_END = set(
    "of to for in on with and or as by from at into about what which who how why when where "
    "whether that if than then so because while is are be between across over under through "
    "without within against among like using per via during including around onto up out down "
    "but".split()
)
_EN_PHRASAL = (
    "come up with",
    "make up",
    "figure out",
    "find out",
    "point out",
    "write down",
    "sum up",
    "break down",
    "fill in",
    "set up",
    "look up",
    "think of",
    "pick out",
    "work out",
    "carry out",
    "put together",
    "pull out",
    "turn into",
    "go through",
)


def _en_verb_object(clause: str) -> tuple[str, str | None] | None:
    for _ in range(2):  # "Given the list, sort it" / "Please, ...": the clause after the frame
        clause = _EN_LEAD.sub("", clause).strip()
        first = clause.split(maxsplit=1)[0].lower() if clause else ""
        if first.rstrip(",") in _EN_FRAME and "," in clause:
            clause = clause.split(",", 1)[1]
    words = [w.lower() for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9'-]*|[^\sA-Za-z0-9]", clause)]
    if not words or not words[0].isalpha() or words[0] in _EN_NOT_VERB or words[0] in _EN_FRAME:
        return None  # a question, a statement or a framing we cannot see through: no imperative root verb
    verb, rest = words[0], words[1:]
    for phrase in _EN_PHRASAL:
        parts = phrase.split()
        if words[: len(parts)] == parts:
            verb, rest = phrase, words[len(parts) :]
            break
    noun: list[str] = []  # the noun phrase after the verb; its last word is the head ("shell command" -> command)
    for word in rest:
        if word == ",":
            noun = []  # "a warm, polite message": what came before the comma was an adjective
            continue
        if not (word.isalpha() or "-" in word) or word in _EN_PHRASE_END or (noun and word in _EN_SKIP):
            break
        if word in _EN_SKIP or any(c.isdigit() for c in word):
            continue
        noun.append(word)
        if len(noun) == 5:
            break
    return verb, (noun[-1] if noun else None)


# Chinese: the leading instruction verb (longest match), after politeness, a framing clause or a preposition.
_ZH_VERBS = sorted(
    set(
        "写 写出 编写 撰写 起草 创作 续写 改写 重写 扩写 缩写 润色 翻译 解释 说明 介绍 描述 讲 讲述 讲解 告诉 列出 "
        "列举 举出 举例 给出 提供 推荐 建议 生成 创建 设计 制定 规划 总结 概括 归纳 提取 抽取 整理 分类 归类 判断 "
        "识别 指出 找出 选出 选择 挑选 比较 对比 分析 评价 评估 计算 求 求解 解答 回答 解决 证明 推导 估算 换算 转换 "
        "转写 改成 改为 压缩 简化 修改 纠正 修正 检查 校对 排序 去重 统计 填出 填写 补全 预测 回复 想出 构思 标注 "
        "标出 输出 实现 优化 模拟 扮演 拟 拟定 概述 阐述 论述 复述 辨析 区分 匹配 组织 安排 归入 起 取".split()
    ),
    key=len,
    reverse=True,
)
_ZH_LEAD = re.compile(
    r"^(?:请你|请|麻烦你?|你能否|你能不能|你能|能否|能不能|可以|帮我|帮忙|帮助我|试着|尝试|现在|接下来)+"
)
_ZH_FRAME = re.compile(
    r"^(?:根据|依据|按照|基于|针对|结合|参考|假设|如果|假如|以|在|阅读|读|看|对于|关于)[^，,。；;]{0,40}[，,]"
)
_ZH_PREP = re.compile(r"^(?:根据|依据|按照|基于|针对|结合|参考|使用|把|将|为|给|向|替|对|从|用|以|按|和|跟|在)")
_ZH_MEASURE = re.compile(
    r"^(?:什么是|一下|(?:下面的?|以下的?|如下的?|下列的?|上面的?|上述的?|给出的|给定的?|这些|那些|[这那每各该此]|"
    r"[一二两三四五六七八九十百千几多若干\d]+)(?:[个句段篇首种本些条位道项则封张份组点行步幅])?)"
)
_ZH_END = re.compile(r"[，,。．.、；;：:？?！!（(\s“”\"'《》]|并且?|然后|再|和|与|及|或|成|为|到|给|是|有")
_ZH_HEADS = (
    "宣传语",
    "计划",
    "语句",
    "句子",
    "文章",
    "故事",
    "邮件",
    "列表",
    "代码",
    "函数",
    "问题",
    "步骤",
    "原因",
    "例子",
    "建议",
    "标题",
    "摘要",
    "清单",
    "方案",
    "表格",
    "报告",
    "答案",
    "公式",
    "程序",
    "小诗",
    "诗",
    "词",
    "歌",
    "对联",
    "口号",
    "广告",
    "说明",
    "规律",
    "作用",
    "用法",
    "区别",
    "意思",
    "含义",
    "事项",
    "信息",
    "名字",
    "笑话",
    "原理",
    "方法",
    "过程",
    "特点",
    "影响",
    "优缺点",
)


def _zh_verb_object(text: str) -> tuple[str, str | None] | None:
    clause = re.sub(r"\s+", "", text)
    for _ in range(2):
        clause = _ZH_FRAME.sub("", _ZH_LEAD.sub("", clause))
    held: str | None = None  # the object a 把/将 phrase moved before the verb
    start = 0
    match = _ZH_PREP.match(clause)
    if match and not any(clause.startswith(v) for v in _ZH_VERBS):
        verb_at = next(
            (
                i
                for i in range(match.end(), min(len(clause), match.end() + 30))
                if any(clause.startswith(v, i) for v in _ZH_VERBS)
            ),
            None,
        )
        if verb_at is None:
            return None
        if match.group() in ("把", "将"):
            held = clause[match.end() : verb_at]
        start = verb_at
    verb = next((v for v in _ZH_VERBS if clause.startswith(v, start)), None)
    if verb is None:
        return None  # a question or a statement (the paper's parse finds no verb root either)
    return verb, _zh_head(held if held is not None else clause[start + len(verb) :])


def _zh_head(phrase: str) -> str | None:
    """The head noun of the object phrase: quantity and demonstrative dropped, the part after the last 的."""
    phrase = _ZH_MEASURE.sub("", phrase, count=1)
    if phrase.startswith(("关于", "有关")) and "的" in phrase:
        phrase = phrase.split("的", 1)[1]
    end = _ZH_END.search(phrase)
    phrase = phrase[: end.start()] if end else phrase
    phrase = _ZH_MEASURE.sub("", phrase.rsplit("的", 1)[-1], count=1)
    if not re.search(f"[{HAN}A-Za-z]", phrase):
        return None
    head = next((h for h in _ZH_HEADS if phrase.endswith(h)), None)
    return head or (phrase if len(phrase) <= 4 else phrase[-2:])
