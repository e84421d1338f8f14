"""Self-Instruct (Wang et al. 2022): bootstrap new instructions from seeds, classify them, write instances.

Run it:  datagen self-instruct --seeds seeds/seed_tasks.jsonl --num-instructions 30 --out out/si --base-url embedded

1. Bootstrap (``generate/bootstrap.py``): rounds of ``batch_size`` requests, each showing 8 in-context tasks
   (6 seeds + 2 machine ones), asking for more; candidates are filtered (length, blacklist, punctuation,
   language, ROUGE-L ≥ 0.7 against the whole pool) and survivors join the pool at once.
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

Resumable and reproducible: every raw answer is logged as it arrives (``datagen.step``) and a re-run replays
the rounds with the same seeded RNG, so a killed run ends with exactly the result of an uninterrupted one. A
request that failed for good is a reject, but not settled: the run builds nothing more on top of it (no later
round, no top-up), and a re-run asks it again, then goes on as a fault-free run would have.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.checkpoint import count_reasons, make_reject, write_outputs
from datagen.formats import read_seed_tasks
from datagen.generate import classify
from datagen.generate.bootstrap import Bootstrap, check_config, prompt_template
from datagen.generate.parsing import (
    parse_instances_input_first,
    parse_instances_output_first,
    parse_yes_no,
)
from datagen.llm.client import LLMClient, LLMConfig, SamplingParams
from datagen.prompts import render, template_ref
from datagen.records import Example, make_dirs, write_jsonl
from datagen.step import Step, answer_row, as_request, ask
from datagen.text import normalize_text

STAGE = "self-instruct"


@dataclass(frozen=True)
class SelfInstructConfig:
    """Every knob of the method, defaulted to the paper's values (Wang et al. 2022, §2 and App. A)."""

    seeds: Path  # self-instruct seed format JSONL
    out: Path  # output folder
    num_instructions: int = 100  # machine instructions to produce
    lang: str = "en"  # en | zh: prompts, filters and tokenization
    style: str = "completion"  # completion (numbered list continued, /v1/completions) | chat
    batch_size: int = 5  # bootstrap requests in flight per round
    num_prompt_instructions: int = 8  # in-context tasks per request
    num_machine_in_prompt: int = 2  # of which machine-generated, once there are any
    rouge_threshold: float = 0.7  # reject a candidate with ROUGE-L F ≥ this against the pool
    max_instances: int = 5  # instances kept per task
    max_rounds: int | None = None  # bootstrap rounds before giving up; None = 4× the minimum
    classifier_eval_seeds: int = 40  # seeds classified to measure the classifier's agreement
    classify_k: int = 7  # neighbours in the classification decision's kNN vote
    # Labelled seed files the kNN vote compares with; None = the shipped en + zh seeds plus ``seeds``.
    classify_neighbours: tuple[Path, ...] | None = None
    seed: int = 0  # RNG seed for in-context sampling
    # The paper's bootstrap call: temperature 0.7, top_p 0.5, presence_penalty 2 (without it small models
    # repeat one item down the list), stop at a blank line or item 16. 256 tokens hold the 7 items it asks for.
    generate_sampling: SamplingParams = SamplingParams(
        temperature=0.7, top_p=0.5, max_tokens=256, presence_penalty=2.0, stop=("\n\n", "\n16", "16.", "16 .")
    )
    classify_sampling: SamplingParams = SamplingParams(
        temperature=0.0, top_p=1.0, max_tokens=3, stop=("\n", "Task", "任务")
    )
    instance_sampling: SamplingParams = SamplingParams(
        temperature=0.0, top_p=1.0, max_tokens=350, stop=("Example 6", "Task:", "任务：", "示例 6")
    )
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        check_config(self, "self_instruct", ("num_instructions", "max_instances"))

    @property
    def rounds_limit(self) -> int:
        return self.max_rounds or 4 * math.ceil(self.num_instructions / self.batch_size) + 10


# ---------------------------------------------------------------------------------------------- pure steps


def build_bootstrap_prompt(tasks: list[str], cfg: SelfInstructConfig) -> str:
    """The bootstrap prompt for ``tasks`` in the configured language and style."""
    return render(prompt_template(cfg, "self_instruct_generate"), tasks=tasks, num_new=cfg.num_prompt_instructions)


def in_context_outputs(prompt: str) -> list[str]:
    """The outputs and class labels the prompt's in-context examples show (what a small model may copy).

    >>> in_context_outputs("Task: t\nClass label: Support\nInput: x\nExample 1\nOutput: 42\nTask: new")
    ['Support', '42']
    """
    return [
        m.strip()
        for m in re.findall(r"^(?:Class label|Output|类别标签|输出)[:：][ \t]*(.+)$", prompt, re.M)
        if m.strip()
    ]


