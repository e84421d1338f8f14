"""Self-KG (HuaTuo-style): instruction data from a knowledge graph, by templates or by an LLM.

Run it:
    datagen self-kg --graph seeds/kg/plants.tsv --num 50 --mode template --out gen/kg/
    datagen self-kg --graph seeds/kg/plants.tsv --labels seeds/kg/labels.zh.tsv --lang zh --num 50 \\
        --mode llm --base-url http://127.0.0.1:8000/v1 --out gen/kg-zh/

1. Load the graph (``graph.py``: TSV/CSV/JSONL triples, GraphML, GML, node-link JSON) and sample it
   (``kg_sampling.py``: entity neighbourhoods, single facts, 2-hop paths, comparisons; least-used first).
2. Turn each sample into a question and an answer:
   - ``template``: render ``prompts/<lang>/self_kg_templates.j2`` (every phrasing that fits the sample) and
     pick one phrasing with a seed derived from the sample, so a re-run writes the same records. No LLM.
   - ``llm``: render ``prompts/<lang>/self_kg_verbalise.j2`` with the facts, ask for
     "Question: …\\nAnswer: …", and parse that tolerantly (markdown, Q:/A:, Chinese 问题：/答案：).
3. Check grounding (both modes; in template mode it guards against label collisions): reject when the
   text refers to "the facts"/"the knowledge graph" (``refers_to_facts``); when a clause about a
   single-valued fact's head names another value of that relation instead of the fact's tail
   (``contradicts_fact``); when it names an entity of the graph that is not among the sample's entities
   (``invented_entity``); when neither question nor answer names what the sample is about (its head or
   centre; a path's ends; both compared entities) (``off_topic``); when the answer names none of the tails
   the question asks for (``omits_answer``). In llm mode an answer that echoes the prompt (the worked
   example, a ``head | relation | tail`` line) is ``copied_prompt``.

Every record carries ``meta.source.triples`` (ids) and ``meta.source.labels`` (id → display label): the
facts its answer rests on. In llm mode each settled sample is appended to ``OUT/.state/verbalise.jsonl``;
a killed run re-reads it, asks only for the rest (answers that arrived but were not logged come back
free from the LLM cache) and writes the same final files. Requests that failed for good are asked again
by the next run. Final files (``records.jsonl``, ``rejects.jsonl``, ``stats.json``) are written atomically.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from datagen.checkpoint import make_reject, write_outputs
from datagen.config import check_fields
from datagen.errors import ConfigError, LLMError
from datagen.generate.graph import DANGLING, all_labels, entity_label, load_graph, relation_label
from datagen.generate.kg_sampling import PATTERNS, FactIndex, KGSampler, Sample
from datagen.llm.client import Completion, LLMClient, LLMConfig, SamplingParams
from datagen.prompts import render, template_ref
from datagen.records import Example
from datagen.step import Step, failed_row, truncated_reject
from datagen.text import CJK, LANGS

STAGE = "self-kg"
MODES = ("template", "llm")
#: Sampling for llm mode when no flag says otherwise: one short question and answer, little randomness.
DEFAULT_SAMPLING = SamplingParams(temperature=0.3, max_tokens=160)

_UNIT = re.compile(rf"[{CJK}]|[^\W_{CJK}]+")  # a matching unit: one CJK character, or a word
_CLAUSE_PATTERN = r"(?<!\d)[.](?!\d)|[;!?。；！？\n]"
_CLAUSE = re.compile(_CLAUSE_PATTERN)


@dataclass(frozen=True)
class SelfKGConfig:
    """Self-KG settings; defaults work on a laptop. ``llm``/``sampling`` are used in llm mode only."""

    graph: Path  # triples (.tsv/.csv/.jsonl) or a graph (.graphml/.gml/.json node-link)
    out: Path  # output folder: records.jsonl, rejects.jsonl, stats.json
    num: int = 100  # samples to draw; fewer when the graph has no new ones left
    mode: str = "template"  # "template" (no LLM) or "llm"
    labels: Path | None = None  # display labels: id<TAB>label rows, or a header id/label_en/label_zh
    lang: str = "en"  # language of the questions and answers: en | zh
    seed: int = 0  # sampling seed; also picks the phrasing in template mode
    patterns: tuple[str, ...] = PATTERNS  # sample patterns, mixed in turn
    max_facts: int = 8  # at most this many facts per sample
    skip_bad_rows: bool = False  # skip and count bad input rows instead of stopping at the first
    keep_self_loops: bool = False  # keep head == tail facts (dropped and counted by default)
    dangling: str = "drop"  # edges to undeclared nodes: drop | add | error
    llm: LLMConfig = field(default_factory=LLMConfig)
    sampling: SamplingParams = DEFAULT_SAMPLING

    def __post_init__(self) -> None:
        object.__setattr__(self, "graph", Path(self.graph))
        object.__setattr__(self, "out", Path(self.out))
        if self.labels is not None:
            object.__setattr__(self, "labels", Path(self.labels))
        if isinstance(self.patterns, str):
            object.__setattr__(self, "patterns", tuple(p.strip() for p in self.patterns.split(",") if p.strip()))
        check_fields(
            self,
            "self_kg.",
            [
                ("num", isinstance(self.num, int) and self.num >= 1, "an integer ≥ 1"),
                ("mode", self.mode in MODES, f"one of {', '.join(MODES)}"),
                ("lang", self.lang in LANGS, f"one of {', '.join(LANGS)}"),
                (
                    "patterns",
                    self.patterns and not set(self.patterns) - set(PATTERNS),
                    f"a non-empty subset of {', '.join(PATTERNS)}",
                ),
                ("max_facts", isinstance(self.max_facts, int) and self.max_facts >= 1, "an integer ≥ 1"),
                ("dangling", self.dangling in DANGLING, f"one of {', '.join(DANGLING)}"),
            ],
        )
        if not self.graph.is_file():
            raise ConfigError(f"self_kg.graph: no such file {self.graph}")
        if self.labels is not None and not self.labels.is_file():
            raise ConfigError(f"self_kg.labels: no such file {self.labels}")

    def public_dict(self) -> dict[str, Any]:
        """The resolved config for stats and manifests (no secrets live here)."""
        out = {
            name: getattr(self, name)
            for name in ("num", "mode", "lang", "seed", "max_facts", "skip_bad_rows", "keep_self_loops", "dangling")
        }
        out.update(
            graph=str(self.graph),
            out=str(self.out),
            labels=str(self.labels) if self.labels else None,
            patterns=list(self.patterns),
        )
        if self.mode == "llm":
            out.update(llm=self.llm.public_dict(), sampling=self.sampling.to_request())
        return out


# ---------------------------------------------------------------------------------------------- labels


def _labeller(G: nx.MultiDiGraph, lang: str):
    return (lambda e: entity_label(G, e, lang)), (lambda r: relation_label(G, r, lang))


def template_context(sample: Sample, G: nx.MultiDiGraph, lang: str) -> dict[str, Any]:
    """The template variables of a sample: its slots with ids replaced by display labels."""
    E, R = _labeller(G, lang)
    s = sample.slots
    if sample.pattern == "fact":
        return {
            "head": E(s["head"]),
            "relation": R(s["relation"]),
            "tails": [E(t) for t in s["tails"]],
            "complete": s["complete"],
        }
    if sample.pattern == "neighbourhood":
        return {
            "entity": E(s["entity"]),
            "complete": s["complete"],
            "groups": [
                {"relation": R(g["relation"]), "tails": [E(t) for t in g["tails"]], "complete": g["complete"]}
                for g in s["groups"]
            ],
        }
    if sample.pattern == "path":
        return {
            "head": E(s["head"]),
            "relation1": R(s["relation1"]),
            "middle": E(s["middle"]),
            "relation2": R(s["relation2"]),
            "tail": E(s["tail"]),
            "single1": s["single1"],
            "single2": s["single2"],
            "composable": s["composable"],
        }
    first, second = s["first_tails"], s["second_tails"]
    return {
        "relation": R(s["relation"]),
        "first": E(s["first"]),
        "second": E(s["second"]),
        "first_tails": [E(t) for t in first],
        "second_tails": [E(t) for t in second],
        "first_complete": s["first_complete"],
        "second_complete": s["second_complete"],
        "shared": [E(t) for t in first if t in second],
        "only_first": [E(t) for t in first if t not in second],
        "only_second": [E(t) for t in second if t not in first],
    }


def _source(sample: Sample, G: nx.MultiDiGraph, cfg: SelfKGConfig) -> dict[str, Any]:
    E, R = _labeller(G, cfg.lang)
    labels = {e: E(e) for e in sorted(sample.entities)}
    labels.update({r: R(r) for r in sorted({r for _, r, _ in sample.triples})})
    return {"graph": cfg.graph.name, "triples": [list(t) for t in sample.triples], "labels": labels}


# ---------------------------------------------------------------------------------------------- template mode


def template_phrasings(sample: Sample, G: nx.MultiDiGraph, lang: str) -> list[tuple[str, str]]:
    """Every (question, answer) phrasing the language's template offers for this sample."""
    text = render(f"{lang}/self_kg_templates", pattern=sample.pattern, **template_context(sample, G, lang))
    # Split on the markers wherever they fall, so the template's whitespace control cannot break phrasings.
    parts = re.split(r"[ \t]*### (question|answer)[ \t]*\n?", text)
    phrasings, question = [], None
    for marker, body in zip(parts[1::2], parts[2::2]):
        if marker == "question":
            question = body.strip()
        elif question:
            phrasings.append((question, body.strip()))
            question = None
    return [(q, a) for q, a in phrasings if q and a]


