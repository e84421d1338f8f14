"""``report.html`` for a run: one self-contained page (plots embedded as PNG, no network) a person can read.

Funnel counts through the stages, rejection reasons, length distributions, the most common root verbs with
their objects (the Self-Instruct paper's diversity chart, Fig. 2), similarity of new instructions to the
pool, the training loss curve, the before/after evaluation table, and random samples per method.

Every piece of generated text goes through Jinja2 autoescaping, so ``<script>`` in a record stays text.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import jinja2

from datagen.lang import count_units, detect_lang
from datagen.records import Example, iter_examples, write_atomic

_STOP = set("a an the me us some this that these those following given your my our its their of to for in on with "
            "and or as by from at into about what which who how why when where whether there it is are be "
            "short brief new simple one two three four five few several each every all any more most".split())
_LEAD = {"please", "now", "then", "also", "kindly"}
_PLOTS = ("funnel", "rejects", "lengths", "verbs", "similarity", "loss")


def verb_object(instruction: str) -> tuple[str, str | None] | None:
    """A cheap (root verb, object) for an instruction, in the spirit of the paper's parse-tree chart.

    English: the first word is the verb of an imperative; the object is the first following word that is
    not a function word. Chinese: the first two characters, then the next two. No parser model is needed.
    """
    text = instruction.strip()
    if not text:
        return None
    if detect_lang(text) == "zh":
        chars = re.sub(r"[^\u4e00-\u9fff]", "", text)
        return (chars[:2], chars[2:4] or None) if len(chars) >= 2 else None
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z'-]*", text)]
    while words and words[0] in _LEAD:
        words.pop(0)
    if not words:
        return None
    verb = words[0]
    obj = next((w for w in words[1:] if w not in _STOP and len(w) > 2), None)
    return verb, obj


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _load(path: Path) -> list[Example]:
    return list(iter_examples(path)) if path.exists() else []


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def collect(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, gathered from the run folder's files."""
    manifest = _json(run_dir / "manifest.json")
    generated: dict[str, list[Example]] = {}
    rejects: dict[str, Counter] = {}
    for stage, entry in manifest.get("stages", {}).items():
        folder = run_dir / stage
        stats = _json(folder / "stats.json") or _json(folder / "filter_stats.json")
        rejects[stage] = Counter(entry.get("rejects_by_reason") or stats.get("rejects_by_reason") or {})
        if (folder / "records.jsonl").exists():
            generated[stage] = _load(folder / "records.jsonl")
    curated = _load(run_dir / "filter" / "curated.jsonl")
    return {"manifest": manifest, "generated": generated, "rejects": rejects, "curated": curated,
            "loss": _loss_history(run_dir / "train"), "eval": _json(run_dir / "eval" / "eval.json")}