def _copied(output: str, in_context: list[str], task_text: str) -> bool:
    """Whether ``output`` repeats an in-context example's output/label that the task itself does not name."""
    norm = normalize_text(output)
    return bool(norm) and any(norm == normalize_text(o) for o in in_context) and norm not in normalize_text(task_text)


def filter_instances(
    pairs: list[tuple[str, str]],
    truncated: bool,
    max_instances: int,
    in_context: list[str] | None = None,
    task: str = "",
) -> tuple[list[tuple[str, str]], list[tuple[tuple[str, str], str]], bool]:
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


# ---------------------------------------------------------------------------------------------- the stage


class _Run(Bootstrap):
    """State of one run: the pool, the client, the rejects. Methods are the paper's steps."""

    def __init__(self, cfg: SelfInstructConfig, llm: LLMClient, seeds: list[dict]):
        super().__init__(
            cfg,
            llm,
            seeds,
            stage=STAGE,
            step="bootstrap",
            digest=_key,
            sampling=cfg.generate_sampling,
            prompt=lambda tasks: build_bootstrap_prompt(tasks, cfg),
            failure_lang=None,
        )

    async def answer_all(self, log: Step, jobs: list[tuple[str, str, SamplingParams]], desc: str) -> None:
        """Ask every ``(key, prompt, params)`` job not yet in ``log``, appending answers as they arrive."""
        await log.answer(
            jobs,
            key=lambda job: job[0],
            ask=lambda job: ask(self.llm, *as_request(self.cfg.style, job[1]), job[2]),
            row=lambda job, result: answer_row(job[0], result, "error", prompt=_key(job[1])),
            limit=self.cfg.llm.gather_limit,
            desc=desc,
        )
        self.failed |= any(not log.lasts(log.done[job[0]]) for job in jobs)


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
        with Step(out, "bootstrap") as boot_log, Step(out, "classify") as clf_log, Step(out, "instances") as inst_log:
            goal = cfg.num_instructions
            while True:
                await run.grow(boot_log, goal, "self-instruct: bootstrap")
                # Step 2: classify new tasks (and, to measure agreement, a sample of labelled seeds).
                to_classify = [m["instruction"] for m in run.machine] + [t["instruction"] for t in eval_seeds]
                await run.answer_all(
                    clf_log,
                    [
                        (_key("clf", t), classify_prompt(t, cfg.lang), cfg.classify_sampling)
                        for t in dict.fromkeys(to_classify)
                    ],
                    "self-instruct: classify",
                )
                model_votes = {t: _decision(clf_log.done[_key("clf", t)]) for t in to_classify}
                decisions.update(
                    _decide(
                        cfg,
                        seeds,
                        [t for t in dict.fromkeys(to_classify) if t not in decisions],
                        model_votes,
                        index_holder,
                    )
                )
                for task in run.machine:
                    decision = decisions[task["instruction"]]
                    task["is_classification"] = decision.is_classification
                    task["classify"] = decision.evidence()
                # Step 3: instances, output-first for classification tasks, input-first for the rest.
                await run.answer_all(
                    inst_log,
                    [
                        (
                            _instance_key(m),
                            instance_prompt(m["instruction"], m["is_classification"], cfg.lang),
                            cfg.instance_sampling,
                        )
                        for m in run.machine
                    ],
                    "self-instruct: instances",
                )
                valid = sum(1 for m in run.machine if _instances(cfg, m, inst_log.done[_instance_key(m)])[0])
                # No top-up for a shortfall of failed requests: a resumed run asks them again instead.
                if (
                    valid >= cfg.num_instructions
                    or run.rounds >= cfg.rounds_limit
                    or len(run.machine) < goal
                    or run.failed
                ):
                    break
                goal = len(run.machine) + cfg.num_instructions - valid
        ledger = llm.ledger.as_dict()

    records, tasks_out = _assemble(cfg, run, inst_log)
    write_jsonl(
        out / "machine_instructions.jsonl",
        [
            {
                "instruction": m["instruction"],
                "round": m["round"],
                "most_similar_instructions": dict(m["similar"]),
                "avg_similarity_score": round(sum(s for _, s in m["similar"]) / max(1, len(m["similar"])), 4),
                "source": m["source"],
            }
            for m in run.machine
        ],
    )
    write_jsonl(
        out / "is_clf.jsonl",
        [{"instruction": m["instruction"], "is_classification": m["is_classification"]} for m in run.machine],
    )
    write_jsonl(out / "instances.jsonl", tasks_out)
    stats = {
        "stage": STAGE,
        "lang": cfg.lang,
        "style": cfg.style,
        "seeds": len(seeds),
        "rounds": run.rounds,
        "machine_instructions": len(run.machine),
        "tasks_with_instances": len(tasks_out),
        "target_reached": len(tasks_out) >= cfg.num_instructions,
        "routes": dict(Counter(t["is_classification"] and "output_first" or "input_first" for t in tasks_out)),
        "classifier_agreement": _agreement(eval_seeds, {t: d.is_classification for t, d in decisions.items()}),
        "model_agreement": _agreement(eval_seeds, {t: d.model for t, d in decisions.items()}),
        "instruction_rejects": count_reasons(r for r in run.rejects if r.reject.get("step") == "bootstrap"),
        "llm": ledger,
        "seconds": round(time.monotonic() - started, 3),
    }
    return write_outputs(out, records, run.rejects, stats)


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
    kept, dropped, conflicting = filter_instances(
        parse(text, cfg.lang),
        row["finish_reason"] == "length",
        cfg.max_instances,
        _in_context(cfg, task),
        task["instruction"],
    )
    return ([] if conflicting else kept), dropped, conflicting