def verbalise_template(sample: Sample, G: nx.MultiDiGraph, lang: str, seed: int) -> tuple[str, str, int]:
    """One phrasing chosen by a seed derived from the sample: ``(question, answer, variant)``."""
    phrasings = template_phrasings(sample, G, lang)
    if not phrasings:
        raise ConfigError(f"prompts/{lang}/self_kg_templates.j2 offers no phrasing for pattern {sample.pattern!r}")
    variant = random.Random(f"{seed}:{sample.key}").randrange(len(phrasings))
    question, answer = phrasings[variant]
    return question, answer, variant


def _from_templates(
    cfg: SelfKGConfig, G: nx.MultiDiGraph, samples: list[Sample], grounding: Grounding
) -> tuple[list[Example], list[Example]]:
    ref = template_ref(f"{cfg.lang}/self_kg_templates")
    kept, rejects = [], []
    for sample in samples:
        question, answer, variant = verbalise_template(sample, G, cfg.lang, cfg.seed)
        meta = {
            "method": "self-kg",
            "pattern": sample.pattern,
            "source": _source(sample, G, cfg),
            "template": {**ref, "variant": variant},
        }
        record = Example(instruction=question, output=answer, lang=cfg.lang, meta=meta)
        problem = grounding.check(question, answer, sample)
        if problem:
            rejects.append(make_reject(record, STAGE, *problem))
        else:
            kept.append(record)
    return kept, rejects


