"""``report.html`` for a run: one self-contained page (plots embedded as PNG, no network) a person can read.

Funnel counts through the stages, a one-line note when the curated set is smaller than asked, rejection
reasons with three rejected examples per rule, three kept examples per generator, the Self-Instruct
classifier's agreement with labelled seeds, length distributions, the most common root verbs with their
first noun objects in English and Chinese (the Self-Instruct paper's diversity chart, Fig. 2), similarity
of new instructions to the pool, the training and eval loss curve, the before/after evaluation table and
the base vs tuned answers side by side.

Every piece of generated text goes through Jinja2 autoescaping, so ``<script>`` in a record stays text.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import jinja2

from datagen.inspect import reject_detail, snippet
from datagen.records import Example, iter_examples, write_atomic
from datagen.stages import STAGE, STAGES
from datagen.text import count_units, detect_lang
from datagen.verbs import verb_object

_PLOTS = ("funnel", "rejects", "lengths", "similarity", "loss")
_EXAMPLES = 3  # rejected examples per rule, kept examples per generator


# ---------------------------------------------------------------------------------------------- gathering


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _load(path: Path) -> list[Example]:
    return list(iter_examples(path)) if path.exists() else []


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def dataset_card(run_dir: Path) -> dict[str, Any]:
    """Dataset-card facts from a run folder (``datagen export``): its config's seeds and random seeds, and the
    filter's figures."""
    card: dict[str, Any] = {"name": run_dir.resolve().name, "source": {"run": run_dir.resolve().name}}
    config = _json(run_dir / "manifest.json").get("config", {})
    seeds = {
        f"{stage}.{key}": value
        for stage, section in config.items()
        if isinstance(section, dict)
        for key, value in section.items()
        if key in ("seeds", "docs", "graph") and value
    }
    random_seeds = {
        f"{stage}.seed": section["seed"]
        for stage, section in config.items()
        if isinstance(section, dict) and section.get("seed") is not None
    }
    stats = _json(run_dir / "filter" / "filter_stats.json")
    if stats:
        card["filter"] = {k: stats[k] for k in ("records_in", "kept", "rejected", "rejects_by_reason") if k in stats}
    return {**card, "seeds": seeds, "random_seeds": random_seeds}


