"""The filter stage: heuristics → exact dedup → ROUGE-L near-dup → embedding near-dup → optional LLM judge.

Run it:  datagen filter gen/self_instruct/records.jsonl gen/qa/records.jsonl --out outputs/run/filter
   or:   datagen filter gen/*.jsonl --out outputs/run/filter --config filter.yaml --no-embed-dedup

Writes ``OUT/curated.jsonl`` (kept records, input order, ``meta.filter`` scores added), ``OUT/rejects.jsonl``
(every dropped record with ``reject: {stage, reason, detail}``, and ``duplicate_of``/``score`` for dedup
stages) and ``OUT/filter_stats.json`` (counts per stage and reason, seconds per stage, the resolved config).
Always ``|in| = |curated| + |rejects|``. Every input file is read and validated before anything is written:
a bad line is a RecordError naming ``path:line`` and leaves no output behind.

What the dedup stages compare:

- exact dedup: the normalised prompt (NFKC, case, punctuation and whitespace folded): instruction + input,
  or the whole conversation of a ``messages`` record; same prompt → one record kept. Self-QA and Self-KG
  records (``FACT_METHODS``) add their answer: one question asked of two facts is two records.
- ROUGE-L and embeddings: the instruction (Self-Instruct and seeds, as the paper does); question and answer for
  Self-QA and Self-KG, whose records resting on different graph triples (``meta.source.triples``) are never
  merged; for a ``messages`` record, its opening user turn followed by the rest of the conversation. Every
  dedup reject names the record kept: ``duplicate_of`` and, in the detail, its id and a short text.
  Records with the same instruction (the instances of one Self-Instruct task) form one unit: they are never
  compared with each other and are kept or dropped together, so a task's instances survive while a near-copy
  of the task goes, as in Self-Instruct's own ROUGE-L filter.

The embedding stage leaves alone the texts its model cannot read (mostly ``[UNK]`` tokens: Chinese under the
default English-only MiniLM); for those, the per-character ROUGE-L stage is the near-duplicate check.

In each duplicate group the kept record is chosen by ``keep``: ``first`` (input order), ``longest_output``
or ``heuristic_score`` (ties go to the earlier record). The ROUGE-L stage visits units in that order and keeps
a unit unless it scores ``>= rouge_threshold`` against one kept before it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from datagen.checkpoint import make_reject
from datagen.errors import ConfigError, RecordError
from datagen.filter import against as against_mod
from datagen.filter import decontaminate as decontaminate_mod
from datagen.filter import heuristics, judge, minhash, ray_engine, relevance, semantic
from datagen.filter.config import STAGES, FilterConfig, load_config  # noqa: F401 - load_config: its old home
from datagen.formats import iter_any, render_user_turn
from datagen.interrupt import interruptible
from datagen.records import Example, atomic_file, dump_line, make_dirs, write_json
from datagen.rouge import Tokens, greedy_dedup, greedy_dedup_among
from datagen.text import normalize_text

log = logging.getLogger("datagen.filter")

CURATED, REJECTS, STATS = "curated.jsonl", "rejects.jsonl", "filter_stats.json"


# ---------------------------------------------------------------------------------------------- texts compared


#: Generators whose records rest on a fact (a document passage, graph triples): the same question about
#: two facts ("Give a short profile of peace lily" / "... of dragon tree") is two records, so they are
#: compared on question *and* answer, and records resting on different triples are never merged.
FACT_METHODS = ("self-qa", "self-kg")


def exact_text(example: Example) -> str:
    """What exact dedup compares (before normalising): the prompt, or the whole conversation; for Self-QA
    and Self-KG records the prompt and the answer."""
    if example.messages:
        return "\n".join(m["content"] for m in example.messages if m["role"] != "system")
    if example.meta.get("method") in FACT_METHODS:
        return render_user_turn(example.instruction, example.input) + "\n" + example.output
    return render_user_turn(example.instruction, example.input)


def fact_key(example: Example) -> frozenset | None:
    """The graph facts a Self-KG record rests on (``meta.source.triples``), or None for other records."""
    source = example.meta.get("source")
    triples = source.get("triples") if isinstance(source, dict) else None
    if example.meta.get("method") != "self-kg" or not isinstance(triples, list) or not triples:
        return None
    return frozenset(tuple(map(str, t)) if isinstance(t, (list, tuple)) else str(t) for t in triples)


def similarity_text(example: Example) -> str:
    """What the ROUGE-L and embedding stages compare.

    Self-Instruct and seed records: the instruction, as the paper does (a task's instances share it and form
    one unit). Self-QA and Self-KG records: the question and the answer, so one question asked of two facts
    stays two records. A conversation: its opening user turn followed by the rest of the conversation."""
    if not example.messages:
        if example.meta.get("method") in FACT_METHODS:
            return "\n".join(t for t in (example.instruction, example.input, example.output) if t)
        return example.instruction
    turns = [m for m in example.messages if m["role"] != "system"]
    first = next((k for k, m in enumerate(turns) if m["role"] == "user"), 0)
    return "\n".join([turns[first]["content"], *(m["content"] for k, m in enumerate(turns) if k != first)])


def _answer_chars(example: Example) -> int:
    if example.messages:
        return sum(len(m["content"]) for m in example.messages if m["role"] == "assistant")
    return len(example.output)


def _digest(example: Example) -> str:
    """What exact dedup and ``--against`` compare: a 128-bit hash of the normalised ``exact_text``."""
    return hashlib.blake2b(normalize_text(exact_text(example)).encode(), digest_size=16).hexdigest()


def _shorten(text: str) -> str:
    """A reject's view of the record kept: its first 80 characters, whitespace folded."""
    text = " ".join(text.split())
    return text[:80] + ("…" if len(text) > 80 else "")


