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
import logging
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from datagen.checkpoint import count_reasons, make_reject
from datagen.errors import ConfigError
from datagen.filter import against as against_mod
from datagen.filter import decontaminate as decontaminate_mod
from datagen.filter import heuristics, judge, minhash, relevance, semantic
from datagen.filter.config import STAGES, FilterConfig, load_config  # noqa: F401 - load_config: its old home
from datagen.formats import read_any, render_user_turn
from datagen.interrupt import interruptible
from datagen.records import Example, make_dirs, write_json, write_jsonl
from datagen.rouge import greedy_dedup, greedy_dedup_among, tokenize
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


# ---------------------------------------------------------------------------------------------- the run


class _Run:
    """The records, who is still in, and what each stage did."""

    def __init__(self, cfg: FilterConfig, examples: list[Example]):
        self.cfg = cfg
        self.examples = examples
        self.alive = list(range(len(examples)))
        self.rejected: dict[int, Example] = {}
        self.scores: list[float | None] = [None] * len(examples)
        self.stages: dict[str, dict[str, Any]] = {name: {"enabled": getattr(cfg, name)} for name in STAGES}
        for example in examples:  # a re-filtered file's old scores are stale
            example.meta = {k: v for k, v in example.meta.items() if k != "filter"}

    def filter_meta(self, i: int) -> dict[str, Any]:
        return self.examples[i].meta.setdefault("filter", {})

    def priority(self, i: int) -> tuple:
        """Sort key: the smallest is the record a duplicate group keeps."""
        if self.cfg.keep == "longest_output":
            return (-_answer_chars(self.examples[i]), i)
        if self.cfg.keep == "heuristic_score":
            if self.scores[i] is None:
                self.scores[i] = heuristics.graded_score(self.examples[i], self.cfg)
            return (-self.scores[i], i)
        return (i,)

    def drop(self, i: int, stage: str, reason: str, detail: Any = None, **extra: Any) -> None:
        self.rejected[i] = make_reject(self.examples[i], stage, reason, detail, **extra)

    def stage(self, name: str, survivors: list[int], started: float, **extra: Any) -> None:
        dropped = [i for i in self.alive if i in self.rejected and self.rejected[i].reject["stage"] == name]
        self.stages[name].update({"in": len(self.alive), "kept": len(survivors), "rejected": len(dropped),
                                  "reasons": dict(Counter(self.rejected[i].reject["reason"] for i in dropped)),
                                  "seconds": round(time.perf_counter() - started, 4), **extra})
        log.info("filter %s: kept %d of %d", name, len(survivors), len(self.alive))
        self.alive = survivors

    def units(self) -> list[list[int]]:
        """Alive records grouped by their normalised similarity text, each unit best-first, units best-first."""
        groups: dict[str, list[int]] = defaultdict(list)
        for i in self.alive:
            groups[normalize_text(similarity_text(self.examples[i]))].append(i)
        units = [sorted(members, key=self.priority) for members in groups.values()]
        return sorted(units, key=lambda unit: self.priority(unit[0]))


def _heuristics(run: _Run) -> None:
    started, survivors = time.perf_counter(), []
    for i in run.alive:
        result = heuristics.evaluate(run.examples[i], run.cfg)
        meta = run.filter_meta(i)
        meta["heuristic_score"] = run.scores[i] = result.score
        if result.flags:
            meta["heuristic_flags"] = [rule for rule, _ in result.flags]
            rule, detail = result.flags[0]
            run.drop(i, heuristics.STAGE, rule, detail)
        else:
            survivors.append(i)
    on = run.cfg.embed_dedup if run.cfg.relevance is None else run.cfg.relevance
    extra = _relevance(run, survivors) if on and "unrelated_answer" not in run.cfg.skip_rules else {}
    run.stage("heuristics", [i for i in survivors if i not in run.rejected], started, **extra)


