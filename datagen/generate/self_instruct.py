"""Self-Instruct (Wang et al. 2022): bootstrap new instructions from seeds, classify them, write instances.

Run it:  datagen self-instruct --seeds seeds/seed_tasks.jsonl --num-instructions 30 --out out/si --base-url embedded

1. Bootstrap. Each request shows 8 in-context tasks (6 human seeds + 2 accepted machine tasks once there are
   any, shuffled) and asks for more; ``batch_size`` requests run concurrently per round. Each answer is parsed
   as a numbered list (the last item dropped when ``finish_reason == "length"``), every candidate filtered
   (length, keyword blacklist, leading punctuation, language, ROUGE-L ≥ 0.7 against the whole pool), and the
   survivors join the pool at once, so later candidates of the same round are checked against them too.
2. Classify each new instruction: the paper asks the model a few-shot "classification task with finite
   output labels?"; a 135M model answers that barely better than a coin, so the decision is
   ``datagen.generate.classify`` (lexical cues + a kNN vote over the labelled seeds, the model's answer only
   breaking ties). Each record keeps the evidence in ``meta.classify``; stats report the agreement with the
   seeds' own labels, leave-one-out.
3. Instances: classification tasks are generated *output-first* (class labels, then an input for each, which
   keeps inputs from all landing on one label); the rest *input-first* (input, then output; empty input
   allowed). Instance filters drop empty outputs, input == output, fields ending in ":", duplicates, an output
   that copies an in-context example's output or label (``copied_in_context``: the label "Unsupport" of the
   output-first prompt's example, given by SmolLM2 to "Write a short story…" once that task had been routed
   output-first), and whole tasks whose same input got conflicting outputs. Each record carries
   ``meta.in_context`` (the example outputs/labels its prompt showed) and ``meta.finish_reason``.

Resumable and reproducible: every raw answer is appended to ``OUT/.state/*.jsonl`` as it arrives, and a
re-run replays the bootstrap rounds from that log with the same seeded RNG, so a killed run ends with exactly
the result of an uninterrupted one, asking the endpoint only for what is missing. A request that failed for
good (retries spent) is a reject with its reason and ``stats.llm.failures``, but not settled: the run builds
nothing more on top of it (no later bootstrap round, no top-up), and a re-run asks it again, then goes on as a
fault-free run would have.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.checkpoint import StageLog, count_reasons, make_reject, write_outputs
from datagen.errors import CircuitOpen, ConfigError, LLMError
from datagen.formats import read_seed_tasks
from datagen.generate import classify
from datagen.generate.parsing import (
    parse_instances_input_first,
    parse_instances_output_first,
    parse_numbered_list,
    parse_yes_no,
)
from datagen.llm.client import Completion, LLMClient, LLMConfig, SamplingParams, map_bounded
from datagen.progress import progress
from datagen.prompts import render, template_ref
from datagen.records import Example, make_dirs, write_jsonl
from datagen.rouge import RougePool
from datagen.text import LANGS, count_units, detect_lang, find_blacklisted, normalize_text, starts_with_punctuation

STAGE = "self-instruct"
STYLES = ("completion", "chat")

#: Length bounds per language, in words (English) or characters (Chinese): keep lo < n ≤ hi.
LENGTH_BOUNDS = {"en": (3, 150), "zh": (5, 300)}


@dataclass(frozen=True)
class SelfInstructConfig:
    """Every knob of the method, defaulted to the paper's values (Wang et al. 2022, §2 and App. A)."""

    seeds: Path                                   # self-instruct seed format JSONL
    out: Path                                     # output folder
    num_instructions: int = 100                   # machine instructions to produce
    lang: str = "en"                              # en | zh: prompts, filters and tokenization
    style: str = "completion"                     # completion (numbered list continued, /v1/completions) | chat
    batch_size: int = 5                           # bootstrap requests in flight per round
    num_prompt_instructions: int = 8              # in-context tasks per request
    num_machine_in_prompt: int = 2                # of which machine-generated, once there are any
    rouge_threshold: float = 0.7                  # reject a candidate with ROUGE-L F ≥ this against the pool
    max_instances: int = 5                        # instances kept per task
    max_rounds: int | None = None                 # bootstrap rounds before giving up; None = 4× the minimum
    classifier_eval_seeds: int = 40               # seeds classified to measure the classifier's agreement
    classify_k: int = 7                           # neighbours in the classification decision's kNN vote
    # Labelled seed files the kNN vote compares with; None = the shipped en + zh seeds plus ``seeds``.
    classify_neighbours: tuple[Path, ...] | None = None
    seed: int = 0                                 # RNG seed for in-context sampling
    # The paper's bootstrap call: temperature 0.7, top_p 0.5, presence_penalty 2 (without it small models
    # repeat one item down the list), stop at a blank line or item 16. 256 tokens hold the 7 items it asks for.
    generate_sampling: SamplingParams = SamplingParams(temperature=0.7, top_p=0.5, max_tokens=256, presence_penalty=2.0,
                                                       stop=("\n\n", "\n16", "16.", "16 ."))
    classify_sampling: SamplingParams = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=3,
                                                       stop=("\n", "Task", "任务"))
    instance_sampling: SamplingParams = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=350,
                                                       stop=("Example 6", "Task:", "任务：", "示例 6"))
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        if self.lang not in LANGS:
            raise ConfigError(f"self_instruct.lang must be one of {list(LANGS)}, got {self.lang!r}")
        if self.style not in STYLES:
            raise ConfigError(f"self_instruct.style must be one of {list(STYLES)}, got {self.style!r}")
        for name in ("num_instructions", "batch_size", "num_prompt_instructions", "max_instances"):
            if getattr(self, name) < 1:
                raise ConfigError(f"self_instruct.{name} must be ≥ 1, got {getattr(self, name)}")
        if not 0 <= self.num_machine_in_prompt <= self.num_prompt_instructions:
            raise ConfigError("self_instruct.num_machine_in_prompt must be between 0 and num_prompt_instructions, "
                              f"got {self.num_machine_in_prompt}")
        if not 0 < self.rouge_threshold <= 1:
            raise ConfigError(f"self_instruct.rouge_threshold must be in (0, 1], got {self.rouge_threshold}")
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ConfigError(f"self_instruct.max_rounds must be ≥ 1, got {self.max_rounds}")

    @property
    def rounds_limit(self) -> int:
        return self.max_rounds or 4 * math.ceil(self.num_instructions / self.batch_size) + 10


