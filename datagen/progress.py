"""Progress bars for anything longer than a few seconds, and the line each stage ends with.

A bar is tqdm on stderr, silent when stderr is not a terminal or logging is quieted with ``-q``; a finished
bar stays on screen (``leave=True``) so its final count is not wiped. Whatever the terminal, every stage
of ``datagen run`` ends with one line saying what it did (``stage_line``), so a stage that had nothing to
do, or whose bar never showed, still leaves a trace.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any


def progress(total: int | None, desc: str, initial: int = 0) -> Any:
    """A tqdm bar on stderr; disabled when stderr is not a terminal or logging is quieted with -q."""
    from tqdm.auto import tqdm

    quiet = logging.getLogger("datagen").getEffectiveLevel() > logging.INFO
    return tqdm(
        total=total,
        desc=desc,
        initial=initial,
        unit="it",
        dynamic_ncols=True,
        leave=True,
        disable=quiet or not sys.stderr.isatty(),
        file=sys.stderr,
    )


def stage_line(name: str, entry: dict[str, Any], folder: str | Path, stats: dict[str, Any] | None = None) -> str:
    """One line for a finished stage: records in / kept / rejected, time, LLM calls, tokens, cost, where it wrote.

    ``entry`` is the stage's manifest entry (``kept``, ``rejected``, ``llm``, ``seconds``); ``stats`` what the
    stage returned (for ``records_in`` and a cost when the endpoint reports one). Counts the stage did not
    report are left out rather than shown as 0; a stage with zero records says so.

    >>> stage_line("self_qa", {"kept": 0, "rejected": 0, "seconds": 0.42, "llm": None}, "out/self_qa")
    'self_qa: done in 0.4 s: 0 records in, 0 kept, 0 rejected; wrote out/self_qa'
    >>> stage_line("filter", {"kept": 61, "rejected": 9, "seconds": 7.0,
    ...            "llm": {"requests": 3, "cached": 1, "prompt_tokens": 1200, "completion_tokens": 40}},
    ...            "out/filter", {"records_in": 70, "llm": {"cost_usd": 0.0021}})  # doctest: +NORMALIZE_WHITESPACE
    'filter: done in 7.0 s: 70 records in, 61 kept, 9 rejected; 3 LLM calls (1 cached), 1,200 + 40 tokens, $0.0021;
    wrote out/filter'
    """
    stats = stats or {}
    kept, rejected = entry.get("kept"), entry.get("rejected")
    parts = []
    if kept is not None or rejected is not None:
        records_in = stats.get("records_in")
        if not isinstance(records_in, int):
            records_in = (kept or 0) + (rejected or 0)
        parts.append(f"{records_in} records in, {kept or 0} kept, {rejected or 0} rejected")
    llm = entry.get("llm") or {}
    if llm.get("requests") or llm.get("batch_requests"):
        calls = f"{llm.get('requests') or 0} LLM calls" + (f" ({llm['cached']} cached)" if llm.get("cached") else "")
        if llm.get("batch_requests"):
            calls += f", {llm['batch_requests']} in batch jobs"
        if llm.get("failed"):
            calls += f", {llm['failed']} failed"
        prompt = (llm.get("prompt_tokens") or 0) + (llm.get("batch_prompt_tokens") or 0)
        completion = (llm.get("completion_tokens") or 0) + (llm.get("batch_completion_tokens") or 0)
        if prompt or completion:
            calls += f", {prompt:,} + {completion:,} tokens"
        cost = next(
            (
                c
                for c in ((stats.get("llm") or {}).get("cost_usd"), stats.get("cost_usd"))
                if isinstance(c, (int, float))
            ),
            None,
        )
        if cost is not None:
            calls += f", ${cost:.4g}"
        parts.append(calls)
    parts.append(f"wrote {folder}")
    seconds = entry.get("seconds")
    took = f" in {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    return f"{name}: done{took}: " + "; ".join(parts)