def _stage_folders(run_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Stages in run order: the manifest's, else every generator/filter folder on disk (a run cut short)."""
    names = list(manifest.get("stages", {}))
    return names or [s.name for s in STAGES if (s.generator or s.name == "filter") and (run_dir / s.name).is_dir()]


def collect(run_dir: Path) -> dict[str, Any]:
    """Everything the report shows, gathered from the run folder's files."""
    manifest = _json(run_dir / "manifest.json") or {}
    generated: dict[str, list[Example]] = {}
    rejects: dict[str, Counter] = {}
    stages = _stage_folders(run_dir, manifest)
    for stage in stages:
        entry = manifest.get("stages", {}).get(stage, {})
        folder = run_dir / stage
        stats = _json(folder / STAGE[stage].stats) if stage in STAGE else {}
        rejects[stage] = Counter(entry.get("rejects_by_reason") or stats.get("rejects_by_reason") or {})
        if (folder / "records.jsonl").exists():
            generated[stage] = _load(folder / "records.jsonl")
    curated = _load(run_dir / "filter" / "curated.jsonl")
    samples = run_dir / "eval" / "samples.jsonl"
    return {
        "manifest": manifest,
        "generated": generated,
        "rejects": rejects,
        "curated": curated,
        "rejected_examples": rejected_examples(run_dir, stages),
        "classifier": classifier_evidence(run_dir),
        "loss": _loss_history(run_dir / "train"),
        "eval": _json(run_dir / "eval" / "eval.json") or {},
        "eval_samples": [row for row in (_json_lines(samples) if samples.exists() else []) if isinstance(row, dict)],
    }


def _json_lines(path: Path) -> list[Any]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a killed eval: show what is readable
    return rows


def _answer(record: Example) -> str:
    """What the model wrote: the output, or for a conversation its last assistant turn."""
    if record.messages:
        replies = [m["content"] for m in record.messages if m.get("role") == "assistant"]
        if replies and replies[-1]:
            return replies[-1]
    return record.output


def rejected_examples(
    run_dir: Path, stages: list[str], per_reason: int = _EXAMPLES, seed: int = 0
) -> list[dict[str, Any]]:
    """Per stage and rule: how many records it rejected and ``per_reason`` of them (a seeded reservoir sample).

    Streams each ``rejects.jsonl`` once, so a 100K-record rejects file costs one pass and little memory.
    """
    out = []
    for stage in stages:
        path = run_dir / stage / "rejects.jsonl"
        if not path.exists():
            continue
        rng = random.Random(seed)
        counts: Counter = Counter()
        chosen: dict[str, list[Example]] = defaultdict(list)
        for record in iter_examples(path):
            reason = str((record.reject or {}).get("reason") or "unknown")
            counts[reason] += 1
            picks = chosen[reason]
            if len(picks) < per_reason:
                picks.append(record)
            else:
                slot = rng.randrange(counts[reason])
                if slot < per_reason:
                    picks[slot] = record
        for reason, n in counts.most_common():
            out.append(
                {
                    "stage": stage,
                    "reason": reason,
                    "count": n,
                    "examples": [
                        {
                            "instruction": snippet(r.instruction, 300),
                            "input": snippet(r.input, 160),
                            "answer": snippet(_answer(r), 240),
                            "detail": snippet(_detail(r.reject or {}), 300),
                            "rule_stage": str((r.reject or {}).get("stage") or ""),
                        }
                        for r in chosen[reason]
                    ],
                }
            )
    return out


def _detail(reject: dict[str, Any]) -> str:
    """The reject's detail, then any fields beyond stage, reason and detail (as JSON)."""
    text = reject_detail(reject)
    extra = {k: v for k, v in reject.items() if k not in ("stage", "reason", "detail")}
    if extra:
        text = (text + " " if text else "") + json.dumps(extra, ensure_ascii=False, default=str)
    return text


def kept_examples(
    records: list[Example], per_method: int = _EXAMPLES, seed: int = 0
) -> list[tuple[str, list[dict[str, Any]]]]:
    """``per_method`` records per generating method (seeded), conversations shown turn by turn."""
    by_method: dict[str, list[Example]] = defaultdict(list)
    for record in records:
        by_method[str(record.meta.get("method", "unknown"))].append(record)
    out = []
    for method in sorted(by_method):
        chosen = random.Random(seed).sample(by_method[method], min(per_method, len(by_method[method])))
        out.append(
            (
                method,
                [
                    {
                        "instruction": r.instruction,
                        "input": r.input,
                        "output": r.output,
                        "turns": r.turns() if r.messages else [],
                        "flags": ", ".join(r.meta.get("flags", []) or []),
                    }
                    for r in chosen
                ],
            )
        )
    return out


def classifier_evidence(run_dir: Path) -> list[dict[str, str]]:
    """Rows (source, field, value) of whatever the generators' stats say about the classification decision.

    Self-Instruct writes ``classifier_agreement`` (agreement with labelled seeds) and may add more evidence
    fields; every key naming classification or agreement is shown, nested values flattened, so a new
    field appears without a change here and a missing one leaves no hole.
    """
    rows = []
    for stage in ("self_instruct", "self_instruct_multiturn"):
        stats = _json(run_dir / stage / "stats.json")
        if not isinstance(stats, dict):
            continue
        for key, value in stats.items():
            if not any(word in key for word in ("classif", "agreement", "routes")) or value is None:
                continue
            for name, item in _flatten({key: value}).items():
                rows.append({"source": stage, "field": name, "value": _format_value(name, item)})
    return rows


def _format_value(name: str, value: Any) -> str:
    if isinstance(value, float):
        share = re.search(r"rate|accuracy|precision|recall|agreement|f1", name.rsplit(".", 1)[-1])
        return f"{value:.1%}" if share and 0 <= value <= 1 else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return snippet(json.dumps(value, ensure_ascii=False, default=str), 300)
    return str(value)


def shortfall(run_dir: Path, manifest: dict[str, Any], curated: list[Example]) -> str | None:
    """One line when the curated set holds fewer than the run asked a generator for, else None.

    What was asked comes from the run's config (Self-Instruct ``num_instructions``, multi-turn
    ``num_conversations``, Self-KG ``num``, Self-QA ``questions_per_chunk`` × ``max_chunks``); what was kept
    is counted in curated.jsonl per method (distinct instructions for Self-Instruct, whose tasks carry
    several instances each).
    """
    config = manifest.get("config") or {}
    if not curated and not (run_dir / "filter" / "curated.jsonl").exists():
        return None
    missing = []
    for spec in STAGES:
        stage, unit, section = spec.name, spec.unit, config.get(spec.name)
        if (
            not spec.asked
            or not isinstance(section, dict)
            or section.get("enabled") is False
            or stage not in manifest.get("stages", {})
        ):
            continue
        asked = _asked(stage, section)
        if not asked:
            continue
        method = stage.replace("_", "-")
        mine = [r for r in curated if r.meta.get("method") == method]
        kept = len({r.instruction for r in mine}) if stage == "self_instruct" else len(mine)
        if kept < asked:
            missing.append(f"{method} {kept} of {asked} {unit}")
    if not missing:
        return None
    return (
        f"The curated set is smaller than asked ({'; '.join(missing)}): the model could not write enough sound "
        "records, and the rest are in the rejects files with their reasons."
    )


def _asked(stage: str, section: dict[str, Any]) -> int | None:
    """The count the run's config asked of ``stage`` (the YAML value, else the config class's default)."""
    from datagen.config import field_default

    cls = STAGE[stage].load("config")
    values = [section.get(key, field_default(cls, key)) for key in STAGE[stage].asked]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return None  # e.g. Self-QA without max_chunks: as many questions as the documents give
    return math.prod(values)


def _loss_history(train_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``{step, loss}`` and ``{step, eval_loss}``, one per step and kind, from ``loss_curve.json``.

    Reads the trainer's ``{"train": [..], "eval": [..]}`` and HF ``log_history``-style lists alike (a list of
    entries, or under ``log_history``), so every eval point logged during training is plotted.
    """
    curve = _json(train_dir / "loss_curve.json")
    entries: list[Any] = []
    if isinstance(curve, list):
        entries = curve
    elif isinstance(curve, dict):
        for key in ("train", "eval", "log_history"):
            if isinstance(curve.get(key), list):
                entries += curve[key]
    rows: dict[tuple[str, float], dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), (int, float)):
            continue
        for kind in ("loss", "eval_loss"):
            if isinstance(entry.get(kind), (int, float)):
                rows[(kind, entry["step"])] = {"step": entry["step"], kind: entry[kind]}
    return sorted(rows.values(), key=lambda r: (r["step"], "eval_loss" in r))


# ---------------------------------------------------------------------------------------------- plots


def _fonts(plt: Any) -> None:
    """DejaVu for Latin text, a CJK font (when one is installed) as fallback for Chinese labels."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [
        name
        for name in (
            "Noto Sans CJK SC",
            "Noto Sans CJK JP",
            "Noto Sans SC",
            "WenQuanYi Zen Hei",
            "Source Han Sans SC",
            "SimHei",
            "Microsoft YaHei",
        )
        if name in installed
    ]
    plt.rcParams["font.family"] = ["DejaVu Sans", *cjk]


