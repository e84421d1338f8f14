"""``datagen run --dry-run``: what each stage of a run will ask the LLM for, and what it may cost, before paying.

    datagen run configs/seeds-to-sft.yaml --dry-run

For every stage that calls an LLM, each step's request count comes from the config and the inputs (seed
tasks, document chunks, graph samples), and its prompt tokens from the stage's own prompt builder applied
to a real input, counted with the model's tokenizer where it is known here (the embedded model) and at ~4
characters a token elsewhere. Answers are counted at ``max_tokens``, and steps whose count depends on what
the model answers (Self-Instruct's bootstrap rounds, Self-QA's answers, multi-turn conversations) at their
configured upper bound, so the estimate is a ceiling, never a floor. Answers already in the cache are not
discounted: the estimate is for a fresh run.

    >>> Step("self_qa", "answers", requests=4, prompt_tokens=300, completion_tokens=160).total_tokens
    1840
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datagen.llm.client import LLMConfig
from datagen.llm.costs import cost, price_of
from datagen.stages import Stage


@dataclass
class Step:
    """One step of a stage: ``requests`` requests of ``prompt_tokens`` each (mean), answers of at most
    ``completion_tokens`` each."""

    stage: str
    step: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.requests * (self.prompt_tokens + self.completion_tokens)


def estimate_run(stages: list[tuple[Stage, Any]], llm: LLMConfig) -> list[Step]:
    """Steps of every LLM stage in ``stages`` (``(stage, config)`` pairs: ``run.load_plan``'s ``Plan.stages``)."""
    count = _token_counter(llm)
    steps: list[Step] = []
    for spec, cfg in stages:
        estimator = _ESTIMATORS.get(spec.name)
        if estimator is None or not spec.uses_llm(cfg):
            continue
        steps += estimator(cfg, count, steps)
    price = price_of(llm.prices, llm.model or "")
    discount = llm.batch_discount if llm.batch != "off" else 0.0
    for step in steps:
        if price is not None:
            step.cost_usd = round(
                cost(
                    price,
                    step.requests * step.prompt_tokens,
                    step.requests * step.completion_tokens,
                    discount=discount,
                ),
                6,
            )
    return steps


def render_table(steps: list[Step]) -> str:
    """The estimate as a text table, one row per step and a total."""
    rows = [("stage", "step", "requests ≤", "prompt tokens", "answer tokens ≤", "cost USD ≤")]
    rows += [
        (
            s.stage,
            s.step,
            str(s.requests),
            str(s.requests * s.prompt_tokens),
            str(s.requests * s.completion_tokens),
            "-" if s.cost_usd is None else f"{s.cost_usd:.4f}",
        )
        for s in steps
    ]
    costs = [s.cost_usd for s in steps]
    rows.append(
        (
            "total",
            "",
            str(sum(s.requests for s in steps)),
            str(sum(s.requests * s.prompt_tokens for s in steps)),
            str(sum(s.requests * s.completion_tokens for s in steps)),
            "-" if not steps or None in costs else f"{sum(costs):.4f}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


# ---------------------------------------------------------------------------------------------- counting


def _token_counter(llm: LLMConfig) -> Callable[[Any], int]:
    """Tokens of a prompt (text or messages): the embedded model's tokenizer, else ~4 characters a token."""
    if "embedded" in llm.base_urls:
        try:
            from transformers import AutoTokenizer

            from datagen.llm.local import resolve_model_dir

            tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_dir(None)))
        except Exception:  # noqa: BLE001 - no converted model here: the estimate falls back to characters
            tokenizer = None
        if tokenizer is not None:

            def count(prompt: Any) -> int:
                if not isinstance(prompt, str):  # the chat template's rendering is what the model reads
                    prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])

            return count

    def approximate(prompt: Any) -> int:
        text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
        return len(text) // 4 + (0 if isinstance(prompt, str) else 4 * len(prompt))

    return approximate


def _mean(values: list[int]) -> int:
    return round(sum(values) / len(values)) if values else 0


# ---------------------------------------------------------------------------------------------- stages