def _relevance(run: _Run, survivors: list[int]) -> dict[str, Any]:
    """The ``unrelated_answer`` rule over the records that passed the others, in batches (relevance.py)."""
    started = time.perf_counter()
    # Only a record's first answer: a follow-up ("And on Everest?") is read with the turns before it.
    items = [relevance.Item(i, heuristics.render_task(turn), turn.answer, run.examples[i].is_classification,
                            bool(turn.input.strip()))
             for i in survivors for turn in heuristics.turns(run.examples[i])[:1] if turn.answer.strip()]
    found, stats = relevance.unrelated(
        items, min_cosine=run.cfg.relevance_min_cosine, min_chars_zh=run.cfg.relevance_min_chars_zh,
        model=run.cfg.embed_model, device=run.cfg.embed_device, batch_size=run.cfg.embed_batch_size)
    for i, detail in found:
        if i in run.rejected:
            continue  # a conversation with two unrelated turns: the first names it
        meta = run.filter_meta(i)
        meta["heuristic_score"] = run.scores[i] = 0.0
        meta["heuristic_flags"] = [relevance.RULE]
        run.drop(i, heuristics.STAGE, relevance.RULE, detail)
    return {"relevance": {**stats, "rejected": len({i for i, _ in found}),
                          "seconds": round(time.perf_counter() - started, 4)}}


def _exact_dedup(run: _Run) -> None:
    started = time.perf_counter()
    groups: dict[str, list[int]] = defaultdict(list)
    if run.cfg.engine == "ray":
        from datagen.filter import ray_engine

        found = ray_engine.exact_groups([exact_text(run.examples[i]) for i in run.alive], run.cfg.ray_address)
        groups.update((str(k), [run.alive[x] for x in members]) for k, members in enumerate(found))
    else:
        for i in run.alive:
            groups[normalize_text(exact_text(run.examples[i]))].append(i)
    for members in groups.values():
        keep, *rest = sorted(members, key=run.priority)
        for i in rest:
            text = " ".join(exact_text(run.examples[keep]).split())
            run.drop(i, "exact_dedup", "exact_duplicate",
                     f"same normalised prompt: kept {run.examples[keep].id} {text[:80] + ('…' if len(text) > 80 else '')!r}",
                     duplicate_of=run.examples[keep].id, score=1.0)
    run.stage("exact_dedup", sorted(i for i in run.alive if i not in run.rejected), started)


def _drop_units(run: _Run, stage: str, reason: str, units: list[list[int]],
                dropped: list[tuple[int, int, float]], detail: str) -> None:
    """Drop each duplicate unit; the detail names the record kept (id and a short text). Two Self-KG
    records resting on different graph facts are never duplicates, whatever their texts score."""
    for unit, dup_unit, score in dropped:
        kept_example = run.examples[units[dup_unit][0]]
        facts = fact_key(kept_example)
        kept = kept_example.id
        text = " ".join(similarity_text(kept_example).split())
        short = text[:80] + ("…" if len(text) > 80 else "")
        for i in units[unit]:
            mine = fact_key(run.examples[i])
            if facts is not None and mine is not None and mine != facts:
                continue
            run.drop(i, stage, reason, f"{detail} (score {round(float(score), 4)}): kept {kept} {short!r}",
                     duplicate_of=kept, score=round(float(score), 4))


def _rouge_dedup(run: _Run) -> None:
    started = time.perf_counter()
    units = run.units()
    texts = [similarity_text(run.examples[unit[0]]) for unit in units]
    cfg = run.cfg
    method = cfg.rouge_method
    if method == "auto":
        method = "lsh" if len(units) > cfg.rouge_lsh_above else "exact"
    extra: dict[str, Any] = {}
    if cfg.engine == "ray":
        from datagen.filter import ray_engine

        dropped, extra = ray_engine.rouge_dedup(texts, cfg.rouge_threshold, method=method,
                                                lsh_threshold=cfg.rouge_lsh_threshold, num_perm=cfg.rouge_lsh_num_perm,
                                                max_df=cfg.rouge_lsh_max_df, max_count=cfg.rouge_lsh_max_count,
                                                address=cfg.ray_address)
    elif method == "lsh":
        tokens = [tokenize(text) for text in texts]
        pairs, few = minhash.candidate_pairs(tokens, threshold=cfg.rouge_lsh_threshold,
                                             num_perm=cfg.rouge_lsh_num_perm, max_df=cfg.rouge_lsh_max_df,
                                             max_count=cfg.rouge_lsh_max_count)
        _, dropped = greedy_dedup_among(tokens, cfg.rouge_threshold, pairs, exhaustive=few)
        extra.update(candidate_pairs=int(len(pairs)), pool_searched=int(few.sum()))
    else:
        _, dropped = greedy_dedup(texts, cfg.rouge_threshold)
    _drop_units(run, "rouge_dedup", "rouge_near_duplicate", units, dropped,
                f"ROUGE-L F >= {run.cfg.rouge_threshold} against a kept record")
    run.stage("rouge_dedup", sorted(i for i in run.alive if i not in run.rejected), started, units=len(units),
              method=method, **extra)


