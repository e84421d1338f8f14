"""Is a task classification (finite output labels)? One decision for Self-Instruct and ``datagen classify``.

Run it:  datagen classify tasks.jsonl --out tasks.classified.jsonl --base-url embedded

Self-Instruct routes a classification task to *output-first* instances (labels first, then an input for
each) and the rest to *input-first*; a wrong route makes a small model answer "Write a story…" with a
class label. Asked of SmolLM2-135M alone, the paper's few-shot question agreed with a human about half the
time. So the decision combines three votes, each kept as evidence:

- **cue**: lexical cues, English and Chinese. Classification cues ("classify", "true or false", "which of
  the following", "choose from", "is this … or …?", options listed as "X, Y, or Z"; 判断、是否、属于、分类、
  还是、从…中选择) against open-task verbs (write, explain, list, translate…; 写、解释、列出、翻译…).
  Whichever comes *first* in the instruction wins, so "Write a Python function that checks whether…" and
  "编写一个函数，判断…" are open, "Classify … and explain why" is classification.
- **neighbour**: a similarity-weighted vote of the k nearest labelled seeds (``seeds/seed_tasks*.jsonl``
  carry ``is_classification``). English is compared with the shipped MiniLM encoder; MiniLM reads most
  Chinese characters as ``[UNK]`` (distinct Chinese tasks score ~0.99), so Chinese is compared by the cosine
  of character 1–2-gram TF-IDF vectors. Neighbours come from the task's own language only.
- **model**: the LLM's Yes/No answer to ``prompts/<lang>/self_instruct_classify.j2`` (optional).

The model is weak (SmolLM2-135M), so it only breaks ties: cue and neighbours decide, and the model is heard
where they abstain or cancel out (see ``combine``).

    >>> cue_vote("Classify the animal as mammal, bird or fish.")
    (True, 'classify')
    >>> cue_vote("Write a short story about a robot.")
    (False, 'write')
    >>> cue_vote("判断这条评论的情感是正面还是负面。")
    (True, '判断')
    >>> combine(cue=True, neighbour=0.2, model=None), combine(cue=None, neighbour=0.5, model=True)
    (True, True)
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.errors import ConfigError
from datagen.formats import read_any, read_seed_tasks
from datagen.records import Example, write_json, write_jsonl
from datagen.text import detect_lang

STAGE = "classify"

#: The labelled seeds shipped with the project: the default neighbours.
DEFAULT_NEIGHBOURS = (
    Path(__file__).resolve().parent.parent.parent / "seeds" / "seed_tasks.jsonl",
    Path(__file__).resolve().parent.parent.parent / "seeds" / "seed_tasks.zh.jsonl",
)

# ---------------------------------------------------------------------------------------------- cues

_OPTION = r"[\w/'’\-+^() ]{1,30}"
#: Cues that a task has a finite set of answers. English ones match case-insensitively on word boundaries.
CLASSIFICATION_CUES = {
    "en": (
        ("classify", r"\bclassif(?:y|ied|ies|ication)\b"),
        ("categorize", r"\bcategori[sz]e\b|\bcategor(?:y|ies)\b"),
        ("label", r"\blabel (?:the|this|each|it|them|every)\b|\blabel\b[^.?]*\bas\b"),
        ("true or false", r"\btrue or false\b|\btrue, false\b"),
        ("yes or no", r"\banswer (?:with )?(?:yes|\"yes\") or (?:no|\"no\")\b|\byes/no\b"),
        ("which of", r"\bwhich (?:one )?of (?:these|the following|the two|the three|them|those)\b"),
        ("choose from", r"\b(?:choose|pick|select)\b[^.?]*\b(?:from|among|between|one of)\b|\boptions?:"),
        ("belongs to", r"\bbelongs? to\b|\b(?:to|into|as) one of\b"),
        (
            "whether",
            r"\b(?:tell|decide|determine|judge|detect|predict|say|state|indicate|identify|check|know)"
            r"\b(?: me)? (?:if|whether)\b",
        ),
        ("is this … or …", r"^(?:is|are|was|does|do|did|can|could|would|will|should|has|have)\b[^?.]*\bor\b"),
        ("X or not X", r"\bor not\b|\bor non-\w+|\bor un\w+\b"),
        (
            "sentiment",
            r"\b(?:sentiment|sarcas\w+|spam|clickbait|toxic\w*|offensive|hate speech|fake news|"
            r"positive,? (?:or )?negative|fact or opinion|entailment)\b",
        ),
        (
            "option list",
            rf"(?::|\bas|\binto|\bfrom|\bis it|\bbe)\s+{_OPTION}(?:,\s*{_OPTION})+,?\s+or\s+{_OPTION}[.?]?\s*$",
        ),
    ),
    "zh": (
        ("判断", r"判断|判定|鉴别"),
        ("是否", r"是否"),
        ("属于", r"属于|归入|归为|归类|归到"),
        ("分类", r"分类|类别|哪一类|哪类|哪个类|哪种类型|标签"),
        ("还是", r"还是"),
        ("选择", r"(?:选择|选出|挑选|选一个|选项)"),
        ("正确/错误", r"正确或错误|对还是错|真假|是或否|正面|负面|褒义|贬义"),
    ),
}
#: Verbs that open an open-ended task (writing, explaining, listing, transforming, computing).
OPEN_TASK_CUES = {
    "en": r"\b(write|compose|create|generate|draft|design|invent|plan|outline|explain|describe|summari[sz]e|"
    r"translate|rewrite|rephrase|paraphrase|list|suggest|recommend|brainstorm|implement|teach|make|"
    r"produce|prepare|propose|offer|expand|convert|calculate|compute|solve|extract|correct|fix|define|"
    r"compare|continue|edit|improve|tell me (?:about|why|how|a)|how (?:do|does|can|to|many|much|would|"
    r"should)|why|what are some|give (?:me )?(?:a|an|some|\d+|examples?|one|two|three|five|ten)|"
    r"find (?:the|all|out)|come up with|put together|sketch|develop|build|name (?:\d+|a few|some|"
    r"three|five|ten))\b",
    "zh": r"(写|编写|创作|生成|撰写|起草|设计|解释|描述|说明|介绍|总结|概括|翻译|改写|扩写|缩写|润色|列出|列举|"
    r"推荐|建议|制定|规划|安排|计算|求|解答|比较|分析|提取|抽取|找出|整理|拟|起名|起.个名|教我|为什么|如何|"
    r"怎样|怎么|讲一讲|谈谈)",
}
_COMPILED = {
    lang: [(name, re.compile(pattern, re.I | re.M)) for name, pattern in cues]
    for lang, cues in CLASSIFICATION_CUES.items()
}
_OPEN = {lang: re.compile(pattern, re.I) for lang, pattern in OPEN_TASK_CUES.items()}


def cue_vote(instruction: str, lang: str | None = None) -> tuple[bool | None, str | None]:
    """``(vote, cue)``: True for a classification cue, False for an open-task verb, None for neither.

    When both occur, the one earlier in the instruction wins: the main verb comes first.
    """
    lang = lang or detect_lang(instruction)
    text = instruction.strip()
    # The earliest classification cue (on a tie, the one listed first).
    first_clf = min(
        (
            (match.start(), name)
            for name, pattern in _COMPILED.get(lang, _COMPILED["en"])
            if (match := pattern.search(text))
        ),
        key=lambda found: found[0],
        default=None,
    )
    match = _OPEN.get(lang, _OPEN["en"]).search(text)
    first_open = (match.start(), match.group(1).lower()) if match else None
    if first_clf and (first_open is None or first_clf[0] <= first_open[0]):
        return True, first_clf[1]
    if first_open:
        return False, first_open[1]
    return None, None


_LABEL_LIST = {
    "en": re.compile(
        rf"(?:[:：]|\bas|\binto|\bfrom|\bis it|\bbe|\bbetween|\beither|\banswer(?: with)?)\s+"
        rf"({_OPTION}(?:,\s*{_OPTION})*,?\s+or\s+{_OPTION})[.?]?\s*$",
        re.I,
    ),
    "zh": re.compile(
        r"(?:[:：]|(?<!是)是(?!否)|为|从|回答)\s*([^：:，,。？?]{1,12}(?:(?:、|或者?|还是)[^：:，,。？?]{1,12})+)"
        r"[。？?]?\s*$"
    ),
}


def class_labels(instruction: str, lang: str | None = None) -> list[str]:
    """The class labels an instruction names at its end ("… as positive, negative, or neutral."), or [].

    Self-Instruct's output-first prompt starts the answer with the first of them, so a small model writes
    inputs for the task's own labels instead of copying an in-context example's.

    >>> class_labels("Classify the review as positive, negative, or neutral.")
    ['positive', 'negative', 'neutral']
    >>> class_labels("判断这条评论的情感：正面、负面或中性。")
    ['正面', '负面', '中性']
    >>> class_labels("Write a story about a cat.")
    []
    """
    lang = lang or detect_lang(instruction)
    text = instruction.strip()
    if lang == "zh":  # "从“正面、负面、中性”中选择一个": the list ends before the trailing phrase
        text = re.sub(r"[”」]?\s*(?:中|里)?(?:选择|选出|选)(?:一个|一项)?[。？?]?$|之一[。？?]?$", "", text)
    match = _LABEL_LIST[lang].search(text)
    if not match:
        return []
    splitter = r",\s*(?:or\s+)?|\s+or\s+" if lang == "en" else r"、|或者?|还是"
    labels = [part.strip(" \"'“”‘’「」.。") for part in re.split(splitter, match.group(1))]
    labels = [re.sub(r"^(?:an?|the)\s+", "", label, flags=re.I) if lang == "en" else label for label in labels]
    return [label for label in dict.fromkeys(labels) if label] if len([x for x in labels if x]) >= 2 else []


# ---------------------------------------------------------------------------------------------- neighbours


def _char_ngrams(text: str) -> Counter[str]:
    chars = [c for c in text if c.isalnum()]
    grams = Counter(chars)
    grams.update(a + b for a, b in zip(chars, chars[1:]))
    return grams


class _CharIndex:
    """TF-IDF cosine over character 1–2-grams: the similarity for Chinese, which MiniLM cannot read."""

    def __init__(self, texts: Sequence[str]):
        self.grams = [_char_ngrams(t) for t in texts]
        df = Counter(g for grams in self.grams for g in grams)
        self.idf = {g: math.log((1 + len(texts)) / (1 + n)) + 1 for g, n in df.items()}
        self.vectors = [self._vector(grams) for grams in self.grams]

    def _vector(self, grams: Counter[str]) -> dict[str, float]:
        vec = {g: (1 + math.log(n)) * self.idf.get(g, math.log(1 + len(self.grams)) + 1) for g, n in grams.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {g: v / norm for g, v in vec.items()}

    def similarities(self, text: str) -> np.ndarray:
        query = self._vector(_char_ngrams(text))
        return np.array([sum(w * vec.get(g, 0.0) for g, w in query.items()) for vec in self.vectors], np.float32)


class NeighbourIndex:
    """The labelled tasks, per language, and a k-nearest-neighbour vote over them.

    ``vote`` skips neighbours whose instruction equals the query, so classifying a seed against the seeds
    is leave-one-out by construction.
    """

    def __init__(self, labelled: Iterable[tuple[str, bool]], k: int = 7, encoder: str | None = None):
        if k < 1:
            raise ConfigError(f"classify.k must be ≥ 1, got {k}")
        self.k, self.encoder = k, encoder
        by_lang: dict[str, dict[str, bool]] = {"en": {}, "zh": {}}
        for text, label in labelled:
            by_lang[detect_lang(text)].setdefault(text.strip(), bool(label))
        self.texts = {lang: list(items) for lang, items in by_lang.items()}
        self.labels = {lang: np.array(list(items.values()), bool) for lang, items in by_lang.items()}
        self._vectors: np.ndarray | None = None
        self._chars = _CharIndex(self.texts["zh"])

    def __len__(self) -> int:
        return sum(len(t) for t in self.texts.values())

    def _similarities(self, texts: list[str], lang: str) -> np.ndarray:
        if lang == "zh":
            return np.stack([self._chars.similarities(t) for t in texts]) if texts else np.zeros((0, 0))
        from datagen.embed import encode

        if self._vectors is None:
            self._vectors = encode(self.texts["en"], self.encoder)
        return encode(texts, self.encoder) @ self._vectors.T

    def votes(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Per text: ``{"score": share of classification among the neighbours (similarity-weighted) or None,
        "neighbours": [[text, label, similarity], ...]}``."""
        out: list[dict[str, Any]] = [{"score": None, "neighbours": []} for _ in texts]
        for lang in ("en", "zh"):
            idx = [i for i, t in enumerate(texts) if detect_lang(t) == lang]
            if not idx or not self.texts[lang]:
                continue
            sims = self._similarities([texts[i].strip() for i in idx], lang)
            for row, i in zip(sims, idx):
                order = [j for j in np.argsort(-row) if self.texts[lang][j] != texts[i].strip()][: self.k]
                weights = np.clip(row[order], 1e-6, None)
                labels = self.labels[lang][order]
                out[i] = {
                    "score": round(float(weights[labels].sum() / weights.sum()), 4),
                    "neighbours": [
                        [self.texts[lang][j], bool(self.labels[lang][j]), round(float(row[j]), 4)] for j in order
                    ],
                }
        return out