# ---------------------------------------------------------------------------------------------- llm mode


def build_messages(sample: Sample, G: nx.MultiDiGraph, lang: str) -> list[dict[str, str]]:
    """The chat request for one sample: its facts as ``head | relation | tail`` lines after a worked example.

    The template may lay out a few-shot conversation with lines ``### system``/``### user``/``### assistant``;
    each starts a message (a worked example as its own turns is easier for a small model to tell apart
    from the task than an example inside one message). Without markers the whole text is one user message.
    """
    E, R = _labeller(G, lang)
    facts = [[E(h), R(r), E(t)] for h, r, t in sample.triples]
    topic = sample.topic[:1] if sample.pattern == "path" else sample.topic  # a path question starts at its head
    text = render(
        f"{lang}/self_kg_verbalise",
        pattern=sample.pattern,
        facts=facts,
        topic=[E(e) for e in topic],
        answers=[E(a) for a in sample.answers],
    )
    parts = re.split(r"^### (system|user|assistant)[ \t]*\n", text, flags=re.M)
    if len(parts) == 1:
        return [{"role": "user", "content": text.strip()}]
    return [{"role": role, "content": body.strip()} for role, body in zip(parts[1::2], parts[2::2])]


_NAMES_Q = r"question|q|instruction|问题|问"
_NAMES_A = r"answer|a|response|答案|回答|答"
_LABEL = re.compile(
    rf"^[ \t>*#_\-]*(?:\d+[.)][ \t]*)?(?:\*\*|__)?(?P<name>{_NAMES_Q}|{_NAMES_A})(?:[ \t]*\d+)?"
    rf"(?:\*\*|__)?[ \t]*[:：](?:\*\*|__)?[ \t]*",
    re.I | re.M,
)
_FACTS_LINE = re.compile(r"^[ \t]*(?:example facts|facts|示例事实|事实)[ \t]*[:：]", re.I | re.M)