def _embed_dedup(run: _Run) -> dict[str, Any]:
    cfg, started = run.cfg, time.perf_counter()
    units = run.units()
    texts = [similarity_text(run.examples[unit[0]]) for unit in units]
    engine: dict[str, Any] = {}
    if cfg.engine == "ray":
        from datagen.filter import ray_engine

        engine = {"address": cfg.ray_address}
    result = (ray_engine.embed_dedup if engine else semantic.embed_dedup)(
        texts, priority=list(range(len(units))), threshold=cfg.embed_threshold, grouping=cfg.embed_grouping,
        max_unknown=cfg.embed_max_unknown,
        model=cfg.embed_model, device=cfg.embed_device, batch_size=cfg.embed_batch_size,
        ivf_above=cfg.embed_ivf_above, nprobe=cfg.embed_nprobe, min_recall=cfg.embed_min_recall, **engine)
    _drop_units(run, "embed_dedup", "embedding_near_duplicate", units, result.dropped,
                f"cosine >= {cfg.embed_threshold} in a group with a kept record" if cfg.embed_grouping == "connected"
                else f"cosine >= {cfg.embed_threshold} against a kept record")
    run.stage("embed_dedup", sorted(i for i in run.alive if i not in run.rejected), started, **result.stats)
    return result.stats


def _decontaminate(run: _Run, index: decontaminate_mod.NgramIndex) -> None:
    started, survivors = time.perf_counter(), []
    for i in run.alive:
        hit = index.check(run.examples[i])
        if hit is None:
            survivors.append(i)
        else:
            detail, extra = hit
            run.drop(i, decontaminate_mod.STAGE, decontaminate_mod.REASON, detail, **extra)
    run.stage(decontaminate_mod.STAGE, survivors, started, ngram=index.n, benchmark_items=index.items)


def _read_against(paths: tuple[Path, ...]) -> against_mod.OldSet:
    old = [example for path in paths for example in read_any(path)]
    return against_mod.OldSet([similarity_text(e) for e in old], [e.id for e in old],
                              [normalize_text(exact_text(e)) for e in old])


def _against(run: _Run, old: against_mod.OldSet) -> None:
    started, survivors = time.perf_counter(), []
    for i in run.alive:
        example = run.examples[i]
        hit = old.match(similarity_text(example), normalize_text(exact_text(example)), run.cfg.rouge_threshold)
        if hit is None:
            survivors.append(i)
        else:
            old_id, score, how = hit
            detail = ("same normalised prompt as an earlier record" if how == "exact"
                      else f"ROUGE-L F >= {run.cfg.rouge_threshold} against an earlier record")
            run.drop(i, against_mod.STAGE, against_mod.REASON, detail, duplicate_of=old_id, score=round(score, 4))
    run.stage(against_mod.STAGE, survivors, started, earlier_records=len(old))