def _loss_history(train_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``{step, loss | eval_loss}`` from the trainer's ``loss_curve.json`` (``{"train": [..], "eval": [..]}``)."""
    curve = _json(train_dir / "loss_curve.json")
    return [{"step": r.get("step"), "loss": r.get("loss")} for r in curve.get("train", [])] + \
           [{"step": r.get("step"), "eval_loss": r.get("eval_loss")} for r in curve.get("eval", [])]


def _plots(data: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    plots: dict[str, str] = {}
    stages = data["manifest"].get("stages", {})
    if stages:
        fig, ax = plt.subplots(figsize=(8, 2.6))
        names = list(stages)
        kept = [stages[n].get("kept") or 0 for n in names]
        rejected = [stages[n].get("rejected") or 0 for n in names]
        ax.barh(names, kept, color="#4c6ef5", label="kept")
        ax.barh(names, rejected, left=kept, color="#ced4da", label="rejected")
        ax.invert_yaxis()
        ax.legend(loc="lower right", frameon=False)
        ax.set_xlabel("records")
        plots["funnel"] = _png(fig)
    reasons = [(f"{stage}: {reason}", n) for stage, counter in data["rejects"].items() for reason, n in counter.items()]
    if reasons:
        reasons.sort(key=lambda r: -r[1])
        reasons = reasons[:25]
        fig, ax = plt.subplots(figsize=(8, 0.3 * len(reasons) + 0.8))
        ax.barh([r for r, _ in reasons], [n for _, n in reasons], color="#f08c00")
        ax.invert_yaxis()
        ax.set_xlabel("rejected records")
        plots["rejects"] = _png(fig)
    records = data["curated"] or [r for rs in data["generated"].values() for r in rs]
    if records:
        fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
        for ax, field in zip(axes, ("instruction", "output")):
            lengths = [count_units(getattr(r, field), r.lang or detect_lang(getattr(r, field))) for r in records]
            ax.hist(lengths, bins=30, color="#4c6ef5")
            ax.set_title(f"{field} length (words; characters for Chinese)")
            ax.set_ylabel("records")
        plots["lengths"] = _png(fig)
    verbs = _verb_table(records)
    if verbs:
        top = verbs[:20]
        fig, ax = plt.subplots(figsize=(8, 0.28 * len(top) + 0.8))
        ax.barh([v["verb"] for v in top], [v["count"] for v in top], color="#37b24d")
        ax.invert_yaxis()
        ax.set_xlabel("instructions")
        plots["verbs"] = _png(fig)
    similarity = [r.meta["similar"][0][1] for rs in data["generated"].values() for r in rs
                  if r.meta.get("similar")]
    if similarity:
        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.hist(similarity, bins=20, range=(0, 1), color="#7048e8")
        ax.set_xlabel("ROUGE-L to the most similar instruction already in the pool")
        ax.set_ylabel("instructions")
        plots["similarity"] = _png(fig)
    loss = [(row.get("step"), row.get("loss"), row.get("eval_loss")) for row in data["loss"]]
    if any(l is not None for _, l, _ in loss):
        fig, ax = plt.subplots(figsize=(6, 2.8))
        train = [(s, l) for s, l, _ in loss if l is not None and s is not None]
        evals = [(s, e) for s, _, e in loss if e is not None and s is not None]
        if train:
            ax.plot(*zip(*train), label="train loss", color="#4c6ef5")
        if evals:
            ax.plot(*zip(*evals), "o-", label="eval loss", color="#f03e3e")
        ax.set_xlabel("step")
        ax.legend(frameon=False)
        plots["loss"] = _png(fig)
    return plots


def _verb_table(records: list[Example]) -> list[dict[str, Any]]:
    pairs = [vo for vo in (verb_object(r.instruction) for r in records) if vo]
    counts = Counter(v for v, _ in pairs)
    objects: dict[str, Counter] = defaultdict(Counter)
    for verb, obj in pairs:
        if obj:
            objects[verb][obj] += 1
    return [{"verb": verb, "count": n, "objects": ", ".join(f"{o} ({c})" for o, c in objects[verb].most_common(4))}
            for verb, n in counts.most_common(20)]


def _flatten(scores: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(scores, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in scores.items():
        name = f"{prefix}{key}"
        out.update(_flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def _evaluation_rows(evaluation: dict[str, Any]) -> list[dict[str, str]]:
    base, tuned = _flatten(evaluation.get("base")), _flatten(evaluation.get("tuned"))
    rows = []
    for metric in sorted(set(base) & set(tuned)):
        b, t = base[metric], tuned[metric]
        if isinstance(b, (int, float)) and isinstance(t, (int, float)):
            change = f"{(t - b) / abs(b) * 100:+.1f}%" if b else "n/a"
            rows.append({"metric": metric, "base": f"{b:.4g}", "tuned": f"{t:.4g}", "change": change})
    return rows


def _samples(data: dict[str, Any], per_method: int = 5, seed: int = 0) -> list[tuple[str, list[dict[str, Any]]]]:
    records = data["curated"] or [r for rs in data["generated"].values() for r in rs]
    by_method: dict[str, list[Example]] = defaultdict(list)
    for record in records:
        by_method[record.meta.get("method", "unknown")].append(record)
    rng = random.Random(seed)
    out = []
    for method in sorted(by_method):
        chosen = rng.sample(by_method[method], min(per_method, len(by_method[method])))
        out.append((method, [{"instruction": r.instruction, "input": r.input, "output": r.output,
                              "flags": ", ".join(r.meta.get("flags", []) or [])} for r in chosen]))
    return out


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report.html`` from the run's files; returns its path."""
    run_dir = Path(run_dir)
    data = collect(run_dir)
    manifest = data["manifest"]
    funnel = []
    for stage, entry in manifest.get("stages", {}).items():
        llm = entry.get("llm") or {}
        kept, rejected = entry.get("kept"), entry.get("rejected")
        funnel.append({"stage": stage, "skipped": entry.get("skipped", False),
                       "inputs": (kept or 0) + (rejected or 0) if kept is not None else "",
                       "kept": kept if kept is not None else "", "rejected": rejected if rejected is not None else "",
                       "calls": f"{llm.get('succeeded') or 0} / {llm.get('cached') or 0} / {llm.get('failed') or 0}" if llm else "",
                       "tokens": f"{llm.get('prompt_tokens') or 0} / {llm.get('completion_tokens') or 0}" if llm else "",
                       "seconds": entry.get("seconds", "")})
    html = _environment().get_template("report.html.j2").render(
        name=manifest.get("name", run_dir.name),
        status="complete" if manifest.get("complete") else "incomplete",
        created=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        commit=(manifest.get("git_commit") or "")[:10],
        seconds=manifest.get("seconds", ""),
        funnel=funnel, plots=dict.fromkeys(_PLOTS) | _plots(data), verbs=_verb_table(data["curated"] or [r for rs in data["generated"].values() for r in rs]),
        evaluation=_evaluation_rows(data["eval"]), samples=_samples(data),
    )
    path = run_dir / "report.html"
    write_atomic(path, html)
    return path