def parse_qa(text: str) -> tuple[str, str, bool] | None:
    """``(question, answer, complete)`` from "Question: …\\nAnswer: …" (tolerantly), or None.

    ``complete`` means another labelled line followed the answer, so the answer was not cut off even if
    the completion as a whole was. Without a "Question:" label, the text before "Answer:" is the question.

    >>> parse_qa("**Question:** What is X?\\n**Answer:** Y.")
    ('What is X?', 'Y.', False)
    """
    labels = list(_LABEL.finditer(text))
    is_q = [re.fullmatch(_NAMES_Q, m.group("name"), re.I) is not None for m in labels]
    q = next((m for m, question in zip(labels, is_q) if question), None)
    a = next((m for m, question in zip(labels, is_q) if not question and (q is None or m.start() > q.start())), None)
    if a is None:
        return None
    after = next((m for m in labels if m.start() > a.start()), None)
    question = text[q.end() : a.start()] if q is not None else text[: a.start()]
    answer = text[a.end() : after.start() if after is not None else len(text)]
    cut = _FACTS_LINE.search(answer)
    if cut:
        answer, after = answer[: cut.start()], after or cut
    question, answer = _tidy(question), _tidy(answer)
    if not question or not answer:
        return None
    return question, answer, after is not None


_FACT_LINE = re.compile(r"[^|\n]+\|[^|\n]+\|[^|\n]+")
_PHRASE_BREAK = re.compile(r"[:：]|" + _CLAUSE_PATTERN)


def copied_from_prompt(question: str, answer: str, messages: list[dict[str, str]]) -> tuple[str, Any] | None:
    """``("copied_prompt", detail)`` when the model echoed its prompt instead of answering.

    Echoes are a ``head | relation | tail`` line, or any phrase of three or more words (CJK characters)
    from the prompt's own lines (the worked example, the "ask about X" hint), facts lines excepted.
    """
    phrases = set()
    for message in messages:
        for line in message["content"].splitlines():
            if line.lstrip().startswith("- "):
                continue
            for phrase in _PHRASE_BREAK.split(line):
                units = _units(phrase)
                if len(units) >= 3:
                    phrases.add(" " + " ".join(units) + " ")
    for field_name, text in (("instruction", question), ("output", answer)):
        if fact := _FACT_LINE.search(text):
            return "copied_prompt", {"field": field_name, "phrase": fact.group().strip()}
        flat = " " + " ".join(_units(text)) + " "
        hit = next((p for p in phrases if p in flat), None)
        if hit:
            return "copied_prompt", {"field": field_name, "phrase": hit.strip()}
    return None


def _echoes_question(question: str, answer: str) -> tuple[str, Any] | None:
    """``("echoes_question", ...)`` when the answer only repeats (part of) the question."""
    q, a = " ".join(_units(question)), " ".join(_units(answer))
    return ("echoes_question", {"answer": answer[:200]}) if a and (a == q or f" {a} " in f" {q} ") else None


def _tidy(text: str) -> str:
    text = text.strip().strip("*_").strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


async def _from_llm(
    cfg: SelfKGConfig, G: nx.MultiDiGraph, samples: list[Sample], grounding: Grounding
) -> tuple[list[Example], list[Example], dict[str, Any]]:
    prompt = template_ref(f"{cfg.lang}/self_kg_verbalise")
    keyed = [(f"{i}:{s.key}", s) for i, s in enumerate(samples)]
    with Step(cfg.out, "verbalise") as log:
        async with LLMClient(cfg.llm) as llm:
            resumed = await log.answer(
                keyed,
                key=lambda item: item[0],
                ask=lambda item: llm.chat(build_messages(item[1], G, cfg.lang), cfg.sampling),
                row=lambda item, result: _record_row(*item, result, G, cfg, grounding, prompt),
                limit=cfg.llm.gather_limit,
                desc="self-kg",
            )
            ledger = llm.ledger.as_dict()
    kept, rejects = log.split_records(key for key, _ in keyed)
    return kept, rejects, {"llm": ledger, "resumed_from": resumed}


