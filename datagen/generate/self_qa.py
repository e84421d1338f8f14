"""Self-QA (Zhang et al. 2023): instruction data from unstructured documents.

Run it:  datagen self-qa --docs seeds/docs --out gen/qa --base-url embedded \\
             --max-chunks 18 --temperature 0.3 --max-tokens 160      # ~16 records in ~10 min on 2 CPU cores

1. Documents are loaded and cut into overlapping chunks (``documents.py``).
2. Questions: for each chunk the model writes N questions that stand alone, without the document
   (``prompts/<lang>/self_qa_questions.j2``); a tolerant parser takes the numbered or bulleted items out of
   whatever else the model says.
3. Answers: each question is answered with its chunk as context (``self_qa_answer.j2``).
4. Post-filters drop, each with a named reason, questions and answers that refer to "the text" (English and
   Chinese phrasings), refusals and "cannot be determined" answers, answers with too little lexical support
   in the chunk (``meta.filter.support``) or with names and numbers the chunk never mentions, empty or
   malformed outputs and truncated answers.

Each kept record points back to its source: ``meta.source = {doc_id, span: [start, end), chunk_hash}``, so
``document.text[start:end]`` is the chunk the answer was grounded in. Lines in a document that look like
prompt injection ("ignore previous instructions", 忽略以上指令) are flagged in ``meta.flags``; document text is
only ever a template *variable*, never template source, so ``{{ 7*7 }}`` in a document stays literal.

Both LLM steps log settled work in ``OUT/.state/{questions,answers}.jsonl`` (``Step``): a killed run
re-run with the same arguments skips what is settled, and answers that arrived but were not logged come back
free from the LLM cache. Final files (``records.jsonl``, ``rejects.jsonl``, ``stats.json``) are written
atomically once everything is settled.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from datagen.checkpoint import make_reject, write_outputs
from datagen.config import check_fields
from datagen.errors import ConfigError
from datagen.generate.documents import Chunk, Document, chunk_document, load_documents
from datagen.llm.client import LLMClient, LLMConfig, SamplingParams
from datagen.prompts import render, template_ref
from datagen.records import Example, make_dirs
from datagen.step import Step, answer_row
from datagen.text import INJECTION, LANGS, content_words, count_units, detect_lang
from datagen.text import find_refusal as is_refusal

STAGE = "self-qa"
QUESTIONS_TEMPLATE = "{lang}/self_qa_questions"
ANSWER_TEMPLATE = "{lang}/self_qa_answer"


@dataclass(frozen=True)
class SelfQAConfig:
    """Everything ``datagen self-qa`` needs; defaults suit the embedded model on a laptop."""

    docs: str | Path  # a folder (walked recursively), a file, or a glob
    out: Path  # output folder: records.jsonl, rejects.jsonl, stats.json, .state/
    llm: LLMConfig = field(default_factory=LLMConfig)
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_tokens=256))  # for answers
    questions_per_chunk: int = 3  # N questions asked for, and at most N kept, per chunk
    chunk_tokens: int = 200  # chunk size in tokens (words; a CJK character is one token)
    chunk_overlap: int = 40  # tokens consecutive chunks may share
    lang: str = "auto"  # auto (per chunk, by script) | en | zh: prompt language
    max_chunks: int | None = None  # use at most this many chunks, taken round-robin over documents
    min_support: float = 0.5  # drop answers with a smaller share of content words in the chunk
    min_question_support: float = 0.2  # drop questions with a smaller share of content words in the chunk
    text_field: str = "text"  # the string field holding the text in .jsonl documents
    questions_max_tokens: int | None = None  # budget of the question call; None → 40 per question + 32

    def __post_init__(self) -> None:
        if not str(self.docs).strip():
            raise ConfigError("self_qa.docs must name a folder, file or glob")
        object.__setattr__(self, "out", Path(self.out))
        check_fields(
            self,
            "self_qa.",
            [
                ("questions_per_chunk", 1 <= self.questions_per_chunk <= 20, "in [1, 20]"),
                ("chunk_tokens", self.chunk_tokens >= 16, "≥ 16"),
                (
                    "chunk_overlap",
                    0 <= self.chunk_overlap < self.chunk_tokens,
                    f"in [0, chunk_tokens={self.chunk_tokens})",
                ),
                ("lang", self.lang in ("auto", *LANGS), f"one of auto, {', '.join(LANGS)}"),
                ("max_chunks", self.max_chunks is None or self.max_chunks >= 1, "≥ 1 or unset"),
                *(
                    (name, 0 <= getattr(self, name) <= 1, "in [0, 1]")
                    for name in ("min_support", "min_question_support")
                ),
                ("text_field", bool(self.text_field), "non-empty"),
                (
                    "questions_max_tokens",
                    self.questions_max_tokens is None or self.questions_max_tokens >= 8,
                    "≥ 8 or unset",
                ),
            ],
        )

    @property
    def question_sampling(self) -> SamplingParams:
        budget = self.questions_max_tokens or 40 * self.questions_per_chunk + 32
        return replace(self.sampling, max_tokens=budget)

    def public_dict(self) -> dict[str, Any]:
        """The resolved config for ``stats.json`` (nothing secret: keys live in the environment)."""
        out = {
            k: getattr(self, k)
            for k in (
                "questions_per_chunk",
                "chunk_tokens",
                "chunk_overlap",
                "lang",
                "max_chunks",
                "min_support",
                "min_question_support",
                "text_field",
            )
        }
        return {
            "docs": str(self.docs),
            "out": str(self.out),
            **out,
            "llm": self.llm.public_dict(),
            "sampling": self.sampling.to_request(),
            "question_sampling": self.question_sampling.to_request(),
        }


# ------------------------------------------------------------------------------------------ text rules

# Questions or answers that lean on a document the reader of the final example will never see.
_REFERS_EN = re.compile(
    r"\b(?:the|this|that|these|above|given|provided|following|preceding|said)\s+"
    r"(?:text|article|passage|document|excerpt|paragraph|chunk|snippet)s?\b"
    r"|\b(?:according to|based on|as (?:stated|mentioned|described|noted|explained) in)\s+the\s+"
    r"(?:given\s+|provided\s+)?(?:context|information|author|material|reading)\b"
    r"|\b(?:mentioned|stated|described|discussed|noted|listed|shown|explained)\s+(?:above|earlier|previously)\b"
    r"|\bthe above\b|\bthe author\b(?!\s+of\b)",
    re.IGNORECASE,
)
_REFERS_ZH = re.compile(
    r"(?<![中英日法德外])文中|本文|上文|下文|原文|该文|这篇|那篇|此文|本段|该段|这段(?:文字|话|材料|文本|内容)"
    r"|(?:根据|依据|结合|按照)(?:上述|以上|所给|给定|这段|该)?(?:材料|文本|文章|段落|短文|内容|信息)"
    r"|(?:材料|文章|段落|短文|文本)中|上述|以上(?:内容|材料|文字|信息)"
)
_UNANSWERABLE_EN = re.compile(
    r"\b(?:cannot|can ?not|can't|could not|couldn't) be (?:determined|answered|inferred|known|found)"
    r"|\b(?:is|are|was|were|isn't|aren't) not (?:mentioned|stated|specified|given|discussed|provided)\b"
    r"|\bnot (?:explicitly )?(?:mentioned|stated|specified)\b"
    r"|\b(?:does|do|did) not (?:say|mention|specify|state|provide information)\b"
    r"|\bdoesn't (?:say|mention|specify|state)\b"
    r"|\bthere is no (?:information|mention|data)\b|\b(?:not enough|insufficient) information\b",
    re.IGNORECASE,
)
_UNANSWERABLE_ZH = re.compile(
    r"无法(?:确定|判断|得知|得出|从)|未(?:提及|提到|说明|给出|明确)|没有(?:提及|提到|说明|给出|相关信息|明确)"
    r"|不得而知|无从(?:得知|判断)|信息不足"
)
_SPECIAL_TOKENS = re.compile(r"<\|[a-z_]+\|>|</?s>|\[/?INST\]")
_LIST_ITEM = re.compile(
    r"^\s*(?:\(?\d{1,2}[.)、．:：]|[-*•·]|[（(][一二三四五六七八九十\d]+[)）]|[一二三四五六七八九十]+、)\s*(.+)$"
)
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:Q(?:uestion)?\s*\d*|问题\s*\d*|问)\s*[:：.]\s*(?:\*\*)?\s*", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*(?:\*\*)?(?:A(?:nswer)?|答案?|回答)\s*\d*\s*[:：]", re.IGNORECASE)
_ANSWER_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:Example\s+)?(?:Answer|A|答案|回答|答|示例回答)\s*[:：]\s*(?:\*\*)?\s*", re.IGNORECASE
)

_ANSWER_PREAMBLE = re.compile(
    r"^(?:(?:the|my|here is the|here's the) )?answer to (?:the|this|your) question(?: (?:about|of|on) [^:\n]{0,150}?)?"
    r"(?: is)?\s*:\s*|^(?:the )?answer is\s*:\s*",
    re.IGNORECASE,
)
_QUESTION_START = re.compile(
    r"^(?:explain|describe|list|name|compare|summari[sz]e|give|discuss|identify|define|tell|state|outline|"
    r"请|简述|说明|描述|列举|比较|解释|介绍|概括)",
    re.IGNORECASE,
)
_FACT = re.compile(r"(?<![A-Za-z0-9.,])\d+(?:[,.]\d+)*(?![A-Za-z0-9])|\b[A-Z][a-z]+(?:[A-Z][a-z]+)*\b")


def refers_to_text(text: str) -> str | None:
    """The phrase by which ``text`` points at a document the reader cannot see, or None."""
    match = _REFERS_EN.search(text) or _REFERS_ZH.search(text)
    return match.group(0) if match else None


def is_unanswerable(text: str) -> str | None:
    """The phrase by which an answer says the question cannot be answered, or None."""
    match = _UNANSWERABLE_EN.search(text) or _UNANSWERABLE_ZH.search(text)
    return match.group(0) if match else None


def injection_lines(text: str) -> list[str]:
    """Lines of ``text`` that look like prompt injection (flagged, never obeyed)."""
    return [line.strip()[:200] for line in text.split("\n") if INJECTION.search(line)]


def unsupported_facts(answer: str, chunk: str) -> list[str]:
    """Numbers and capitalised names in ``answer`` (not at a sentence start) that the chunk never mentions.

    Lexical overlap lets "invented in 1817 by Karl Benz" through when the chunk says Karl Drais; a name or a
    number the chunk does not contain is the cheapest sign of a hallucinated fact.
    """
    vocabulary = set(content_words(chunk, keep_stop=True))
    missing = []
    for match in _FACT.finditer(answer):
        word = match.group(0)
        before = answer[: match.start()].rstrip()
        if not word[0].isdigit() and (not before or before[-1] in '.!?:;"“(\n*-#'):
            continue  # a capital at a sentence start says nothing
        tokens = content_words(word, keep_stop=True)
        if tokens and not all(t in vocabulary for t in tokens) and word not in missing:
            missing.append(word)
    return missing


def support(answer: str, chunk: str) -> float:
    """Share of the answer's content tokens that occur in the chunk (0 when the answer has none)."""
    tokens = content_words(answer)
    if not tokens:
        return 0.0
    vocabulary = set(content_words(chunk, keep_stop=True))
    return round(sum(t in vocabulary for t in tokens) / len(tokens), 4)