# ---------------------------------------------------------------------------------------------- pure steps


def build_bootstrap_prompt(tasks: list[str], cfg: SelfInstructConfig) -> str:
    """The bootstrap prompt for ``tasks`` in the configured language and style."""
    if cfg.style == "completion":
        return render(f"{cfg.lang}/self_instruct_generate", tasks=tasks)
    return render(f"{cfg.lang}/self_instruct_generate_chat", tasks=tasks, num_new=cfg.num_prompt_instructions)


def sample_prompt_tasks(rng: random.Random, seeds: list[dict], machine: list[dict], cfg: SelfInstructConfig) -> list[dict]:
    """6 human + 2 machine tasks (fewer machine ones while the pool has fewer), shuffled — the paper's mix."""
    chosen = rng.sample(machine, min(cfg.num_machine_in_prompt, len(machine)))
    chosen += rng.sample(seeds, min(cfg.num_prompt_instructions - len(chosen), len(seeds)))
    rng.shuffle(chosen)
    return chosen


def clean_instruction(text: str) -> str:
    """Collapse whitespace and capitalise the first letter (only the first: ``str.capitalize`` lowercases names)."""
    text = re.sub(r"\s+", " ", text).strip()
    return text[:1].upper() + text[1:]


def check_instruction(text: str, lang: str) -> tuple[str, Any] | None:
    """The first rule ``text`` breaks as ``(reason, detail)``, or None when it passes (ROUGE-L is separate)."""
    if not text:
        return "empty", None
    lo, hi = LENGTH_BOUNDS[lang]
    units = count_units(text, lang)
    if units <= lo:
        return "too_short", units
    if units > hi:
        return "too_long", units
    lowered = text.lower()
    word = find_blacklisted(text, lang)
    if word:
        return "blacklisted_keyword", word
    if starts_with_punctuation(text, allow_openers=False):  # the paper's rule: no exception for quotes
        return "leading_punctuation", text[0]
    if lang == "en":
        if lowered.startswith("write a program"):
            return "write_a_program", None  # the paper: ambiguous whether to write code or give the result
        if not text[0].isascii():
            return "non_ascii_start", text[0]  # the paper's rule, for English runs only
    if detect_lang(text) != lang:
        return "wrong_language", detect_lang(text)
    return None