def labelled_tasks(paths: Iterable[str | Path]) -> list[tuple[str, bool]]:
    """``(instruction, is_classification)`` of every seed task in ``paths`` that carries the label."""
    return [
        (t["instruction"], t["is_classification"])
        for path in paths
        for t in read_seed_tasks(path)
        if isinstance(t.get("is_classification"), bool)
    ]


# ---------------------------------------------------------------------------------------------- decision

#: Vote weights. Measured on the seeds (leave-one-out) and on tests/fixtures/classify: cues are right
#: ~95% of the time they speak, neighbours ~85%, SmolLM2-135M's few-shot answer ~55%.
CUE_WEIGHT, NEIGHBOUR_WEIGHT, MODEL_WEIGHT = 1.0, 0.9, 0.25
#: The neighbour score at which the neighbour vote is neutral. Classification tasks are a minority of the
#: seeds (47 of 217), so a similarity-weighted share leans towards "open"; this centres it.
NEIGHBOUR_CENTRE = 0.35


def combine(cue: bool | None, neighbour: float | None, model: bool | None) -> bool:
    """The decision from the three votes: a weighted sum in which the weak model only breaks ties."""
    score = 0.0
    if cue is not None:
        score += CUE_WEIGHT if cue else -CUE_WEIGHT
    if neighbour is not None:
        centred = (neighbour - NEIGHBOUR_CENTRE) / (
            1 - NEIGHBOUR_CENTRE if neighbour >= NEIGHBOUR_CENTRE else NEIGHBOUR_CENTRE
        )
        score += NEIGHBOUR_WEIGHT * centred
    if model is not None:
        score += MODEL_WEIGHT if model else -MODEL_WEIGHT
    return score > 0