def _record_row(
    key: str,
    sample: Sample,
    result: Completion | LLMError,
    G: nx.MultiDiGraph,
    cfg: SelfKGConfig,
    grounding: Grounding,
    prompt: dict[str, str],
) -> dict[str, Any]:
    """The state row for one finished request: the record, plus a reject when it failed a check."""
    meta: dict[str, Any] = {
        "method": "self-kg",
        "pattern": sample.pattern,
        "source": _source(sample, G, cfg),
        "prompt": prompt,
    }
    if isinstance(result, LLMError):
        return failed_row(key, Example(instruction="", output="", lang=cfg.lang, meta=meta), STAGE, result)
    meta.update(model=result.model, usage=result.usage)
    parsed = parse_qa(result.text)
    if parsed is None:
        record = Example(instruction="", output=result.text, lang=cfg.lang, meta=meta)
        return {
            "key": key,
            "record": record.to_dict(),
            "reject": {"stage": STAGE, "reason": "unparseable", "detail": result.text[:500]},
        }
    question, answer, complete = parsed
    # Of the answer kept: a complete question/answer pair ended before the cut even when the reply ran on.
    meta["finish_reason"] = "stop" if result.truncated and complete else result.finish_reason
    record = Example(instruction=question, output=answer, lang=cfg.lang, meta=meta)
    row: dict[str, Any] = {"key": key, "record": record.to_dict()}
    if result.truncated and not complete:
        row["reject"] = truncated_reject(STAGE, result)
        return row
    problem = (
        _echoes_question(question, answer)
        or copied_from_prompt(question, answer, build_messages(sample, G, cfg.lang))
        or grounding.check(question, answer, sample)
    )
    if problem:
        row["reject"] = {"stage": STAGE, "reason": problem[0], "detail": problem[1]}
    return row


# ---------------------------------------------------------------------------------------------- grounding

_META_REFERENCE = {
    "en": re.compile(
        r"\b(?:the|these|those|given|provided|above|listed)\s+(?:facts?|triples?)\b"
        r"|\bknowledge\s+graph\b|\btriples?\b",
        re.I,
    ),
    "zh": re.compile(r"(?:根据|以上|上述|给定的?|所给的?|这些)(?:事实|三元组)|知识图谱|三元组"),
}
_MAX_NAME_UNITS = 16


def _units(text: str) -> tuple[str, ...]:
    """Matching units: each CJK character, each run of other letters/digits; casefolded, plural -s folded."""
    out = []
    for unit in _UNIT.findall(text.casefold()):
        if len(unit) > 3 and unit.endswith("s") and not unit.endswith("ss"):
            unit = unit[:-1]  # crude, but applied to names and text alike: "headaches" meets "headache"
        out.append(unit)
    return tuple(out)


def _mentionable(units: tuple[str, ...]) -> bool:
    """Whether a name is specific enough to look for: not empty, too long, a number, or one short word."""
    if not units or len(units) > _MAX_NAME_UNITS:
        return False
    if len(units) == 1:  # one short word or one CJK character is too often an ordinary word
        return len(units[0]) >= 3 and not units[0].isdigit()
    return not all(u.isdigit() for u in units)


@dataclass(frozen=True)
class _Mention:
    phrase: str
    entities: frozenset[str]
    relations: frozenset[str] = frozenset()


