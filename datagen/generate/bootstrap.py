"""The bootstrap loop of Self-Instruct (Wang et al. 2022), shared by single-turn tasks and multi-turn openers.

Each round sends ``batch_size`` requests; each shows ``num_prompt_instructions`` in-context instructions
(``num_machine_in_prompt`` of them accepted machine ones once there are any, the rest human seeds, shuffled)
and asks for more. Every answer is parsed as a numbered list (the last item dropped when the reply hit
``max_tokens``), each candidate filtered (``check_instruction``: length, keyword blacklist, leading
punctuation, language; then ROUGE-L ≥ ``rouge_threshold`` against the whole pool), and survivors join the
pool at once, so later candidates of the same round are checked against them too.

Rounds replay from the step log with the same seeded RNG, so a resumed run takes the path an uninterrupted
one took. A round with a request that a re-run will ask again (its failure is not settled) is the last:
later rounds would draw their prompts from a pool that lacks its answer.

    >>> clean_instruction("  write   a haiku about rain")
    'Write a haiku about rain'
    >>> check_instruction("Write a program that sorts a list.", "en")
    ('write_a_program', None)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from datagen.checkpoint import make_reject
from datagen.config import check_fields
from datagen.generate.parsing import parse_numbered_list
from datagen.llm.client import LLMClient, SamplingParams
from datagen.progress import progress
from datagen.records import Example
from datagen.rouge import RougePool
from datagen.step import Step, answer_row, as_request, ask
from datagen.text import LANGS, count_units, detect_lang, find_blacklisted, starts_with_punctuation

STYLES = ("completion", "chat")
#: Length bounds per language, in words (English) or characters (Chinese): keep lo < n ≤ hi.
LENGTH_BOUNDS = {"en": (3, 150), "zh": (5, 300)}


def check_config(cfg: Any, section: str, positive: tuple[str, ...], fractions: tuple[str, ...] = ()) -> None:
    """The checks both bootstrap configs share (``positive`` fields must be ≥ 1, ``fractions`` in (0, 1]);
    errors name ``section.field``."""
    check_fields(
        cfg,
        f"{section}.",
        [
            ("lang", cfg.lang in LANGS, f"one of {list(LANGS)}"),
            ("style", cfg.style in STYLES, f"one of {list(STYLES)}"),
            *((name, getattr(cfg, name) >= 1, "≥ 1") for name in (*positive, "batch_size", "num_prompt_instructions")),
            (
                "num_machine_in_prompt",
                0 <= cfg.num_machine_in_prompt <= cfg.num_prompt_instructions,
                "between 0 and num_prompt_instructions",
            ),
            *((name, 0 < getattr(cfg, name) <= 1, "in (0, 1]") for name in ("rouge_threshold", *fractions)),
            ("max_rounds", cfg.max_rounds is None or cfg.max_rounds >= 1, "≥ 1"),
        ],
    )


def prompt_template(cfg: Any, name: str) -> str:
    """The template of a bootstrap request: ``<lang>/<name>`` (a list to continue), or its ``_chat`` variant."""
    return f"{cfg.lang}/{name}" + ("" if cfg.style == "completion" else "_chat")


def sample_prompt_tasks(rng: random.Random, seeds: list[dict], machine: list[dict], cfg: Any) -> list[dict]:
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
    word = find_blacklisted(text)
    if word:
        return "blacklisted_keyword", word
    if starts_with_punctuation(text, allow_openers=False):  # the paper's rule: no exception for quotes
        return "leading_punctuation", text[0]
    if lang == "en":
        if text.lower().startswith("write a program"):
            return "write_a_program", None  # the paper: ambiguous whether to write code or give the result
        if not text[0].isascii():
            return "non_ascii_start", text[0]  # the paper's rule, for English runs only
    if detect_lang(text) != lang:
        return "wrong_language", detect_lang(text)
    return None


class Bootstrap:
    """The pool (seeds + accepted machine instructions) and the rounds that grow it. ``cfg`` is a
    ``SelfInstructConfig`` or ``MultiTurnConfig`` (the knobs above are named alike in both).

    ``prompt`` renders a request from in-context instructions, ``digest`` names it in the log (a changed
    request under a logged key means the state belongs to other settings). Rejected candidates become
    ``stage`` rejects with ``step``; a failed request's reject carries ``failure_lang``.
    """

    def __init__(
        self,
        cfg: Any,
        llm: LLMClient,
        seeds: list[dict[str, Any]],
        *,
        stage: str,
        step: str,
        prompt: Callable[[list[str]], str],
        digest: Callable[[str], str],
        sampling: SamplingParams,
        failure_lang: str | None,
    ):
        self.cfg, self.llm, self.seeds = cfg, llm, seeds
        self.stage, self.step, self.prompt, self.digest, self.sampling = stage, step, prompt, digest, sampling
        self.failure_lang = failure_lang
        self.pool = RougePool(s["instruction"] for s in seeds)
        self.machine: list[dict[str, Any]] = []
        self.rng = random.Random(cfg.seed)
        self.rounds = 0
        self.rejects: list[Example] = []
        # A request of this run failed for good and is asked again on resume: build nothing more on the
        # answers so far, so a resumed run goes on exactly as a fault-free run would have.
        self.failed = False

    async def grow(self, log: Step, goal: int, desc: str) -> None:
        """Run rounds until the pool holds ``goal`` machine instructions (or the round limit is reached)."""
        cfg = self.cfg
        with progress(goal, desc, initial=min(goal, len(self.machine))) as bar:
            while len(self.machine) < goal and self.rounds < cfg.rounds_limit and not self.failed:
                batch = []
                for j in range(cfg.batch_size):
                    tasks = sample_prompt_tasks(self.rng, self.seeds, self.machine, cfg)
                    prompt = self.prompt([t["instruction"] for t in tasks])
                    # Each request is its own sample: the same prompt drawn twice must not replay one answer.
                    batch.append(
                        (f"r{self.rounds}-{j}", self.digest(prompt), prompt, self.rounds * cfg.batch_size + j, tasks)
                    )
                for key, digest, *_ in batch:
                    log.check(key, digest)
                await log.answer(
                    batch,
                    key=lambda b: b[0],
                    ask=lambda b: ask(self.llm, *as_request(cfg.style, b[2]), self.sampling, b[3]),
                    row=lambda b, result: answer_row(b[0], result, "error", prompt=b[1]),
                    limit=len(batch),
                )
                before = len(self.machine)
                for key, *_, tasks in batch:
                    self._absorb(log.done[key], tasks, goal)
                self.failed |= any(not log.lasts(log.done[key]) for key, *_ in batch)
                bar.update(min(len(self.machine), goal) - min(before, goal))
                self.rounds += 1

    def _absorb(self, row: dict[str, Any], tasks: list[dict[str, Any]], goal: int) -> None:
        """Parse one answer, filter its candidates, add survivors to the pool."""
        source = {
            "seeds": [t["id"] for t in tasks if "round" not in t],
            "machine": [t["instruction"] for t in tasks if "round" in t],
        }
        if "error" in row:
            self._reject("", f"llm_{row['error']}", row["detail"], self.failure_lang)
            return
        candidates = parse_numbered_list(row["text"], continuation=self.cfg.style == "completion")
        if row["finish_reason"] == "length" and candidates:
            self._reject(clean_instruction(candidates.pop()), "truncated", None)
        for raw in candidates:
            text = clean_instruction(raw)
            broken = check_instruction(text, self.cfg.lang)
            if broken:
                self._reject(text, *broken)
                continue
            if len(self.machine) >= goal:
                self._reject(text, "over_target", None)
                continue
            top = self.pool.top_k(text, 10)
            if top and top[0][1] >= self.cfg.rouge_threshold:
                self._reject(text, "near_duplicate", {"similar": self.pool[top[0][0]], "rougeL": top[0][1]})
                continue
            self.pool.add(text)
            self.machine.append(
                {
                    "index": len(self.machine),
                    "instruction": text,
                    "round": self.rounds,
                    "similar": [[self.pool[i], round(s, 4)] for i, s in top],
                    "source": source,
                    "model": row["model"],
                    "usage": row["usage"],
                }
            )

    def _reject(self, text: str, reason: str, detail: Any, lang: str | None = "") -> None:
        lang = self.cfg.lang if lang == "" else lang
        self.rejects.append(
            make_reject(
                Example(instruction=text, output="", lang=lang, meta={"method": self.stage, "round": self.rounds}),
                self.stage,
                reason,
                detail,
                step=self.step,
            )
        )