# ------------------------------------------------------------------------------------------ parsing


def parse_questions(text: str) -> list[str]:
    """Questions from a model's list, tolerant of chatter: numbered or bulleted items, else lines ending in ?.

    ``"Sure! Here they are:\\n1. **Question:** How long is the Nile?\\nAnswer: ..."`` → ``["How long is the Nile?"]``.
    """
    lines = [line for line in text.replace("\r", "").split("\n") if line.strip()]
    items = [m.group(1) for line in lines if (m := _LIST_ITEM.match(line)) and not _ANSWER_LINE.match(m.group(1))]
    if not items:
        items = [line for line in lines if line.strip().endswith(("?", "？")) and not _ANSWER_LINE.match(line)]
    questions = []
    for item in items:
        item = _LABEL.sub("", item.strip().strip("*").strip())
        item = item.replace("**", "").strip().strip("\"'“”「」").strip()
        # "What is X? X is Y." – keep the question, drop an answer written on the same line.
        cut = min((i for i in (item.find("?"), item.find("？")) if i >= 0), default=-1)
        if cut >= 0:
            item = item[: cut + 1]
        if item:
            questions.append(item)
    return questions


def clean_answer(text: str) -> str:
    """The answer without a leading ``Answer:`` label, or the preamble small models like to write before it
    (``The answer to the question about lava is: ...``)."""
    text = _ANSWER_LABEL.sub("", text.strip(), count=1).strip()
    stripped = _ANSWER_PREAMBLE.sub("", text, count=1).strip()
    if stripped != text and stripped:
        stripped = stripped[0].upper() + stripped[1:]
    return stripped


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def check_question(question: str, chunk: str, skeleton: str, min_support: float) -> tuple[str, Any] | None:
    """Why ``question`` must be dropped, as ``(reason, detail)``, or None to keep it."""
    units = count_units(question, detect_lang(question))
    if units < 3 or units > 80 or _SPECIAL_TOKENS.search(question):
        return "malformed_question", "special tokens" if 3 <= units <= 80 else f"{units} words"
    if not question.rstrip().endswith(("?", "？")) and not _QUESTION_START.match(question):
        return "malformed_question", "not a question"
    if _norm(question) and _norm(question) in skeleton:
        return "copied_example", "the question is the prompt's example, not about the chunk"
    if phrase := refers_to_text(question):
        return "refers_to_text", phrase
    score = support(question, chunk)
    if score < min_support:
        return "off_topic_question", {"support": score}
    return None