async def _judge(run: _Run) -> dict[str, Any]:
    from datagen.llm.endpoint import endpoint

    cfg, started = run.cfg, time.perf_counter()
    sampling = dataclasses.replace(judge.SAMPLING, max_tokens=cfg.judge_max_tokens)
    with endpoint(cfg.llm) as llm_cfg:
        verdicts, ledger = await judge.judge_examples([run.examples[i] for i in run.alive], llm_cfg, sampling)
    survivors = []
    for i, verdict in zip(run.alive, verdicts):
        run.filter_meta(i)["judge"] = verdict.meta()
        if verdict.error:
            run.drop(i, judge.STAGE, verdict.error, verdict.detail)
        elif verdict.score < cfg.judge_min_score:
            run.drop(i, judge.STAGE, "low_judge_score", f"score {verdict.score} < {cfg.judge_min_score}",
                     score=verdict.score)
        else:
            survivors.append(i)
    run.stage("judge", survivors, started, llm=ledger)
    return ledger


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
        from datagen.filter import ray_engine

        ray_engine.require()
    if cfg.judge:
        from datagen.llm.client import resolve_base_urls
        from datagen.prompts import get_template

        resolve_base_urls(cfg.llm)
        for lang in ("en", "zh"):
            get_template(f"{lang}/{judge.TEMPLATE}")


def _started(name: str, run: _Run) -> None:
    log.info("filter %s: started on %d records", name, len(run.alive))


async def run_filter(cfg: FilterConfig) -> dict[str, Any]:
    """Run the enabled stages over every input record; write the outputs; return the stats."""
    total_started = time.perf_counter()
    _preflight(cfg)
    examples: list[Example] = []
    with interruptible():  # one Ctrl-C stops the synchronous stages (issue 24); asyncio.run alone swallows it
        for path in cfg.inputs:
            examples.extend(read_any(path))  # RecordError (path:line) before anything is written
        bench_index = decontaminate_mod.build_index(cfg.decontaminate, cfg.decontaminate_ngram) \
            if cfg.decontaminate else None
        old = _read_against(cfg.against) if cfg.against else None
        make_dirs(cfg.out)  # an unusable --out fails now, not after the work (and judge calls) are done
        run = _Run(cfg, examples)
        for name, used in ((decontaminate_mod.STAGE, bench_index), (against_mod.STAGE, old)):
            if used is not None:  # listed in the stats only when configured: the five stages stay as they were
                run.stages[name] = {"enabled": True}
        if cfg.heuristics:
            _started("heuristics", run)
            _heuristics(run)
        if bench_index is not None:
            _started(decontaminate_mod.STAGE, run)
            _decontaminate(run, bench_index)
        if cfg.exact_dedup:
            _started("exact_dedup", run)
            _exact_dedup(run)
        if old is not None:
            _started(against_mod.STAGE, run)
            _against(run, old)
        if cfg.rouge_dedup:
            _started("rouge_dedup", run)
            _rouge_dedup(run)
        if cfg.embed_dedup:
            _started("embed_dedup", run)
            _embed_dedup(run)
    if cfg.judge and run.alive:
        await _judge(run)

    curated = [examples[i] for i in run.alive]
    rejects = [run.rejected[i] for i in sorted(run.rejected)]
    if len(curated) + len(rejects) != len(examples) or set(run.alive) & set(run.rejected):
        raise AssertionError(f"filter lost track of records: {len(examples)} in, {len(curated)} curated + "
                             f"{len(rejects)} rejected")  # never under -O: this is the stage's contract
    stats = {
        "stage": "filter", "inputs": [str(p) for p in cfg.inputs], "out": str(cfg.out), "records_in": len(examples),
        "curated": len(curated), "kept": len(curated), "rejected": len(rejects),
        "rejects_by_reason": count_reasons(rejects),
        "rejects_by_stage": dict(Counter(r.reject["stage"] for r in rejects)), "stages": run.stages,
        "llm": run.stages["judge"].get("llm"), "seconds": round(time.perf_counter() - total_started, 4),
        "config": cfg.public_dict(),
    }
    out = Path(cfg.out)
    (out / STATS).unlink(missing_ok=True)  # a stale marker must not vouch for half-replaced outputs
    write_jsonl(out / REJECTS, rejects)
    write_jsonl(out / CURATED, curated)
    write_json(out / STATS, stats)  # written last: its presence means the stage finished
    return stats