class Grounding:
    """Finds which graph entities a text names, and checks a question/answer against its sample.

    Names are matched longest-first over units (words; single CJK characters), so "damask rose" is one
    mention, not a mention of "rose". The sample's own entity and relation names win over the graph's, so
    a label two entities share counts as the sample's.
    """

    def __init__(self, G: nx.MultiDiGraph, index: FactIndex):
        self.G = G
        self.index = index
        names: dict[tuple[str, ...], set[str]] = {}
        for node in G.nodes:
            for name in all_labels(G, node):
                units = _units(name)
                if _mentionable(units):
                    names.setdefault(units, set()).add(node)
        self.names = {k: frozenset(v) for k, v in names.items()}
        self.longest = max((len(k) for k in names), default=1)

    def _local(self, sample: Sample) -> dict[tuple[str, ...], _Mention]:
        local: dict[tuple[str, ...], _Mention] = {}
        for relation in {r for _, r, _ in sample.triples}:
            for name in all_labels(self.G, relation, relation=True):
                units = _units(name)
                if units:
                    local[units] = _Mention(name, frozenset(), frozenset({relation}))
        for entity in sample.entities:
            for name in all_labels(self.G, entity):
                units = _units(name)
                if units:
                    known = local.get(units, _Mention(name, frozenset()))
                    local[units] = _Mention(name, known.entities | {entity}, known.relations)
        return local

    def mentions(self, text: str, local: dict[tuple[str, ...], _Mention] | None = None) -> list[_Mention]:
        """The names in ``text``, longest match first, left to right."""
        local = local or {}
        units = _units(text)
        longest = max(self.longest, max((len(k) for k in local), default=1))
        found, i = [], 0
        while i < len(units):
            for n in range(min(longest, len(units) - i), 0, -1):
                key = units[i : i + n]
                hit = local.get(key)
                if hit is None and key in self.names:
                    hit = _Mention(" ".join(key), self.names[key])
                if hit is not None:
                    found.append(hit)
                    i += n
                    break
            else:
                i += 1
        return found

    def check(self, question: str, answer: str, sample: Sample) -> tuple[str, Any] | None:
        """``(reason, detail)`` when the pair is not supported by the sample's triples, else None.

        Meta references of both languages are looked for, since a Chinese answer may slip into English.
        """
        for field_name, text in (("instruction", question), ("output", answer)):
            for pattern in _META_REFERENCE.values():
                match = pattern.search(text)
                if match:
                    return "refers_to_facts", {"field": field_name, "phrase": match.group()}
        local = self._local(sample)
        single = [t for t in sample.triples if t[1] in self.index.single_valued]
        for clause in _CLAUSE.split(answer):
            found = self.mentions(clause, local)
            named = frozenset().union(*(m.entities for m in found))
            relations = frozenset().union(*(m.relations for m in found))
            for head, relation, tail in single:
                if head not in named or tail in named:
                    continue
                if sample.pattern != "fact" and relation not in relations:
                    continue  # the clause may be about another relation of the same head
                wrong = (named & self.index.range_of(relation)) - {head, tail}
                if wrong:
                    return "contradicts_fact", {
                        "fact": [head, relation, tail],
                        "stated": sorted(wrong),
                        "clause": clause.strip(),
                    }
        outside: dict[str, list[str]] = {}
        for text in (question, answer):
            for m in self.mentions(text, local):
                if m.entities and not m.entities & sample.entities:
                    outside.setdefault(m.phrase, sorted(m.entities))
        if outside:
            return "invented_entity", {"mentions": outside}
        named = frozenset().union(*(m.entities for m in self.mentions(answer, local)))
        asked = frozenset().union(*(m.entities for m in self.mentions(question, local)))
        topic = set(sample.topic)
        if not (topic <= named | asked if sample.pattern == "comparison" else topic & (named | asked)):
            return "off_topic", {"topic": list(sample.topic)}
        if not named & set(sample.answers):
            return "omits_answer", {"expected": list(sample.answers)}
        return None


# ---------------------------------------------------------------------------------------------- the stage


def _coverage_of(records: list[Example], index: FactIndex) -> dict[str, float]:
    """Share of entities and relations the kept records rest on (rejects lower it in llm mode)."""
    entities, relations = set(), set()
    for record in records:
        for head, relation, tail in record.meta["source"]["triples"]:
            entities.update(e for e in (head, tail) if e not in index.literal)
            relations.add(relation)
    return {
        "entities": round(len(entities) / len(index.entities), 4) if index.entities else 0.0,
        "relations": round(len(relations) / len(index.heads), 4) if index.heads else 0.0,
    }


async def generate(cfg: SelfKGConfig) -> dict[str, Any]:
    """Sample the graph, write question/answer records; returns the stats also written to ``OUT/stats.json``."""
    started = time.monotonic()
    G = load_graph(
        cfg.graph,
        cfg.labels,
        skip_bad_rows=cfg.skip_bad_rows,
        keep_self_loops=cfg.keep_self_loops,
        dangling=cfg.dangling,
    )  # validates the whole input before anything is written
    index = FactIndex(G)
    sampler = KGSampler(G, seed=cfg.seed, max_facts=cfg.max_facts, index=index)
    samples = sampler.sample(cfg.num, cfg.patterns)
    if not samples:
        raise ConfigError(
            f"self_kg.patterns: the graph {cfg.graph} has nothing to sample for "
            f"{', '.join(cfg.patterns)}; try more patterns"
        )
    grounding = Grounding(G, index)
    extra: dict[str, Any] = {}
    if cfg.mode == "template":
        kept, rejects = _from_templates(cfg, G, samples, grounding)
    else:
        kept, rejects, extra = await _from_llm(cfg, G, samples, grounding)
    stats = {
        "stage": STAGE,
        "mode": cfg.mode,
        "lang": cfg.lang,
        "requested": cfg.num,
        "sampled": len(samples),
        "graph": G.graph["stats"],
        "coverage": sampler.coverage(),
        "kept_coverage": _coverage_of(kept, index),
        **extra,
        "config": cfg.public_dict(),
        "seconds": round(time.monotonic() - started, 3),
    }
    return write_outputs(cfg.out, kept, rejects, stats)