def _plots(data: dict[str, Any]) -> dict[str, str]:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    _fonts(plt)
    plots: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")  # no CJK font: boxes, not noise
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
        reasons = [
            (f"{stage}: {reason}", n) for stage, counter in data["rejects"].items() for reason, n in counter.items()
        ]
        if reasons:
            reasons.sort(key=lambda r: -r[1])
            reasons = reasons[:25]
            fig, ax = plt.subplots(figsize=(8, 0.3 * len(reasons) + 0.8))
            ax.barh([r for r, _ in reasons], [n for _, n in reasons], color="#f08c00")
            ax.invert_yaxis()
            ax.set_xlabel("rejected records")
            plots["rejects"] = _png(fig)
        records = _records(data)
        if records:
            fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
            for ax, field in zip(axes, ("instruction", "output")):
                lengths = [count_units(getattr(r, field), r.lang or detect_lang(getattr(r, field))) for r in records]
                ax.hist(lengths, bins=30, color="#4c6ef5")
                ax.set_title(f"{field} length (words; characters for Chinese)")
                ax.set_ylabel("records")
            plots["lengths"] = _png(fig)
        for lang, table in _verb_tables(records).items():
            plots[f"verbs_{lang}"] = _verb_plot(plt, table)
        similarity = [
            r.meta["similar"][0][1] for rs in data["generated"].values() for r in rs if r.meta.get("similar")
        ]
        if similarity:
            fig, ax = plt.subplots(figsize=(6, 2.6))
            ax.hist(similarity, bins=20, range=(0, 1), color="#7048e8")
            ax.set_xlabel("ROUGE-L to the most similar instruction already in the pool")
            ax.set_ylabel("instructions")
            plots["similarity"] = _png(fig)
        train = [(r["step"], r["loss"]) for r in data["loss"] if "loss" in r]
        evals = [(r["step"], r["eval_loss"]) for r in data["loss"] if "eval_loss" in r]
        if train or evals:
            fig, ax = plt.subplots(figsize=(6, 2.8))
            if train:
                ax.plot(*zip(*train), label="train loss", color="#4c6ef5")
            if evals:
                ax.plot(*zip(*evals), "o-", label=f"eval loss ({len(evals)} points)", color="#f03e3e")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.legend(frameon=False)
            plots["loss"] = _png(fig)
    return plots