def _records(cfg: FilterConfig) -> Iterator[tuple[int, Example]]:
    """Every input record with its index, read one at a time; a re-filtered file's old scores are stale."""
    for i, example in enumerate(e for path in cfg.inputs for e in iter_any(path)):
        example.meta = {k: v for k, v in example.meta.items() if k != "filter"}
        yield i, example


# ---------------------------------------------------------------------------------------------- the run


class _Run:
    """Who is still in, what each stage did, and per record only what the stages need: its similarity text
    (the ROUGE-L and embedding input), a hash of its exact-dedup text, scores and flags; never the record."""

    def __init__(self, cfg: FilterConfig):
        self.cfg = cfg
        self.ids: list[str] = []
        self.sims: list[str] = []
        self.digests: list[str] = []
        self.shorts: list[str] = []  # the exact-dedup text, shortened: a duplicate's reject names it
        self.answers: list[int] = []
        self.scores: list[float | None] = []
        self.facts: dict[int, frozenset] = {}
        self.flags: dict[int, list[str]] = {}
        self.judged: dict[int, dict[str, Any]] = {}
        self.rejected: dict[int, tuple[str, str, Any, dict[str, Any]]] = {}  # stage, reason, detail, extra
        self.alive: list[int] = []
        self.stages: dict[str, dict[str, Any]] = {name: {"enabled": getattr(cfg, name)} for name in STAGES}

    def add(self, i: int, example: Example) -> None:
        self.ids.append(example.id)
        self.sims.append(similarity_text(example))
        self.digests.append(_digest(example))
        self.shorts.append(_shorten(exact_text(example)))
        self.answers.append(_answer_chars(example))
        facts = fact_key(example)
        if facts is not None:
            self.facts[i] = facts

    def priority(self, i: int) -> tuple:
        """Sort key: the smallest is the record a duplicate group keeps."""
        if self.cfg.keep == "longest_output":
            return (-self.answers[i], i)
        if self.cfg.keep == "heuristic_score":
            return (-self.scores[i], i)  # type: ignore[operator]  # set for every record when this policy is on
        return (i,)

    def drop(self, i: int, stage: str, reason: str, detail: Any = None, **extra: Any) -> None:
        self.rejected[i] = (stage, reason, detail, extra)

    def stage(self, name: str, seconds: float, **extra: Any) -> None:
        """Close stage ``name``: its counts and seconds into the stats; the records it did not drop go on."""
        survivors = [i for i in self.alive if i not in self.rejected]
        dropped = [i for i in self.alive if i in self.rejected and self.rejected[i][0] == name]
        self.stages[name].update(
            {
                "in": len(self.alive),
                "kept": len(survivors),
                "rejected": len(dropped),
                "reasons": dict(Counter(self.rejected[i][1] for i in dropped)),
                "seconds": round(seconds, 4),
                **extra,
            }
        )
        log.info("filter %s: kept %d of %d", name, len(survivors), len(self.alive))
        self.alive = survivors

    def units(self) -> tuple[list[list[int]], list[str]]:
        """Alive records grouped by their normalised similarity text, each unit best-first, units best-first;
        and the text each unit is compared on (its best record's)."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i in self.alive:
            groups[normalize_text(self.sims[i])].append(i)
        units = [sorted(members, key=self.priority) for members in groups.values()]
        units.sort(key=lambda unit: self.priority(unit[0]))
        return units, [self.sims[unit[0]] for unit in units]


#: Records whose answers the ``unrelated_answer`` rule checks in one batch (the encoder's input).
RELEVANCE_CHUNK = 8192


def _scan(run: _Run, bench_index: decontaminate_mod.NgramIndex | None) -> None:
    """Pass 1: read every record once (a bad line raises before anything is written), run the per-record
    stages, heuristics and decontamination, as the records stream by, and keep what the dedup stages need."""
    cfg, seconds = run.cfg, Counter[str]()
    hits: dict[int, tuple[str, dict[str, str]]] = {}  # records sharing an n-gram with a benchmark item
    on = (
        cfg.heuristics
        and (cfg.embed_dedup if cfg.relevance is None else cfg.relevance)
        and "unrelated_answer" not in cfg.skip_rules
    )
    pending: list[relevance.Item] = []
    totals: dict[str, Any] = {"checked": 0, "encoded": 0, "rejected": 0, "seconds": 0.0}
    if cfg.heuristics:
        log.info("filter heuristics: started on the records as they are read")
    scan_started = time.perf_counter()
    for i, example, result in _evaluated(cfg, _records(cfg)):
        run.add(i, example)
        if result is not None:
            run.scores.append(result.score)
            if result.flags:
                run.flags[i] = [rule for rule, _ in result.flags]
                run.drop(i, heuristics.STAGE, *result.flags[0])
            elif on:  # only a record's first answer: a follow-up ("And on Everest?") is read with the turns before
                pending += [
                    relevance.Item(
                        i,
                        heuristics.render_task(turn),
                        turn.answer,
                        example.is_classification,
                        bool(turn.input.strip()),
                    )
                    for turn in heuristics.turns(example)[:1]
                    if turn.answer.strip()
                ]
        else:
            run.scores.append(heuristics.graded_score(example, cfg) if cfg.keep == "heuristic_score" else None)
        if bench_index is not None and i not in run.rejected:
            started = time.perf_counter()
            hit = bench_index.check(example)
            if hit is not None:
                hits[i] = hit
            seconds[decontaminate_mod.STAGE] += time.perf_counter() - started
        if len(pending) >= RELEVANCE_CHUNK:
            _relevance(run, pending, totals)
            pending = []
    if on:
        _relevance(run, pending, totals)
    # The heuristics' seconds are pass 1's wall time but decontamination's: with worker processes, the seconds
    # each record took would add up to more than the stage lasted.
    seconds["heuristics"] = time.perf_counter() - scan_started - seconds[decontaminate_mod.STAGE]
    run.alive = list(range(len(run.ids)))
    if cfg.heuristics:
        run.stage(
            "heuristics",
            seconds["heuristics"],
            **({"relevance": {**totals, "seconds": round(totals["seconds"], 4)}} if on else {}),
        )
    if bench_index is not None:
        for i in run.alive:
            if i in hits:
                run.drop(i, decontaminate_mod.STAGE, decontaminate_mod.REASON, hits[i][0], **hits[i][1])
        run.stage(
            decontaminate_mod.STAGE,
            seconds[decontaminate_mod.STAGE],
            ngram=bench_index.n,
            benchmark_items=bench_index.items,
        )


#: Records a worker evaluates per task; a few tasks per worker are in flight, so memory stays bounded.
HEURISTICS_CHUNK = 1024


def _evaluated(
    cfg: FilterConfig, records: Iterator[tuple[int, Example]]
) -> Iterator[tuple[int, Example, heuristics.HeuristicResult | None]]:
    """Each record with its heuristics result (None with the stage off), in input order.

    Past ``heuristics_parallel_above`` records, chunks go to ``heuristics_workers`` processes (the rules are per
    record and pure Python: one core a process) while this one reads on; at most ``2·workers + 1`` chunks are
    in flight, so memory stays bounded. The workers ignore SIGINT: a Ctrl-C lands here, the pool is dropped and
    each worker ends after its current chunk (about a second)."""
    workers = cfg.heuristics_workers or len(os.sched_getaffinity(0))
    # fork: the workers start from this process, small at that point, and do not re-import the caller's
    # __main__ (spawn and forkserver do: a script without a __main__ guard would run again in each worker).
    # Where there is no fork (macOS discourages it, Windows has none) the heuristics stay in this process.
    if (
        not cfg.heuristics
        or workers < 2
        or "fork" not in multiprocessing.get_all_start_methods()
        or sys.platform == "darwin"
    ):
        yield from (
            (i, example, heuristics.evaluate(example, cfg) if cfg.heuristics else None) for i, example in records
        )
        return
    pool: ProcessPoolExecutor | None = None
    in_flight: deque[tuple[list[tuple[int, Example]], Future]] = deque()
    chunk: list[tuple[int, Example]] = []
    try:
        for i, example in records:
            if pool is None and i < cfg.heuristics_parallel_above:
                yield i, example, heuristics.evaluate(example, cfg)
                continue
            if pool is None:
                log.info("filter heuristics: %d worker processes from record %d", workers, i + 1)
                pool = ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init, initargs=(cfg,)
                )
            chunk.append((i, example))
            if len(chunk) == HEURISTICS_CHUNK:
                in_flight.append((chunk, pool.submit(_evaluate_chunk, [e for _, e in chunk])))
                chunk = []
            while len(in_flight) > 2 * workers or (in_flight and in_flight[0][1].done()):
                yield from _settled(*in_flight.popleft())
        if chunk and pool is not None:
            in_flight.append((chunk, pool.submit(_evaluate_chunk, [e for _, e in chunk])))
        while in_flight:
            yield from _settled(*in_flight.popleft())
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _settled(
    chunk: list[tuple[int, Example]], future: Future
) -> Iterator[tuple[int, Example, heuristics.HeuristicResult]]:
    return ((i, example, result) for (i, example), result in zip(chunk, future.result()))


_WORKER_CFG: FilterConfig | None = None


def _worker_init(cfg: FilterConfig) -> None:
    global _WORKER_CFG
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and drops the pool
    _WORKER_CFG = cfg


def _evaluate_chunk(examples: list[Example]) -> list[heuristics.HeuristicResult]:
    return [heuristics.evaluate(example, _WORKER_CFG) for example in examples]  # type: ignore[arg-type]


def _relevance(run: _Run, items: list[relevance.Item], totals: dict[str, Any]) -> None:
    """The ``unrelated_answer`` rule over a batch of records that passed the others (relevance.py); adds its
    counts and seconds to ``totals``."""
    started = time.perf_counter()
    found, stats = relevance.unrelated(
        items,
        min_cosine=run.cfg.relevance_min_cosine,
        min_chars_zh=run.cfg.relevance_min_chars_zh,
        model=run.cfg.embed_model,
        device=run.cfg.embed_device,
        batch_size=run.cfg.embed_batch_size,
    )
    for i, detail in found:
        run.scores[i], run.flags[i] = 0.0, [relevance.RULE]
        run.drop(i, heuristics.STAGE, relevance.RULE, detail)
    took = time.perf_counter() - started
    totals.update(
        checked=totals["checked"] + stats["checked"],
        encoded=totals["encoded"] + stats["encoded"],
        rejected=totals["rejected"] + len(found),
        seconds=totals["seconds"] + took,
    )


def _exact_dedup(run: _Run) -> dict[str, Any]:
    groups: dict[str, list[int]] = defaultdict(list)
    if run.cfg.engine == "ray":
        found = ray_engine.exact_groups([run.digests[i] for i in run.alive], run.cfg.ray_address)
        groups.update((str(k), [run.alive[x] for x in members]) for k, members in enumerate(found))
    else:
        for i in run.alive:
            groups[run.digests[i]].append(i)
    for members in groups.values():
        keep, *rest = sorted(members, key=run.priority)
        for i in rest:
            run.drop(
                i,
                "exact_dedup",
                "exact_duplicate",
                f"same normalised prompt: kept {run.ids[keep]} {run.shorts[keep]!r}",
                duplicate_of=run.ids[keep],
                score=1.0,
            )
    return {}


def _drop_units(
    run: _Run, stage: str, reason: str, units: list[list[int]], dropped: list[tuple[int, int, float]], detail: str
) -> None:
    """Drop each duplicate unit; the detail names the record kept (id and a short text). Two Self-KG
    records resting on different graph facts are never duplicates, whatever their texts score."""
    for unit, dup_unit, score in dropped:
        first = units[dup_unit][0]
        facts, kept, short = run.facts.get(first), run.ids[first], _shorten(run.sims[first])
        score = round(float(score), 4)
        for i in units[unit]:
            mine = run.facts.get(i)
            if facts is not None and mine is not None and mine != facts:
                continue
            run.drop(
                i, stage, reason, f"{detail} (score {score}): kept {kept} {short!r}", duplicate_of=kept, score=score
            )


def _rouge_dedup(run: _Run) -> dict[str, Any]:
    units, texts = run.units()
    cfg = run.cfg
    method = cfg.rouge_method
    if method == "auto":
        method = "lsh" if len(units) > cfg.rouge_lsh_above else "exact"
    extra: dict[str, Any] = {}
    if cfg.engine == "ray":
        dropped, extra = ray_engine.rouge_dedup(
            texts,
            cfg.rouge_threshold,
            method=method,
            lsh_threshold=cfg.rouge_lsh_threshold,
            num_perm=cfg.rouge_lsh_num_perm,
            max_df=cfg.rouge_lsh_max_df,
            max_count=cfg.rouge_lsh_max_count,
            address=cfg.ray_address,
        )
    elif method == "lsh":
        tokens = Tokens.of(texts)  # token ids back to back: ~80 MB at 1M texts, not ~1.5 GB of str lists
        pairs, few = minhash.candidate_pairs(
            tokens,
            threshold=cfg.rouge_lsh_threshold,
            num_perm=cfg.rouge_lsh_num_perm,
            max_df=cfg.rouge_lsh_max_df,
            max_count=cfg.rouge_lsh_max_count,
        )
        _, dropped = greedy_dedup_among(tokens, cfg.rouge_threshold, pairs, exhaustive=few)
        extra.update(candidate_pairs=int(len(pairs)), pool_searched=int(few.sum()))
    else:
        _, dropped = greedy_dedup(texts, cfg.rouge_threshold)
    _drop_units(
        run,
        "rouge_dedup",
        "rouge_near_duplicate",
        units,
        dropped,
        f"ROUGE-L F >= {run.cfg.rouge_threshold} against a kept record",
    )
    return {"units": len(units), "method": method, **extra}


def _embed_dedup(run: _Run) -> dict[str, Any]:
    cfg = run.cfg
    units, texts = run.units()
    engine = {"address": cfg.ray_address} if cfg.engine == "ray" else {}
    result = (ray_engine.embed_dedup if engine else semantic.embed_dedup)(
        texts,
        priority=list(range(len(units))),
        threshold=cfg.embed_threshold,
        grouping=cfg.embed_grouping,
        max_unknown=cfg.embed_max_unknown,
        model=cfg.embed_model,
        device=cfg.embed_device,
        batch_size=cfg.embed_batch_size,
        ivf_above=cfg.embed_ivf_above,
        nprobe=cfg.embed_nprobe,
        min_recall=cfg.embed_min_recall,
        **engine,
    )
    _drop_units(
        run,
        "embed_dedup",
        "embedding_near_duplicate",
        units,
        result.dropped,
        f"cosine >= {cfg.embed_threshold} in a group with a kept record"
        if cfg.embed_grouping == "connected"
        else f"cosine >= {cfg.embed_threshold} against a kept record",
    )
    return result.stats


def _read_against(paths: tuple[Path, ...]) -> against_mod.OldSet:
    rows = [(similarity_text(e), e.id, _digest(e)) for path in paths for e in iter_any(path)]
    texts, ids, digests = zip(*rows) if rows else ((), (), ())
    return against_mod.OldSet(texts, ids, digests)


def _against(run: _Run, old: against_mod.OldSet) -> dict[str, Any]:
    for i in run.alive:
        hit = old.match(run.sims[i], run.digests[i], run.cfg.rouge_threshold)
        if hit is not None:
            old_id, score, how = hit
            detail = (
                "same normalised prompt as an earlier record"
                if how == "exact"
                else f"ROUGE-L F >= {run.cfg.rouge_threshold} against an earlier record"
            )
            run.drop(i, against_mod.STAGE, against_mod.REASON, detail, duplicate_of=old_id, score=round(score, 4))
    return {"earlier_records": len(old)}


async def _judge(run: _Run) -> None:
    """The LLM judge over the survivors, re-read from the inputs: only they are held, not every record (one
    call, so one client's cost budget and usage ledger cover them all)."""
    from datagen.llm.endpoint import endpoint

    cfg, started = run.cfg, time.perf_counter()
    sampling = dataclasses.replace(judge.SAMPLING, max_tokens=cfg.judge_max_tokens)
    alive = set(run.alive)
    with interruptible():
        examples = [example for i, example in _records(cfg) if i in alive]
    with endpoint(cfg.llm) as llm_cfg:
        verdicts, ledger = await judge.judge_examples(examples, llm_cfg, sampling)
    for i, verdict in zip(run.alive, verdicts):
        run.judged[i] = verdict.meta()
        if verdict.error:
            run.drop(i, judge.STAGE, verdict.error, verdict.detail)
        elif verdict.score < cfg.judge_min_score:
            run.drop(
                i,
                judge.STAGE,
                "low_judge_score",
                f"score {verdict.score} < {cfg.judge_min_score}",
                score=verdict.score,
            )
    run.stage("judge", time.perf_counter() - started, llm=ledger)


def _write(run: _Run) -> None:
    """Pass 2: re-read the inputs in order and stream each record, with its ``meta.filter`` scores, to
    curated or (tagged with its ``reject``) to rejects. Both are temp files until the end, so a Ctrl-C or an
    error leaves no part of a file."""
    out, changed, n = Path(run.cfg.out), "filter: the input files changed while being filtered", -1
    with atomic_file(out / REJECTS, "w") as rejects, atomic_file(out / CURATED, "w") as curated:
        for n, example in _records(run.cfg):
            if n >= len(run.ids) or example.id != run.ids[n]:
                raise RecordError(f"{changed} (record {n + 1})")
            scores = {"heuristic_score": run.scores[n]} if run.cfg.heuristics else {}
            scores.update({k: v[n] for k, v in (("heuristic_flags", run.flags), ("judge", run.judged)) if n in v})
            if scores:
                example.meta["filter"] = scores
            dropped = run.rejected.get(n)
            if dropped is not None:
                example = make_reject(example, *dropped[:3], **dropped[3])
            (rejects if dropped else curated).write(dump_line(example))
        if n != len(run.ids) - 1:
            raise RecordError(f"{changed} ({n + 1} records, not {len(run.ids)})")


def _preflight(cfg: FilterConfig) -> None:
    """Fail on what can be checked up front, before minutes of work and before anything is written."""
    if not cfg.inputs:
        raise ConfigError("filter: no input files; pass IN... or set 'inputs' in the config")
    if cfg.out is None:
        raise ConfigError("filter: no output folder; pass --out DIR or set 'out' in the config")
    if cfg.out.exists() and not cfg.out.is_dir():
        raise ConfigError(f"--out {cfg.out}: exists and is not a folder")
    if cfg.embed_dedup and cfg.embed_model is None:
        semantic.default_model_path()
    if cfg.engine == "ray":
        ray_engine.require()
    if cfg.judge:
        from datagen.llm.client import resolve_base_urls
        from datagen.prompts import get_template

        resolve_base_urls(cfg.llm)
        for lang in ("en", "zh"):
            get_template(f"{lang}/{judge.TEMPLATE}")


async def run_filter(cfg: FilterConfig) -> dict[str, Any]:
    """Run the enabled stages over every input record; write the outputs; return the stats.

    Two passes over the inputs, so memory holds the dedup indexes, not the records: the first validates and
    scores each record as it is read, the dedup stages then work on what it kept, and the second writes."""
    total_started = time.perf_counter()
    _preflight(cfg)
    run = _Run(cfg)
    with interruptible():  # one Ctrl-C stops the synchronous stages (issue 24); asyncio.run alone swallows it
        bench_index = (
            decontaminate_mod.build_index(cfg.decontaminate, cfg.decontaminate_ngram) if cfg.decontaminate else None
        )
        for name, used in ((decontaminate_mod.STAGE, bench_index), (against_mod.STAGE, cfg.against or None)):
            if used is not None:  # listed in the stats only when configured: the five stages stay as they were
                run.stages[name] = {"enabled": True}
        _scan(run, bench_index)  # RecordError (path:line) before anything is written
        old = _read_against(cfg.against) if cfg.against else None
        make_dirs(cfg.out)  # an unusable --out fails now, not after the work (and judge calls) are done
        for name, on, stage in (
            ("exact_dedup", cfg.exact_dedup, _exact_dedup),
            (against_mod.STAGE, old is not None, functools.partial(_against, old=old)),
            ("rouge_dedup", cfg.rouge_dedup, _rouge_dedup),
            ("embed_dedup", cfg.embed_dedup, _embed_dedup),
        ):
            if on:  # each stage returns its own figures for the stats
                log.info("filter %s: started on %d records", name, len(run.alive))
                started = time.perf_counter()
                figures = stage(run)
                run.stage(name, time.perf_counter() - started, **figures)
    if cfg.judge and run.alive:
        await _judge(run)

    rejects = [run.rejected[i] for i in sorted(run.rejected)]
    if len(run.alive) + len(rejects) != len(run.ids) or set(run.alive) & set(run.rejected):
        raise AssertionError(
            f"filter lost track of records: {len(run.ids)} in, {len(run.alive)} curated + {len(rejects)} rejected"
        )  # never under -O: this is the stage's contract
    stats = {
        "stage": "filter",
        "inputs": [str(p) for p in cfg.inputs],
        "out": str(cfg.out),
        "records_in": len(run.ids),
        "curated": len(run.alive),
        "kept": len(run.alive),
        "rejected": len(rejects),
        "rejects_by_reason": dict(Counter(reason for _, reason, _, _ in rejects)),
        "rejects_by_stage": dict(Counter(stage for stage, _, _, _ in rejects)),
        "stages": run.stages,
        "llm": run.stages["judge"].get("llm"),
        "seconds": 0.0,
        "config": cfg.public_dict(),
    }
    (Path(cfg.out) / STATS).unlink(missing_ok=True)  # a stale marker must not vouch for half-replaced outputs
    with interruptible():
        _write(run)
    stats["seconds"] = round(time.perf_counter() - total_started, 4)
    write_json(Path(cfg.out) / STATS, stats)  # written last: its presence means the stage finished
    return stats