def check_answer(answer: str, question: str, chunk: str, min_support: float) -> tuple[str | None, Any, float | None]:
    """``(reason, detail, support)``: reason is None for an answer to keep; support is None if not computed."""
    if not answer:
        return "empty_answer", None, None
    if _SPECIAL_TOKENS.search(answer):
        return "malformed_answer", "special tokens in the answer", None
    if _norm(question) and not _norm(answer).replace(_norm(question), ""):  # "Q? Q? Q?" from a looping model
        return "malformed_answer", "the answer repeats the question", None
    if count_units(answer, detect_lang(answer)) < 2:
        return "malformed_answer", "fewer than 2 words", None
    if phrase := is_refusal(answer):
        return "refusal", phrase, None
    if phrase := is_unanswerable(answer):
        return "not_answerable", phrase, None
    if phrase := refers_to_text(answer):
        return "refers_to_text", phrase, None
    score = support(answer, chunk)
    if score < min_support:
        return "low_support", {"support": score, "min_support": min_support}, score
    if missing := unsupported_facts(answer, chunk):
        return "unsupported_facts", {"not_in_chunk": missing}, score
    return None, None, score


# ------------------------------------------------------------------------------------------ prompts


def chunk_lang(chunk: Chunk, lang: str) -> str:
    return detect_lang(chunk.text) if lang == "auto" else lang