@dataclass(frozen=True)
class Decision:
    """One task's decision and the evidence for it (written to ``meta.classify``)."""

    is_classification: bool
    cue: bool | None
    cue_match: str | None
    neighbour: float | None
    neighbours: list[list[Any]] = field(default_factory=list)
    model: bool | None = None

    def evidence(self, top: int = 3) -> dict[str, Any]:
        return {
            "cue": {"vote": self.cue, "match": self.cue_match},
            "neighbour": {
                "vote": None if self.neighbour is None else self.neighbour >= NEIGHBOUR_CENTRE,
                "score": self.neighbour,
                "nearest": self.neighbours[:top],
            },
            "model": {"vote": self.model},
        }


def decide(
    texts: Sequence[str],
    index: NeighbourIndex | None,
    model_votes: Sequence[bool | None] | None = None,
    lang: str | None = None,
) -> list[Decision]:
    """Decisions for ``texts``; ``model_votes`` (parsed Yes/No answers, None = no answer) are optional."""
    model_votes = list(model_votes) if model_votes is not None else [None] * len(texts)
    votes = (
        index.votes(texts) if index is not None and len(index) else [{"score": None, "neighbours": []}] * len(texts)
    )
    decisions = []
    for text, vote, model in zip(texts, votes, model_votes):
        cue, match = cue_vote(text, lang)
        decisions.append(
            Decision(combine(cue, vote["score"], model), cue, match, vote["score"], vote["neighbours"], model)
        )
    return decisions


