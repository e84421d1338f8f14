"""The filter stage's settings (``FilterConfig``, built from YAML and flags by ``load_config``), kept below the
pipeline and its rule modules so that both can read them and imports point one way.

    >>> FilterConfig(keep="best")
    Traceback (most recent call last):
    datagen.errors.ConfigError: filter.keep must be one of ['first', 'longest_output', 'heuristic_score'], got 'best'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.config import build, load_yaml, to_plain
from datagen.errors import ConfigError
from datagen.filter import semantic
from datagen.llm.client import LLMConfig

STAGES = ("heuristics", "exact_dedup", "rouge_dedup", "embed_dedup", "judge")
KEEP_POLICIES = ("first", "longest_output", "heuristic_score")
ROUGE_METHODS = ("auto", "exact", "lsh")
ENGINES = ("local", "ray")  # filter.engine
#: Every heuristic rule (``heuristics.py``) by the reason it writes, in the order they are checked: a record that
#: breaks several is rejected for the first.
RULES = (
    "instruction_empty",
    "output_empty",
    "instruction_too_short",
    "instruction_too_long",
    "output_too_short",
    "output_too_long",
    "prompt_injection",
    "output_equals_input",
    "echo",
    "label_copy",
    "short_open_answer",
    "announces_only",
    "wrong_answer_type",
    "placeholder",
    "blacklisted_keyword",
    "personal_experience",
    "leading_punctuation",
    "url_in_prompt",
    "image_placeholder",
    "ai_identity",
    "refusal",
    "truncated",
    "unbalanced",
    "repetition",
    "language_mismatch",
    "unrelated_answer",  # batched, with the sentence encoder: datagen/filter/relevance.py
)


@dataclass(frozen=True)
class FilterConfig:
    """Every knob of the filter stage. YAML keys and ``--kebab-case`` flags use these names."""

    inputs: tuple[Path, ...] = ()  # record files in any format datagen reads
    out: Path | None = None  # output folder
    # --- stages, in order; each can be switched off
    heuristics: bool = True  # 1. named rules (datagen/filter/heuristics.py)
    exact_dedup: bool = True  # 2. same normalised prompt
    rouge_dedup: bool = True  # 3. ROUGE-L near-duplicates (datagen/rouge.py)
    embed_dedup: bool = True  # 4. embedding near-duplicates (datagen/filter/semantic.py)
    judge: bool = False  # 5. LLM judge (datagen/filter/judge.py); needs an endpoint
    keep: str = "first"  # which duplicate survives: first | longest_output | heuristic_score
    # --- 1. heuristics. Lengths are inclusive (min, max): words for English text, characters for Chinese.
    skip_rules: tuple[str, ...] = ()  # rule names to skip (see RULES)
    instruction_length: tuple[int, int] = (3, 150)  # Self-Instruct keeps 3 < words <= 150 for new instructions
    instruction_length_zh: tuple[int, int] = (4, 300)
    output_length: tuple[int, int] = (1, 2000)  # min 1: "Yes" and "正面" are whole answers
    output_length_zh: tuple[int, int] = (1, 4000)
    blacklist: tuple[str, ...] | None = None  # instruction keywords; None = text.BLACKLIST (en+zh); [] = off
    repetition_ngram: int = 4  # n of the repeated-n-gram ratio (words; characters for Chinese)
    repetition_max: float = 0.4  # reject an answer whose repeated n-gram share is above this
    language_min_units: int = 4  # shorter answers (words/characters) skip the language check
    # --- 3. ROUGE-L
    rouge_threshold: float = 0.7  # drop a unit with ROUGE-L F >= this against one kept before it
    # --- 4. embeddings
    embed_model: str | None = None  # sentence-transformers folder or hub id; None = bundled MiniLM
    embed_threshold: float = 0.9  # cosine at or above which two texts are duplicates
    embed_grouping: str = "greedy"  # greedy: drop only texts >= threshold to a kept one (no
    # chaining); connected: one survivor per union-find group
    embed_max_unknown: float = 0.1  # texts with a larger share of [UNK] tokens are not compared:
    # MiniLM reads Chinese as 20-90% [UNK] (ROUGE-L dedups those)
    embed_batch_size: int = 64  # texts per encoder batch
    embed_device: str | None = None  # cpu, cuda, mps; None = what sentence-transformers picks
    embed_ivf_above: int = 20_000  # exact IndexFlatIP up to this many texts; above, IndexIVFFlat
    # if measured cheaper on a sample (semantic._choose_index)
    embed_nprobe: int = 1  # IVF lists searched per query, to start: doubled until min_recall
    embed_min_recall: float = 0.99  # IVF: raise nprobe until a sample's pairs are found this often
    # --- 3. ROUGE-L at size (datagen/filter/minhash.py)
    rouge_method: str = "auto"  # exact: pool search; lsh: MinHash-LSH candidates, exact ROUGE-L
    # on them; auto: lsh above rouge_lsh_above units
    rouge_lsh_above: int = 50_000  # units at which auto switches to LSH (below, exact is cheap)
    rouge_lsh_threshold: float = 0.3  # Jaccard the LSH bands target (words + word bigrams; minhash.py)
    rouge_lsh_num_perm: int = 256  # MinHash permutations
    rouge_lsh_max_df: float = 0.01  # tokens in more texts than this share are left out of shingles
    rouge_lsh_max_count: int = 100  # ... and in more texts than this count (keeps pairs linear in n)
    # --- before dedup: benchmark decontamination (datagen/filter/decontaminate.py)
    decontaminate: tuple[Path, ...] = ()  # benchmark files; a record sharing an n-gram with an item goes
    decontaminate_ngram: int = 13  # n: words for Latin text, characters for CJK
    # --- after exact dedup: earlier datasets (datagen/filter/against.py)
    against: tuple[Path, ...] = ()  # record files of earlier rounds; near-copies of them are dropped
    # --- 5. LLM judge
    judge_min_score: int = 3  # keep records the judge scores >= this (1-5)
    judge_max_tokens: int = 256  # room for the rationale and the score line
    llm: LLMConfig = field(default_factory=LLMConfig)
    # --- 1b. unrelated_answer (datagen/filter/relevance.py), part of the heuristics stage
    relevance: bool | None = None  # None = on when embed_dedup is (both load the encoder)
    relevance_min_cosine: float = 0.1  # English: task-answer cosine (MiniLM) below this = unrelated
    relevance_min_chars_zh: int = 10  # Chinese: answers this long sharing no character with the task
    # and its input are unrelated
    # --- pass 1's heuristics in worker processes past a size (the filter's largest cost at 1M records: 0.6 ms each)
    heuristics_workers: int = 0  # processes; 0 = one per CPU core, 1 = this process only
    heuristics_parallel_above: int = 16_384  # records read before the workers start (starting costs ~1 s)
    # --- where the dedup stages run (datagen/filter/ray_engine.py); the kept set is the same either way
    engine: str = "local"  # local: this process; ray: exact, ROUGE-L and embedding dedup on
    # Ray Data (pip install 'datagen[ray]')
    ray_address: str | None = None  # ray://head:10001 or auto; None = the open session or a local Ray

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _paths("inputs", self.inputs))
        if self.out is not None:
            if not isinstance(self.out, (str, Path)):
                raise ConfigError(f"filter.out must be a folder path, got {self.out!r}")
            object.__setattr__(self, "out", Path(self.out))
        for name in STAGES:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"filter.{name} must be true or false, got {getattr(self, name)!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"filter.{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        object.__setattr__(self, "skip_rules", _strings("skip_rules", self.skip_rules))
        unknown = sorted(set(self.skip_rules) - set(RULES))
        if unknown:
            raise ConfigError(f"filter.skip_rules: unknown rule(s) {unknown}; rules: {list(RULES)}")
        if self.blacklist is not None:
            object.__setattr__(self, "blacklist", _strings("blacklist", self.blacklist))
        for name in ("instruction_length", "instruction_length_zh", "output_length", "output_length_zh"):
            object.__setattr__(self, name, _bounds(name, getattr(self, name)))
        for name, (lo, hi, integer, lo_open) in _RANGES.items():
            _number(name, getattr(self, name), lo, hi, integer=integer, lo_open=lo_open)
        for name in ("embed_model", "embed_device"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"filter.{name} must be a non-empty string or unset, got {value!r}")
        if not isinstance(self.llm, LLMConfig):
            raise ConfigError(f"filter.llm must be a mapping of LLM settings, got {self.llm!r}")
        for name in ("decontaminate", "against"):
            object.__setattr__(self, name, _paths(name, getattr(self, name)))
        if self.relevance is not None and not isinstance(self.relevance, bool):
            raise ConfigError(f"filter.relevance must be true, false or unset, got {self.relevance!r}")
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address):
            raise ConfigError(
                f"filter.ray_address must be a Ray address (ray://head:10001) or unset, got {self.ray_address!r}"
            )

    def public_dict(self) -> dict[str, Any]:
        """The resolved config for ``filter_stats.json`` (no secrets live in it)."""
        out = to_plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "llm"})
        return {**out, "llm": self.llm.public_dict() if self.judge else None}


#: Settings with a fixed set of values.
_CHOICES = {
    "keep": KEEP_POLICIES,
    "embed_grouping": semantic.GROUPINGS,
    "rouge_method": ROUGE_METHODS,
    "engine": ENGINES,
}

#: Numeric settings: name -> (lowest, highest, integers only, lowest excluded).
_RANGES = {
    "repetition_ngram": (1, 20, True, False),
    "repetition_max": (0, 1, False, False),
    "language_min_units": (0, 10_000, True, False),
    "rouge_threshold": (0, 1, False, True),
    "embed_threshold": (0, 1, False, True),
    "embed_max_unknown": (0, 1, False, False),
    "embed_batch_size": (1, 1 << 16, True, False),
    "embed_ivf_above": (1, 1 << 40, True, False),
    "embed_nprobe": (1, 1 << 20, True, False),
    "judge_min_score": (1, 5, True, False),
    "judge_max_tokens": (1, 1 << 20, True, False),
    "embed_min_recall": (0, 1, False, False),
    "rouge_lsh_above": (0, 1 << 40, True, False),
    "rouge_lsh_threshold": (0, 1, False, True),
    "rouge_lsh_num_perm": (8, 4096, True, False),
    "rouge_lsh_max_df": (0, 1, False, True),
    "rouge_lsh_max_count": (1, 1 << 40, True, False),
    "decontaminate_ngram": (1, 1000, True, False),
    "heuristics_workers": (0, 1024, True, False),
    "heuristics_parallel_above": (0, 1 << 40, True, False),
    "relevance_min_cosine": (-1, 1, False, False),
    "relevance_min_chars_zh": (1, 1 << 20, True, False),
}


def _paths(name: str, value: Any) -> tuple[Path, ...]:
    paths = (value,) if isinstance(value, (str, Path)) else value
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, Path)) for p in paths):
        raise ConfigError(f"filter.{name} must be a list of paths, got {value!r}")
    return tuple(Path(p) for p in paths)


def _strings(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"filter.{name} must be a list of strings, got {value!r}")
    return tuple(value)


def _bounds(name: str, value: Any) -> tuple[int, int]:
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )
    if not ok or not 0 <= value[0] <= value[1]:
        raise ConfigError(f"filter.{name} must be [min, max] with 0 <= min <= max, got {value!r}")
    return int(value[0]), int(value[1])


def _number(name: str, value: Any, lo: float, hi: float, *, integer: bool = False, lo_open: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigError(f"filter.{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not (lo < value <= hi if lo_open else lo <= value <= hi):
        raise ConfigError(f"filter.{name} must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {value!r}")


# ---------------------------------------------------------------------------------------------- config loading


def load_config(path: Path | None = None, **flags: Any) -> FilterConfig:
    """Build the config: dataclass defaults < YAML file ``path`` < ``flags`` (CLI options the user gave).

    The YAML holds ``FilterConfig`` keys at the top level or under ``filter:``, with endpoint settings under
    ``llm:``. An unknown key or a value of the wrong type is an error naming it (``datagen.config``).
    """
    values: dict[str, Any] = load_yaml(path) if path is not None else {}
    if set(values) == {"filter"} and isinstance(values["filter"], dict):
        values = dict(values["filter"])
    where = f"{path}: filter" if path is not None else "filter"
    llm_values = values.pop("llm", None) or {}
    if not isinstance(llm_values, dict):
        raise ConfigError(f"{where}.llm must be a mapping of LLM settings, got {llm_values!r}")
    for name, value in flags.items():
        if name == "no_cache":
            llm_values["cache"] = not value
        elif name == "prices_file":
            llm_values["prices"] = load_yaml(value)
        elif name in {f.name for f in dataclasses.fields(LLMConfig)}:  # the judge's endpoint
            llm_values[name] = value
        else:
            values[name] = value
    return build(FilterConfig, values, where, llm=build(LLMConfig, llm_values, f"{where}.llm"))