def build_question_messages(chunk: Chunk, lang: str, n: int) -> list[dict[str, str]]:
    """The request for step 1; the chunk is a template variable, never template source."""
    text = render(QUESTIONS_TEMPLATE.format(lang=lang), chunk=chunk.text.strip(), n=n)
    return [{"role": "user", "content": text}]


def build_answer_messages(chunk: Chunk, lang: str, question: str) -> list[dict[str, str]]:
    text = render(ANSWER_TEMPLATE.format(lang=lang), chunk=chunk.text.strip(), question=question)
    return [{"role": "user", "content": text}]


def _skeleton(lang: str, n: int) -> str:
    """The question prompt without a chunk, normalized: a question found in it was copied from the example."""
    return _norm(render(QUESTIONS_TEMPLATE.format(lang=lang), chunk="", n=n))


# ------------------------------------------------------------------------------------------ the stage


def select_chunks(docs: list[Document], cfg: SelfQAConfig) -> tuple[list[Chunk], dict[str, int]]:
    """All chunks, in document order; with ``max_chunks``, taken round-robin so every document gets some."""
    per_doc = [chunk_document(d, cfg.chunk_tokens, cfg.chunk_overlap) for d in docs]
    counts = {d.doc_id: len(c) for d, c in zip(docs, per_doc)}
    if cfg.max_chunks is None:
        return [c for chunks in per_doc for c in chunks], counts
    # Round-robin: every document's first chunk, then every document's second, ... up to max_chunks.
    chosen = set(sorted((c.index, d) for d, chunks in enumerate(per_doc) for c in chunks)[: cfg.max_chunks])
    return [c for d, chunks in enumerate(per_doc) for c in chunks if (c.index, d) in chosen], counts


@dataclass
class _Job:
    """One question to answer: where it came from and which request settles it."""

    chunk: Chunk
    lang: str
    question: str
    key: str