def agreement(labels: Sequence[bool], predicted: Sequence[bool | None]) -> dict[str, Any]:
    """Accuracy, and precision/recall on the classification class, of ``predicted`` against ``labels``.

    >>> agreement([True, True, False, False], [True, False, False, None])["accuracy"]
    0.5
    """
    pairs = list(zip(labels, predicted))
    tp = sum(1 for y, p in pairs if y and p is True)
    fp = sum(1 for y, p in pairs if not y and p is True)
    fn = sum(1 for y, p in pairs if y and p is not True)
    agree = sum(1 for y, p in pairs if p is not None and y == p)
    return {
        "evaluated": len(pairs),
        "agree": agree,
        "accuracy": round(agree / len(pairs), 4) if pairs else None,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "unanswered": sum(1 for _, p in pairs if p is None),
        "confusion": {f"label={y}/predicted={p}": n for (y, p), n in sorted(Counter(pairs).items(), key=str)},
    }


# ---------------------------------------------------------------------------------------------- the command


@dataclass(frozen=True)
class ClassifyConfig:
    """``datagen classify``: decide ``is_classification`` for every record of a file."""

    inputs: Path  # records in any supported format
    out: Path  # output JSONL
    neighbours: tuple[Path, ...] = DEFAULT_NEIGHBOURS  # labelled seed-format files: the kNN vote's neighbours
    k: int = 7  # neighbours per vote
    model_vote: bool = True  # ask the LLM too (the Self-Instruct few-shot prompt)
    style: str = "completion"  # completion | chat, as in Self-Instruct
    llm: Any = None  # LLMConfig, when model_vote

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"classify.k must be ≥ 1, got {self.k}")
        if self.style not in ("completion", "chat"):
            raise ConfigError(f"classify.style must be completion or chat, got {self.style!r}")