def in_context_outputs(prompt: str) -> list[str]:
    """The outputs and class labels the prompt's in-context examples show (what a small model may copy).

    >>> in_context_outputs("Task: t\nClass label: Support\nInput: x\nExample 1\nOutput: 42\nTask: new")
    ['Support', '42']
    """
    return [m.strip() for m in re.findall(r"^(?:Class label|Output|类别标签|输出)[:：][ \t]*(.+)$", prompt, re.M)
            if m.strip()]


def _copied(output: str, in_context: list[str], task_text: str) -> bool:
    """Whether ``output`` repeats an in-context example's output/label that the task itself does not name."""
    norm = normalize_text(output)
    return bool(norm) and any(norm == normalize_text(o) for o in in_context) and norm not in normalize_text(task_text)


def filter_instances(pairs: list[tuple[str, str]], truncated: bool, max_instances: int,
                     in_context: list[str] | None = None, task: str = "") -> tuple[list[tuple[str, str]], list[tuple[tuple[str, str], str]], bool]:
    """Apply the instance filters; returns ``(kept, [(pair, reason)], conflicting)``.

    ``conflicting`` is True when one input got different outputs: the task itself is unreliable, so the
    caller drops it whole. ``in_context`` are the example outputs the prompt showed: an output equal to one
    of them (and not named in ``task`` or its input, as "positive" is in a sentiment task) is a copy.
    """
    dropped: list[tuple[tuple[str, str], str]] = []
    if truncated and pairs:
        dropped.append((pairs[-1], "truncated"))
        pairs = pairs[:-1]
    kept: list[tuple[str, str]] = []
    outputs_by_input: dict[str, set[str]] = defaultdict(set)
    for inp, out in pairs:
        inp, out = inp.strip(), out.strip()
        if not out:
            reason = "empty_output"
        elif inp == out:
            reason = "input_equals_output"
        elif inp.endswith((":", "：")) or out.endswith((":", "：")):
            reason = "ends_with_colon"
        elif (inp, out) in kept:
            reason = "duplicate_instance"
        elif in_context and _copied(out, in_context, f"{task}\n{inp}"):
            reason = "copied_in_context"
        else:
            kept.append((inp, out))
            outputs_by_input[inp].add(out)
            continue
        dropped.append(((inp, out), reason))
    conflicting = any(len(outs) > 1 for inp, outs in outputs_by_input.items() if inp)
    if len(kept) > max_instances:
        dropped += [(p, "over_max_instances") for p in kept[max_instances:]]
        kept = kept[:max_instances]
    return kept, dropped, conflicting