async def generate(cfg: SelfQAConfig) -> dict[str, Any]:
    """Run Self-QA over ``cfg.docs``; returns the stats also written to ``OUT/stats.json``."""
    started = time.monotonic()
    docs, skipped = load_documents(cfg.docs, cfg.text_field)
    if not docs:
        reasons = "; ".join(f"{s.doc_id}: {s.reason}" for s in skipped[:5]) or "no files"
        raise ConfigError(f"--docs {cfg.docs}: no readable document ({reasons})")
    # An unusable --out fails here: after the documents proved usable (so a bad --docs leaves no empty folder
    # behind), before chunking and before any request is paid for.
    make_dirs(cfg.out)
    chunks, chunk_counts = select_chunks(docs, cfg)
    langs = {c.key: chunk_lang(c, cfg.lang) for c in chunks}
    refs = {lang: _template_refs(lang) for lang in set(langs.values())}
    # Keys name the prompt's hash too: a tuned template is asked again, an unchanged one never.
    qkeys = {c.key: f"{c.key}|q:{refs[langs[c.key]]['questions']['sha256']}" for c in chunks}
    q_params, a_params = cfg.question_sampling, cfg.sampling
    with Step(cfg.out, "questions") as qlog, Step(cfg.out, "answers") as alog:
        async with LLMClient(cfg.llm) as llm:
            resumed_questions = await qlog.answer(
                chunks,
                key=lambda c: qkeys[c.key],
                ask=lambda c: llm.chat(build_question_messages(c, langs[c.key], cfg.questions_per_chunk), q_params),
                row=lambda c, result: answer_row(qkeys[c.key], result, doc_id=c.doc_id),
                limit=cfg.llm.gather_limit,
                desc="self-qa questions",
            )
            jobs = [
                job
                for c in chunks
                for job in _jobs(c, langs[c.key], qlog.done.get(qkeys[c.key]), cfg, refs[langs[c.key]])[0]
            ]
            resumed_answers = await alog.answer(
                jobs,
                key=lambda j: j.key,
                row=lambda j, result: answer_row(j.key, result),
                ask=lambda j: llm.chat(build_answer_messages(j.chunk, j.lang, j.question), a_params),
                limit=cfg.llm.gather_limit,
                desc="self-qa answers",
            )
            ledger = llm.ledger.as_dict()

        questions = {c.key: qlog.done.get(qkeys[c.key]) for c in chunks}
        kept, rejects, per_doc = _assemble(docs, chunks, langs, refs, chunk_counts, questions, alog.done, cfg)
    stats = {
        "stage": STAGE,
        "documents": len(docs),
        "skipped_files": [{"doc_id": s.doc_id, "reason": s.reason} for s in skipped],
        "chunks": sum(chunk_counts.values()),
        "chunks_used": len(chunks),
        "questions_asked": len(jobs),
        "per_document": per_doc,
        "resumed": {"question_calls": resumed_questions, "answer_calls": resumed_answers},
        "llm": ledger,
        "config": cfg.public_dict(),
        "seconds": round(time.monotonic() - started, 3),
    }
    return write_outputs(cfg.out, kept, rejects, stats)


def _template_refs(lang: str) -> dict[str, dict[str, str]]:
    return {
        "questions": template_ref(QUESTIONS_TEMPLATE.format(lang=lang)),
        "answer": template_ref(ANSWER_TEMPLATE.format(lang=lang)),
    }


def _jobs(
    chunk: Chunk, lang: str, row: dict[str, Any] | None, cfg: SelfQAConfig, refs: dict[str, dict[str, str]]
) -> tuple[list[_Job], list[tuple[str, str, Any]]]:
    """The questions of one chunk to answer, and the dropped ones as ``(question, reason, detail)``.

    A pure function of the logged question answer, so a resumed run derives exactly the same jobs.
    """
    if row is None or row.get("llm_failed"):
        return [], []
    questions = parse_questions(row["text"])
    dropped: list[tuple[str, str, Any]] = []
    if row["finish_reason"] == "length" and questions and _cut_off(questions[-1], row["text"]):
        dropped.append((questions.pop(), "truncated", "finish_reason=length in the question call"))
    skeleton = _skeleton(lang, cfg.questions_per_chunk)
    jobs: list[_Job] = []
    seen: set[str] = set()
    for question in questions:
        problem = check_question(question, chunk.text, skeleton, cfg.min_question_support)
        if problem is None and _norm(question) in seen:
            problem = ("duplicate_question", None)
        if problem is not None:
            dropped.append((question, *problem))
        elif len(jobs) < cfg.questions_per_chunk:
            seen.add(_norm(question))
            digest = hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]
            jobs.append(_Job(chunk, lang, question, f"{chunk.key}|{digest}|a:{refs['answer']['sha256']}"))
    return jobs, dropped