def _verb_plot(plt: Any, table: list[dict[str, Any]]) -> str:
    """The paper's sunburst as stacked bars: each verb's bar split into its four commonest objects and the rest."""
    top = table[:20]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(top) + 0.9))
    colours = ("#2b8a3e", "#40c057", "#8ce99a", "#d3f9d8")
    for y, row in enumerate(top):
        left = 0
        for i, (obj, n) in enumerate(row["top"]):
            ax.barh(y, n, left=left, color=colours[i], edgecolor="white")
            if n / max(1, top[0]["count"]) > 0.06:
                ax.text(left + n / 2, y, obj, ha="center", va="center", fontsize=7)
            left += n
        if row["count"] > left:
            ax.barh(y, row["count"] - left, left=left, color="#e9ecef", edgecolor="white")
    ax.set_yticks(range(len(top)), [row["verb"] for row in top])
    ax.invert_yaxis()
    ax.set_xlabel("instructions (segments: the verb's commonest objects; grey: other or none)")
    return _png(fig)


def _records(data: dict[str, Any]) -> list[Example]:
    return data["curated"] or [r for rs in data["generated"].values() for r in rs]


def _verb_tables(records: list[Example]) -> dict[str, list[dict[str, Any]]]:
    """Per language (en first), the 20 commonest root verbs with their 4 commonest objects."""
    by_lang: dict[str, list[Example]] = defaultdict(list)
    for record in records:
        by_lang[detect_lang(record.instruction)].append(record)
    return {lang: table for lang in sorted(by_lang) if (table := _verb_table(by_lang[lang]))}


def _verb_table(records: list[Example]) -> list[dict[str, Any]]:
    pairs = [vo for vo in (verb_object(r.instruction) for r in records) if vo]
    counts = Counter(v for v, _ in pairs)
    objects: dict[str, Counter] = defaultdict(Counter)
    for verb, obj in pairs:
        if obj:
            objects[verb][obj] += 1
    return [
        {
            "verb": verb,
            "count": n,
            "top": objects[verb].most_common(4),
            "objects": ", ".join(f"{o} ({c})" for o, c in objects[verb].most_common(4)),
        }
        for verb, n in counts.most_common(20)
    ]


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


def _side_by_side(rows: list[dict[str, Any]], limit: int = 10) -> list[dict[str, str]]:
    """The eval samples (``eval/samples.jsonl``: prompt messages, reference, base, tuned) as table rows."""
    out = []
    for row in rows[:limit]:
        prompt = row.get("prompt")
        if isinstance(prompt, list):
            users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
            prompt = users[-1] if users else ""
        out.append(
            {
                "prompt": snippet(prompt, 400),
                "reference": snippet(row.get("reference"), 400),
                "base": snippet(row.get("base"), 400),
                "tuned": snippet(row.get("tuned"), 400),
            }
        )
    return out


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def write_report(run_dir: str | Path) -> Path:
    """Render ``run_dir/report.html`` from the run's files; returns its path."""
    run_dir = Path(run_dir)
    data = collect(run_dir)
    manifest = data["manifest"]
    funnel = []
    for stage, entry in manifest.get("stages", {}).items():
        llm = entry.get("llm") or {}
        kept, rejected = entry.get("kept"), entry.get("rejected")
        funnel.append(
            {
                "stage": stage,
                "skipped": entry.get("skipped", False),
                "inputs": (kept or 0) + (rejected or 0) if kept is not None else "",
                "kept": kept if kept is not None else "",
                "rejected": rejected if rejected is not None else "",
                "calls": f"{llm.get('succeeded') or 0} / {llm.get('cached') or 0} / {llm.get('failed') or 0}"
                if llm
                else "",
                "tokens": f"{llm.get('prompt_tokens') or 0} / {llm.get('completion_tokens') or 0}" if llm else "",
                "seconds": entry.get("seconds", ""),
            }
        )
    records = _records(data)
    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            name=manifest.get("name", run_dir.name),
            status="complete" if manifest.get("complete") else "incomplete",
            created=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            commit=(manifest.get("git_commit") or "")[:10],
            seconds=manifest.get("seconds", ""),
            funnel=funnel,
            plots=dict.fromkeys(_PLOTS) | _plots(data),
            shortfall=shortfall(run_dir, manifest, data["curated"]),
            verbs=_verb_tables(records),
            rejected=data["rejected_examples"],
            classifier=data["classifier"],
            evaluation=_evaluation_rows(data["eval"]),
            eval_points=[r for r in data["loss"] if "eval_loss" in r],
            side_by_side=_side_by_side(data["eval_samples"]),
            kept_from="curated.jsonl" if data["curated"] else "the generators' records.jsonl (no filter in this run)",
            samples=kept_examples(records),
        )
    )
    path = run_dir / "report.html"
    write_atomic(path, html)
    return path