def _key(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


def _log_row(key: str, prompt_hash: str, result: Completion | BaseException) -> dict[str, Any]:
    if isinstance(result, LLMError):
        return {"key": key, "prompt": prompt_hash, "error": result.reason, "detail": str(result)}
    return {"key": key, "prompt": prompt_hash, "text": result.text, "finish_reason": result.finish_reason,
            "model": result.model, "usage": result.usage}


# ---------------------------------------------------------------------------------------------- the stage


class _Run:
    """State of one run: the pool, the logs, the client. Methods are the paper's steps."""

    def __init__(self, cfg: SelfInstructConfig, llm: LLMClient, seeds: list[dict]):
        self.cfg, self.llm, self.seeds = cfg, llm, seeds
        self.pool = RougePool(t["instruction"] for t in seeds)
        self.machine: list[dict[str, Any]] = []
        self.rng = random.Random(cfg.seed)
        self.rounds = 0
        self.rejects: list[Example] = []
        self.calls = Counter()
        # A request of this run failed for good: build nothing more on the answers so far. Its row is not
        # settled, so a resumed run asks it again and then goes on exactly as a fault-free run would have.
        self.failed = False

    async def ask(self, prompt: str, params: SamplingParams, sample_index: int = 0) -> Completion:
        self.calls["requests"] += 1
        if self.cfg.style == "completion":
            return await self.llm.complete(prompt, params, sample_index)
        return await self.llm.chat([{"role": "user", "content": prompt}], params, sample_index)

    async def bootstrap(self, log: StageLog, goal: int) -> None:
        """Run rounds until the pool holds ``goal`` machine tasks (or the round limit is reached)."""
        cfg = self.cfg
        template = f"{cfg.lang}/self_instruct_generate" + ("" if cfg.style == "completion" else "_chat")
        ref = template_ref(template)
        rng = self.rng
        with progress(goal, "self-instruct: bootstrap", initial=min(goal, len(self.machine))) as bar:
            while len(self.machine) < goal and self.rounds < cfg.rounds_limit and not self.failed:
                rounds = self.rounds
                batch = []
                for j in range(cfg.batch_size):
                    tasks = sample_prompt_tasks(rng, self.seeds, self.machine, cfg)
                    prompt = build_bootstrap_prompt([t["instruction"] for t in tasks], cfg)
                    batch.append((f"r{rounds}-{j}", _key(prompt), prompt, tasks))
                for k, h, _, _ in batch:
                    if k in log.done and log.done[k]["prompt"] != h:
                        raise ConfigError(f"{log.path}: state was written by a run with other seeds or settings; "
                                          "use a new --out folder (or delete it) to start over")
                # Each request is its own sample: the same prompt drawn twice must not replay one cached answer.
                missing = [(k, h, p, rounds * cfg.batch_size + j) for j, (k, h, p, _) in enumerate(batch)
                           if k not in log.done]
                answers = await asyncio.gather(*[self.ask(p, cfg.generate_sampling, sample_index=i)
                                                 for _, _, p, i in missing], return_exceptions=True)
                for (k, h, _, _), answer in zip(missing, answers):
                    # A failed request is data (logged, asked again by a re-run); a dead endpoint or a bug
                    # stops the run.
                    if isinstance(answer, BaseException) and (isinstance(answer, CircuitOpen) or not isinstance(answer, LLMError)):
                        raise answer
                    log.append(_log_row(k, h, answer))
                before = len(self.machine)
                for k, _, _, tasks in batch:
                    self._absorb(log.done[k], rounds, tasks, ref, goal)
                # A round with a failed request is the last: later rounds would draw their prompts from a pool
                # that lacks its answer, and could not be replayed once a resumed run has that answer.
                self.failed |= any("error" in log.done[k] for k, _, _, _ in batch)
                bar.update(min(len(self.machine), goal) - min(before, goal))
                self.rounds += 1

    def _absorb(self, row: dict[str, Any], round_: int, tasks: list[dict], ref: dict, goal: int) -> None:
        """Parse one bootstrap answer, filter its candidates, add survivors to the pool."""
        source = {"seeds": [t["id"] for t in tasks if "round" not in t],
                  "machine": [t["instruction"] for t in tasks if "round" in t]}
        if "error" in row:
            self.rejects.append(make_reject(Example(instruction="", output="", meta={"method": STAGE, "round": round_}),
                                            STAGE, f"llm_{row['error']}", row["detail"], step="bootstrap"))
            return
        candidates = parse_numbered_list(row["text"], continuation=self.cfg.style == "completion")
        if row["finish_reason"] == "length" and candidates:
            self._reject(clean_instruction(candidates.pop()), round_, "truncated", None)
        for raw in candidates:
            text = clean_instruction(raw)
            broken = check_instruction(text, self.cfg.lang)
            if broken:
                self._reject(text, round_, *broken)
                continue
            if len(self.machine) >= goal:
                self._reject(text, round_, "over_target", None)
                continue
            top = self.pool.top_k(text, 10)
            if top and top[0][1] >= self.cfg.rouge_threshold:
                self._reject(text, round_, "near_duplicate", {"similar": self.pool[top[0][0]], "rougeL": top[0][1]})
                continue
            similar = [[self.pool[i], round(score, 4)] for i, score in top]
            self.pool.add(text)
            self.machine.append({"instruction": text, "round": round_, "similar": similar, "source": source,
                                 "model": row["model"], "prompt": ref, "usage": row["usage"]})

    def _reject(self, text: str, round_: int, reason: str, detail: Any) -> None:
        self.rejects.append(make_reject(Example(instruction=text, output="", lang=self.cfg.lang,
                                                meta={"method": STAGE, "round": round_}),
                                        STAGE, reason, detail, step="bootstrap"))

    async def answer_all(self, log: StageLog, jobs: list[tuple[str, str, SamplingParams]], desc: str) -> None:
        """Ask every ``(key, prompt, params)`` job not yet in ``log``, appending answers as they arrive."""
        todo = [job for job in jobs if job[0] not in log.done]

        async def one(job: tuple[str, str, SamplingParams]) -> Completion:
            return await self.ask(job[1], job[2])
        with progress(len(jobs), desc, initial=len(jobs) - len(todo)) as bar:
            async for (key, prompt, _), result in map_bounded(one, todo, limit=self.cfg.llm.gather_limit):
                log.append(_log_row(key, _key(prompt), result))
                self.failed |= isinstance(result, LLMError)
                bar.update()


def classify_prompt(instruction: str, lang: str) -> str:
    return render(f"{lang}/self_instruct_classify", instruction=instruction)


def instance_prompt(instruction: str, is_classification: bool, lang: str, prefill: bool = True) -> str:
    """The instance prompt; for a classification task that names its labels, the answer is started with the
    first of them (``label_prefill``), so the model continues with the task's labels, not an example's."""
    name = "self_instruct_output_first" if is_classification else "self_instruct_input_first"
    prompt = render(f"{lang}/{name}", instruction=instruction) + "\n"
    return prompt + (label_prefill(instruction, lang) if is_classification and prefill else "")


def label_prefill(instruction: str, lang: str) -> str:
    """``"Class label: <first label the task names>\n"`` (``类别标签：…`` in Chinese), or ``""``.

    >>> label_prefill("Is the number even or odd?", "en")
    'Class label: even\\n'
    """
    labels = classify.class_labels(instruction, lang)
    return f"{'类别标签：' if lang == 'zh' else 'Class label: '}{labels[0]}\n" if labels else ""


async def generate(cfg: SelfInstructConfig) -> dict[str, Any]:
    """Run the whole method; returns the stats also written to ``OUT/stats.json``.

    Some tasks end with no valid instance (the model repeated the input, contradicted itself…). So the run
    tops up: it bootstraps more instructions for the shortfall and repeats steps 2–3 until
    ``num_instructions`` tasks have instances or the round limit is hit. Every decision depends only on
    logged answers, so a resumed run takes the same path.
    """
    started = time.monotonic()
    seeds = read_seed_tasks(cfg.seeds)  # validates the whole file before anything is written
    out = cfg.out
    eval_seeds = [t for t in seeds if isinstance(t.get("is_classification"), bool)]
    eval_seeds = random.Random(cfg.seed).sample(eval_seeds, min(cfg.classifier_eval_seeds, len(eval_seeds)))
    decisions: dict[str, classify.Decision] = {}
    index_holder: list[classify.NeighbourIndex] = []  # built once, on first use (loads the encoder)
    async with LLMClient(cfg.llm) as llm:
        make_dirs(out)  # an unusable --out fails here, before any request is paid for
        run = _Run(cfg, llm, seeds)
        with StageLog(out, "bootstrap", keep=_settled) as boot_log, \
                StageLog(out, "classify", keep=_settled) as clf_log, \
                StageLog(out, "instances", keep=_settled) as inst_log:
            goal = cfg.num_instructions
            while True:
                await run.bootstrap(boot_log, goal)
                # Step 2: classify new tasks (and, to measure agreement, a sample of labelled seeds).
                to_classify = [m["instruction"] for m in run.machine] + [t["instruction"] for t in eval_seeds]
                await run.answer_all(clf_log, [(_key("clf", t), classify_prompt(t, cfg.lang), cfg.classify_sampling)
                                               for t in dict.fromkeys(to_classify)], "self-instruct: classify")
                model_votes = {t: _decision(clf_log.done[_key("clf", t)]) for t in to_classify}
                decisions.update(_decide(cfg, seeds, [t for t in dict.fromkeys(to_classify) if t not in decisions],
                                         model_votes, index_holder))
                for task in run.machine:
                    decision = decisions[task["instruction"]]
                    task["is_classification"] = decision.is_classification
                    task["classify"] = decision.evidence()
                # Step 3: instances, output-first for classification tasks, input-first for the rest.
                await run.answer_all(inst_log, [(_instance_key(m), instance_prompt(m["instruction"], m["is_classification"],
                                                                                   cfg.lang), cfg.instance_sampling)
                                                for m in run.machine], "self-instruct: instances")
                valid = sum(1 for m in run.machine if _instances(cfg, m, inst_log.done[_instance_key(m)])[0])
                # No top-up for a shortfall of failed requests: a resumed run asks them again instead.
                if valid >= cfg.num_instructions or run.rounds >= cfg.rounds_limit or len(run.machine) < goal \
                        or run.failed:
                    break
                goal = len(run.machine) + cfg.num_instructions - valid
        ledger = llm.ledger.as_dict()

    records, tasks_out = _assemble(cfg, run, inst_log)
    write_jsonl(out / "machine_instructions.jsonl", [
        {"instruction": m["instruction"], "round": m["round"], "most_similar_instructions": dict(m["similar"]),
         "avg_similarity_score": round(sum(s for _, s in m["similar"]) / max(1, len(m["similar"])), 4),
         "source": m["source"]} for m in run.machine])
    write_jsonl(out / "is_clf.jsonl", [{"instruction": m["instruction"], "is_classification": m["is_classification"]}
                                       for m in run.machine])
    write_jsonl(out / "instances.jsonl", tasks_out)
    stats = {"stage": STAGE, "lang": cfg.lang, "style": cfg.style, "seeds": len(seeds), "rounds": run.rounds,
             "machine_instructions": len(run.machine), "tasks_with_instances": len(tasks_out),
             "target_reached": len(tasks_out) >= cfg.num_instructions,
             "routes": dict(Counter(t["is_classification"] and "output_first" or "input_first" for t in tasks_out)),
             "classifier_agreement": _agreement(eval_seeds, {t: d.is_classification for t, d in decisions.items()}),
             "model_agreement": _agreement(eval_seeds, {t: d.model for t, d in decisions.items()}),
             "instruction_rejects": count_reasons(r for r in run.rejects if r.reject.get("step") == "bootstrap"),
             "llm": ledger, "seconds": round(time.monotonic() - started, 3)}
    return write_outputs(out, records, run.rejects, stats)


def _settled(row: dict[str, Any]) -> bool:
    """Whether a logged answer stays settled on resume: a request that failed for good is asked again."""
    return "error" not in row


def _instance_key(task: dict[str, Any]) -> str:
    return _key("inst", task["instruction"], task["is_classification"])


def _in_context(cfg: SelfInstructConfig, task: dict[str, Any]) -> list[str]:
    return in_context_outputs(instance_prompt(task["instruction"], task["is_classification"], cfg.lang, prefill=False))


def _instances(cfg: SelfInstructConfig, task: dict[str, Any], row: dict[str, Any]):
    """Parse and filter one task's instances: ``(kept, dropped, conflicting)``; nothing kept after an LLM error."""
    if "error" in row:
        return [], [], False
    parse = parse_instances_output_first if task["is_classification"] else parse_instances_input_first
    text = (label_prefill(task["instruction"], cfg.lang) if task["is_classification"] else "") + row["text"]
    kept, dropped, conflicting = filter_instances(parse(text, cfg.lang), row["finish_reason"] == "length",
                                                  cfg.max_instances, _in_context(cfg, task), task["instruction"])
    return ([] if conflicting else kept), dropped, conflicting


def _decision(row: dict[str, Any]) -> bool | None:
    return None if "error" in row else parse_yes_no(row["text"])


def _decide(cfg: SelfInstructConfig, seeds: list[dict], texts: list[str], model_votes: dict[str, bool | None],
            index_holder: list[classify.NeighbourIndex]) -> dict[str, classify.Decision]:
    """The classification decision for ``texts`` (the neighbour index is built on first use).

    A seed is never its own neighbour (``NeighbourIndex`` skips equal texts), so the agreement measured on
    ``eval_seeds`` is leave-one-out.
    """
    if not texts:
        return {}
    if not index_holder:
        paths = cfg.classify_neighbours if cfg.classify_neighbours is not None else classify.DEFAULT_NEIGHBOURS
        labelled = classify.labelled_tasks(paths) + [(t["instruction"], t["is_classification"]) for t in seeds
                                                     if isinstance(t.get("is_classification"), bool)]
        index_holder.append(classify.NeighbourIndex(labelled, k=cfg.classify_k))
    found = classify.decide(texts, index_holder[0], [model_votes.get(t) for t in texts], cfg.lang)
    return dict(zip(texts, found))


def _agreement(eval_seeds: list[dict], decisions: dict[str, bool | None]) -> dict[str, Any] | None:
    """How often a decision agrees with the seeds' own ``is_classification`` labels (``rate`` = accuracy)."""
    if not eval_seeds:
        return None
    found = classify.agreement([bool(t["is_classification"]) for t in eval_seeds],
                               [decisions.get(t["instruction"]) for t in eval_seeds])
    return {**found, "rate": found["accuracy"], "unparsed": found["unanswered"]}


def _assemble(cfg: SelfInstructConfig, run: _Run, inst_log: StageLog) -> tuple[list[Example], list[dict[str, Any]]]:
    """Final records (and seed-format tasks) from the first ``num_instructions`` tasks with valid instances."""
    records: list[Example] = []
    tasks_out: list[dict[str, Any]] = []
    for index, task in enumerate(run.machine):
        instruction, is_clf = task["instruction"], task["is_classification"]
        row = inst_log.done[_instance_key(task)]
        meta = {"method": STAGE, "round": task["round"], "model": task["model"], "prompt": task["prompt"],
                "source": task["source"], "similar": task["similar"], "usage": task["usage"],
                "route": "output_first" if is_clf else "input_first", "classify": task["classify"],
                "in_context": _in_context(cfg, task)}
        if "error" not in row:
            # Of the instance kept: when the reply hit max_tokens its last instance is dropped as truncated,
            # and every kept one ended before the cut. The reply's own reason stays in response_finish_reason.
            meta["finish_reason"] = "stop" if row["finish_reason"] == "length" else row["finish_reason"]
            meta["response_finish_reason"] = row["finish_reason"]
        if "error" in row:
            run.rejects.append(make_reject(Example(instruction=instruction, output="", meta=meta), STAGE,
                                           f"llm_{row['error']}", row["detail"], step="instances"))
            continue
        kept, dropped, conflicting = _instances(cfg, task, row)
        for (inp, out), reason in dropped:
            run.rejects.append(make_reject(Example(instruction=instruction, input=inp, output=out, meta=meta),
                                           STAGE, reason, None, step="instances"))
        if not kept or len(tasks_out) >= cfg.num_instructions:
            reason = "conflicting_outputs" if conflicting else "no_valid_instances" if not kept else "over_target"
            run.rejects.append(make_reject(Example(instruction=instruction, output="", meta=meta), STAGE, reason,
                                           {"raw": row["text"][:500]}, step="task"))
            continue
        tasks_out.append({"id": f"machine_task_{index}", "name": f"machine_task_{index}", "instruction": instruction,
                          "instances": [{"input": i, "output": o} for i, o in kept], "is_classification": is_clf})
        records += [Example(instruction=instruction, input=i, output=o, is_classification=is_clf, lang=cfg.lang,
                            meta=meta) for i, o in kept]
    return records, tasks_out