def _self_instruct(cfg: Any, count: Callable[[Any], int], _: list[Step]) -> list[Step]:
    from datagen.formats import read_seed_tasks
    from datagen.generate import self_instruct as si

    seeds = read_seed_tasks(cfg.seeds)
    rng = random.Random(cfg.seed)
    shown = [
        si.build_bootstrap_prompt(
            [t["instruction"] for t in rng.sample(seeds, min(len(seeds), cfg.num_prompt_instructions))], cfg
        )
        for _ in range(5)
    ]
    sample = [t["instruction"] for t in seeds[:20]]
    labelled = sum(1 for t in seeds if isinstance(t.get("is_classification"), bool))
    classify = cfg.num_instructions + min(cfg.classifier_eval_seeds, labelled)
    return [
        Step(
            "self_instruct",
            "bootstrap",
            cfg.rounds_limit * cfg.batch_size,
            _mean([count(p) for p in shown]),
            cfg.generate_sampling.max_tokens,
        ),
        Step(
            "self_instruct",
            "classify",
            classify,
            _mean([count(si.classify_prompt(t, cfg.lang)) for t in sample]),
            cfg.classify_sampling.max_tokens,
        ),
        Step(
            "self_instruct",
            "instances",
            cfg.num_instructions,
            _mean([count(si.instance_prompt(t, False, cfg.lang)) for t in sample]),
            cfg.instance_sampling.max_tokens,
        ),
    ]


def _self_qa(cfg: Any, count: Callable[[Any], int], _: list[Step]) -> list[Step]:
    from datagen.generate import self_qa as qa
    from datagen.generate.documents import load_documents

    docs, _skipped = load_documents(cfg.docs, cfg.text_field)
    chunks, _counts = qa.select_chunks(docs, cfg)
    langs = [qa.chunk_lang(c, cfg.lang) for c in chunks]
    questions = [count(qa.build_question_messages(c, lang, cfg.questions_per_chunk)) for c, lang in zip(chunks, langs)]
    answers = [count(qa.build_answer_messages(c, lang, "?" * 60)) for c, lang in zip(chunks, langs)]
    return [
        Step("self_qa", "questions", len(chunks), _mean(questions), cfg.question_sampling.max_tokens),
        Step("self_qa", "answers", len(chunks) * cfg.questions_per_chunk, _mean(answers), cfg.sampling.max_tokens),
    ]


def _self_kg(cfg: Any, count: Callable[[Any], int], _: list[Step]) -> list[Step]:
    from datagen.generate import self_kg as kg
    from datagen.generate.graph import load_graph
    from datagen.generate.kg_sampling import FactIndex, KGSampler

    G = load_graph(
        cfg.graph,
        cfg.labels,
        skip_bad_rows=cfg.skip_bad_rows,
        keep_self_loops=cfg.keep_self_loops,
        dangling=cfg.dangling,
    )
    samples = KGSampler(G, seed=cfg.seed, max_facts=cfg.max_facts, index=FactIndex(G)).sample(cfg.num, cfg.patterns)
    prompts = [count(kg.build_messages(s, G, cfg.lang)) for s in samples[:50]]
    return [Step("self_kg", "verbalise", len(samples), _mean(prompts), cfg.sampling.max_tokens)]


def _multiturn(cfg: Any, count: Callable[[Any], int], _: list[Step]) -> list[Step]:
    from datagen.generate import multiturn as mt

    seeds = mt.read_seed_dialogues(cfg.seeds)
    opener = count(mt.build_opener_prompt([s["instruction"] for s in seeds[: cfg.num_prompt_instructions]], cfg))
    later_turns = cfg.num_conversations * (cfg.max_turns - 1)
    # A conversation's prompts grow turn by turn: count the last turn's, an upper bound for every turn.
    context = (cfg.context_chars + 200) * cfg.max_turns // 4
    return [
        Step(
            "self_instruct_multiturn",
            "openers",
            cfg.rounds_limit * cfg.batch_size,
            opener,
            cfg.opener_sampling.max_tokens,
        ),
        Step(
            "self_instruct_multiturn",
            "answers",
            cfg.num_conversations * cfg.max_turns,
            context,
            cfg.answer_sampling.max_tokens,
        ),
        Step("self_instruct_multiturn", "follow-ups", later_turns, context, cfg.followup_sampling.max_tokens),
    ]


def _judge(cfg: Any, count: Callable[[Any], int], earlier: list[Step]) -> list[Step]:
    from datagen.filter import judge
    from datagen.records import Example

    # Every generated record is judged once: at most one record per answer the generators ask for, each of
    # at most the answer budget (a word is ~1.3 tokens: 3 characters a token is generous).
    records = sum(s.requests for s in earlier if s.step in ("instances", "answers", "verbalise"))
    longest = max((s.completion_tokens for s in earlier), default=256)
    prompt = count(judge.judge_messages(Example(instruction="x" * 200, output="x" * 3 * longest)))
    return [Step("filter", "judge", records, prompt, cfg.judge_max_tokens)]


_ESTIMATORS: dict[str, Callable[[Any, Callable[[Any], int], list[Step]], list[Step]]] = {
    "self_instruct": _self_instruct,
    "self_instruct_multiturn": _multiturn,
    "self_qa": _self_qa,
    "self_kg": _self_kg,
    "filter": _judge,
}
