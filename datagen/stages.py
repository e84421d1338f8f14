"""The stages of a run, in order: the one table that the runner (``run.py``: configs, fingerprints, manifest),
the report and the command line read. A row is plain data, module paths as text: reading it imports no stage.

    >>> [stage.name for stage in STAGES if stage.generator]
    ['self_instruct', 'self_instruct_multiturn', 'self_qa', 'self_kg']
    >>> STAGE["filter"].stats
    'filter_stats.json'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

_GENERATED = ("records.jsonl", "rejects.jsonl", "stats.json")


@dataclass(frozen=True)
class Stage:
    """One stage: ``run(cfg) -> stats`` in its module, the frozen dataclass ``cfg`` is, and the files around it."""

    name: str  # its section in a run config, and its folder in a run
    config: str  # "module:Class" of its config dataclass
    run: str  # "module:function" that runs it and returns its stats (a coroutine: awaited)
    outputs: tuple[str, ...]  # what it writes into its folder (hashed into the manifest and the done marker)
    stats: str  # which of them holds its stats
    reads: tuple[str, ...] = ()  # config fields naming the user's files: a typo fails before anything runs
    generator: bool = False  # writes records.jsonl, which the filter (or train) reads
    needs_llm: bool = False  # always calls the LLM (self_kg and filter do in llm mode, with the judge)
    asked: tuple[str, ...] = ()  # config fields whose product is how much the run asked for (report shortfall)
    unit: str = "records"  # what ``asked`` counts

    def load(self, part: str) -> Any:
        """The class (``"config"``) or function (``"run"``) the row names, imported now."""
        module, _, name = getattr(self, part).partition(":")
        return getattr(importlib.import_module(module), name)

    def uses_llm(self, cfg: Any) -> bool:
        """Whether this stage, configured as ``cfg``, calls the LLM (self_kg does in llm mode, the filter with its
        judge)."""
        return self.needs_llm or getattr(cfg, "mode", None) == "llm" or getattr(cfg, "judge", False) is True


STAGES = (
    Stage(
        "self_instruct",
        "datagen.generate.self_instruct:SelfInstructConfig",
        "datagen.generate.self_instruct:generate",
        _GENERATED,
        "stats.json",
        ("seeds",),
        True,
        True,
        ("num_instructions",),
        "instructions",
    ),
    Stage(
        "self_instruct_multiturn",
        "datagen.generate.multiturn:MultiTurnConfig",
        "datagen.generate.multiturn:generate",
        _GENERATED,
        "stats.json",
        ("seeds",),
        True,
        True,
        ("num_conversations",),
        "conversations",
    ),
    Stage(
        "self_qa",
        "datagen.generate.self_qa:SelfQAConfig",
        "datagen.generate.self_qa:generate",
        _GENERATED,
        "stats.json",
        ("docs",),
        True,
        True,
        ("max_chunks", "questions_per_chunk"),
        "questions",
    ),
    Stage(
        "self_kg",
        "datagen.generate.self_kg:SelfKGConfig",
        "datagen.generate.self_kg:generate",
        _GENERATED,
        "stats.json",
        ("graph", "labels"),
        True,
        False,
        ("num",),
    ),
    Stage(
        "filter",
        "datagen.filter.config:FilterConfig",
        "datagen.filter.pipeline:run_filter",
        ("curated.jsonl", "rejects.jsonl", "filter_stats.json"),
        "filter_stats.json",
    ),
    Stage(
        "train",
        "datagen.train.config:TrainConfig",
        "datagen.train.sft:train",
        ("adapter", "train_summary.json", "loss_curve.json", "eval.jsonl"),
        "train_summary.json",
        ("base",),
    ),
    Stage(
        "eval",
        "datagen.train.evaluate:EvalConfig",
        "datagen.train.evaluate:evaluate",
        ("eval.json",),
        "eval.json",
        ("base",),
    ),
)
STAGE = {stage.name: stage for stage in STAGES}