def _cut_off(question: str, text: str) -> bool:
    """Whether the last parsed question is where a truncated output stopped, before its question mark."""
    last_line = text.rstrip().rsplit("\n", 1)[-1]
    return not question.endswith(("?", "？")) and _norm(question) in _norm(last_line)


def _assemble(
    docs: list[Document],
    chunks: list[Chunk],
    langs: dict[str, str],
    refs: dict[str, dict[str, Any]],
    chunk_counts: dict[str, int],
    questions: dict[str, dict[str, Any] | None],
    answers: dict[str, dict[str, Any]],
    cfg: SelfQAConfig,
) -> tuple[list[Example], list[Example], dict[str, dict[str, Any]]]:
    """Kept records and rejects in document, chunk and question order, and per-document counts."""
    kept: list[Example] = []
    rejects: list[Example] = []
    per_doc: dict[str, dict[str, Any]] = {
        d.doc_id: {
            "chunks": chunk_counts[d.doc_id],
            "chunks_used": 0,
            "questions": 0,
            "kept": 0,
            "rejected": 0,
            "rejects_by_reason": Counter(),
            "injection_lines": [],
        }
        for d in docs
    }

    for chunk in chunks:
        lang, row = langs[chunk.key], questions.get(chunk.key)
        counts = per_doc[chunk.doc_id]
        counts["chunks_used"] += 1
        flags = injection_lines(chunk.text)
        counts["injection_lines"].extend(line for line in flags if line not in counts["injection_lines"])
        meta = {
            "method": STAGE,
            "model": (row or {}).get("model"),
            "prompt": refs[lang]["answer"],
            "question_prompt": refs[lang]["questions"],
            "source": {
                "doc_id": chunk.doc_id,
                "span": [chunk.start, chunk.end],
                "byte_span": [chunk.byte_start, chunk.byte_end],
                "chunk_hash": chunk.hash,
            },
        }
        if flags:
            meta["flags"] = ["prompt_injection"]

        def reject(question: str, output: str, reason: str, detail: Any, extra: dict | None = None) -> None:
            rejects.append(
                make_reject(
                    Example(instruction=question, output=output, lang=lang, meta={**meta, **(extra or {})}),
                    STAGE,
                    reason,
                    detail,
                )
            )
            counts["rejected"] += 1
            counts["rejects_by_reason"][reason] += 1

        if row is None or row.get("llm_failed"):
            reason = (row or {}).get("reason", "not_asked")
            reject("", "", reason, (row or {}).get("detail"))
            continue
        jobs, dropped = _jobs(chunk, lang, row, cfg, refs[lang])
        if not jobs and not dropped:
            reject("", row["text"], "no_questions", "no question could be parsed from the model's answer")
        for question, reason, detail in dropped:
            reject(question, "", reason, detail)
        question_usage = row.get("usage")
        for job in jobs:
            counts["questions"] += 1
            arow = answers.get(job.key)
            if arow is None or arow.get("llm_failed"):
                reject(job.question, "", (arow or {}).get("reason", "not_asked"), (arow or {}).get("detail"))
                continue
            extra = {
                "model": arow["model"],
                "usage": {**arow["usage"], "questions": question_usage},
                "finish_reason": arow["finish_reason"],
            }
            if arow["finish_reason"] == "length":
                reject(job.question, arow["text"], "truncated", "finish_reason=length", extra)
                continue
            text = clean_answer(arow["text"])
            reason, detail, score = check_answer(text, job.question, chunk.text, cfg.min_support)
            if score is not None:
                extra["filter"] = {"support": score}
            if reason is not None:
                reject(job.question, text, reason, detail, extra)
                continue
            kept.append(Example(instruction=job.question, input="", output=text, lang=lang, meta={**meta, **extra}))
            counts["kept"] += 1
    for counts in per_doc.values():
        counts["rejects_by_reason"] = dict(counts["rejects_by_reason"])
    return kept, rejects, per_doc