async def ask_model(
    llm: Any, texts: Sequence[str], style: str, lang: str | None = None, params: Any = None
) -> list[bool | None]:
    """The model's Yes/No per text (None where it failed or answered neither), asked concurrently."""
    from datagen.errors import CircuitOpen, LLMError
    from datagen.generate.parsing import parse_yes_no
    from datagen.llm.client import SamplingParams, map_bounded
    from datagen.prompts import render
    from datagen.step import as_request, ask

    params = params or SamplingParams(temperature=0.0, top_p=1.0, max_tokens=3, stop=("\n", "Task", "任务"))

    async def one(i: int) -> Any:
        prompt = render(f"{lang or detect_lang(texts[i])}/self_instruct_classify", instruction=texts[i])
        return await ask(llm, *as_request(style, prompt), params)

    votes: list[bool | None] = [None] * len(texts)
    async for i, answer in map_bounded(one, range(len(texts)), limit=max(1, llm.cfg.concurrency) * 2):
        if isinstance(answer, BaseException) and (isinstance(answer, CircuitOpen) or not isinstance(answer, LLMError)):
            raise answer  # a dead endpoint (CircuitOpen) or a bug stops the run; a failed request is no vote
        votes[i] = None if isinstance(answer, BaseException) else parse_yes_no(answer.text)
    return votes


def _task_text(example: Example) -> str:
    """The task to classify: the instruction, else a conversation's first user turn."""
    return example.instruction or next((m["content"] for m in example.messages or [] if m["role"] == "user"), "")


async def classify_file(cfg: ClassifyConfig) -> dict[str, Any]:
    """Classify every record of ``cfg.inputs``; writes ``cfg.out`` and ``<out>.stats.json``, returns the stats.

    Records that already carry ``is_classification`` keep it as ``meta.classify.label`` and count towards
    the agreement; the written ``is_classification`` is always this decision.
    """
    started = time.monotonic()
    examples = read_any(cfg.inputs)  # validates the whole input before anything is written
    if not examples:
        raise ConfigError(f"{cfg.inputs}: no records to classify")
    index = NeighbourIndex(labelled_tasks(cfg.neighbours), k=cfg.k)
    texts = [_task_text(e) for e in examples]
    models: list[bool | None] = [None] * len(texts)
    ledger = None
    if cfg.model_vote:
        from datagen.llm.client import LLMClient

        async with LLMClient(cfg.llm) as llm:
            models = await ask_model(llm, texts, cfg.style)
            ledger = llm.ledger.as_dict()
    decisions = decide(texts, index, models)
    out = []
    for example, decision in zip(examples, decisions):
        meta = {**example.meta, "classify": decision.evidence()}
        if example.is_classification is not None:
            meta["classify"]["label"] = example.is_classification
        out.append(dataclasses.replace(example, is_classification=decision.is_classification, meta=meta))
    write_jsonl(cfg.out, out)
    labelled = [
        (e.is_classification, d.is_classification)
        for e, d in zip(examples, decisions)
        if e.is_classification is not None
    ]
    stats = {
        "stage": STAGE,
        "records": len(out),
        "classification": sum(d.is_classification for d in decisions),
        "agreement": agreement(*zip(*labelled)) if labelled else None,
        "model_agreement": agreement(
            [y for y, _ in labelled], [m for e, m in zip(examples, models) if e.is_classification is not None]
        )
        if labelled and cfg.model_vote
        else None,
        "neighbours": len(index),
        "llm": ledger,
        "seconds": round(time.monotonic() - started, 3),
    }
    write_json(Path(f"{cfg.out}.stats.json"), stats)
    return stats