def _decision(row: dict[str, Any]) -> bool | None:
    return None if "error" in row else parse_yes_no(row["text"])


def _decide(
    cfg: SelfInstructConfig,
    seeds: list[dict],
    texts: list[str],
    model_votes: dict[str, bool | None],
    index_holder: list[classify.NeighbourIndex],
) -> dict[str, classify.Decision]:
    """The classification decision for ``texts`` (the neighbour index is built on first use).

    A seed is never its own neighbour (``NeighbourIndex`` skips equal texts), so the agreement measured on
    ``eval_seeds`` is leave-one-out.
    """
    if not texts:
        return {}
    if not index_holder:
        paths = cfg.classify_neighbours if cfg.classify_neighbours is not None else classify.DEFAULT_NEIGHBOURS
        labelled = classify.labelled_tasks(paths) + [
            (t["instruction"], t["is_classification"]) for t in seeds if isinstance(t.get("is_classification"), bool)
        ]
        index_holder.append(classify.NeighbourIndex(labelled, k=cfg.classify_k))
    found = classify.decide(texts, index_holder[0], [model_votes.get(t) for t in texts], cfg.lang)
    return dict(zip(texts, found))


def _agreement(eval_seeds: list[dict], decisions: dict[str, bool | None]) -> dict[str, Any] | None:
    """How often a decision agrees with the seeds' own ``is_classification`` labels (``rate`` = accuracy)."""
    if not eval_seeds:
        return None
    found = classify.agreement(
        [bool(t["is_classification"]) for t in eval_seeds], [decisions.get(t["instruction"]) for t in eval_seeds]
    )
    return {**found, "rate": found["accuracy"], "unparsed": found["unanswered"]}


def _assemble(cfg: SelfInstructConfig, run: _Run, inst_log: Step) -> tuple[list[Example], list[dict[str, Any]]]:
    """Final records (and seed-format tasks) from the first ``num_instructions`` tasks with valid instances."""
    records: list[Example] = []
    tasks_out: list[dict[str, Any]] = []
    prompt = template_ref(prompt_template(cfg, "self_instruct_generate"))
    for index, task in enumerate(run.machine):
        instruction, is_clf = task["instruction"], task["is_classification"]
        row = inst_log.done[_instance_key(task)]
        meta = {
            "method": STAGE,
            "round": task["round"],
            "model": task["model"],
            "prompt": prompt,
            "source": task["source"],
            "similar": task["similar"],
            "usage": task["usage"],
            "route": "output_first" if is_clf else "input_first",
            "classify": task["classify"],
            "in_context": _in_context(cfg, task),
        }
        if "error" in row:
            run.rejects.append(
                make_reject(
                    Example(instruction=instruction, output="", meta=meta),
                    STAGE,
                    f"llm_{row['error']}",
                    row["detail"],
                    step="instances",
                )
            )
            continue
        # Of the instance kept: when the reply hit max_tokens its last instance is dropped as truncated,
        # and every kept one ended before the cut. The reply's own reason stays in response_finish_reason.
        meta["finish_reason"] = "stop" if row["finish_reason"] == "length" else row["finish_reason"]
        meta["response_finish_reason"] = row["finish_reason"]
        kept, dropped, conflicting = _instances(cfg, task, row)
        for (inp, out), reason in dropped:
            run.rejects.append(
                make_reject(
                    Example(instruction=instruction, input=inp, output=out, meta=meta),
                    STAGE,
                    reason,
                    None,
                    step="instances",
                )
            )
        if not kept or len(tasks_out) >= cfg.num_instructions:
            reason = "conflicting_outputs" if conflicting else "no_valid_instances" if not kept else "over_target"
            run.rejects.append(
                make_reject(
                    Example(instruction=instruction, output="", meta=meta),
                    STAGE,
                    reason,
                    {"raw": row["text"][:500]},
                    step="task",
                )
            )
            continue
        tasks_out.append(
            {
                "id": f"machine_task_{index}",
                "name": f"machine_task_{index}",
                "instruction": instruction,
                "instances": [{"input": i, "output": o} for i, o in kept],
                "is_classification": is_clf,
            }
        )
        records += [
            Example(instruction=instruction, input=i, output=o, is_classification=is_clf, lang=cfg.lang, meta=meta)
            for i, o in kept
        ]
    return records, tasks_out
