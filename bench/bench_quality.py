"""Benchmark: does the filter keep sound data and reject what a careful reader would reject?

    python bench/bench_quality.py                         # ~1 minute on 2 CPU cores → docs/QUALITY.md
    python bench/bench_quality.py --json /tmp/quality.json --out /tmp/QUALITY.md
    python bench/run.py --only quality                    # the same, as a section of `make bench`

The real filter (``datagen.filter.pipeline.run_filter``) runs over hand-written fixtures in
``tests/fixtures/quality/``: sound tasks with sound answers (en and zh: classification labels, one-word facts,
code, regexes, lists, letters with sign-offs, tasks about URLs, math, rewriting, Self-QA, Self-KG profiles,
conversations), then planted defects (refusals, truncations, copied in-context labels, one-word answers to open
tasks, unrelated answers, echoes, wrong language, placeholders, loops, paraphrase duplicates, Chinese
near-copies, injection lines, ...). Every record carries its ground truth in ``meta.quality`` (``kind``:
``sound`` or the defect's kind). The filter config is ``configs/seeds-to-sft.yaml``'s ``filter`` section
(ROUGE-L 0.7, embedding cosine 0.9, no judge) with the bundled MiniLM encoder on the CPU.

A second, smaller folder of held-out fixtures (``tests/fixtures/quality_holdout/``, written after the rules were
tuned on the main set) is filtered in the same run and scored on its own, as a check that the rules generalise.

Reported: the share of sound records kept per language, the share of each defect kind dropped and of all
defects, every false positive (a sound record dropped: its rule, detail and text) and every miss (a defect
kept), grouped by rule and kind. Targets (issue 17) are shown beside the figures, never asserted: the script
exits 0 whatever the figures are (2 when the fixtures cannot be read).

``--out`` names the document (``.md``); given a ``.json`` path, as ``bench/run.py`` does, it names a short JSON
result (headline figures) instead and the document goes to ``--doc`` (default docs/QUALITY.md). ``--json``
writes the full result: every figure, false positive and miss. Everything below the marker line
``<!-- bench_quality: hand-written below ... -->`` of an existing document (the audit of curated records from
``make seeds-to-sft``) is kept when the document is regenerated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = ROOT / "tests" / "fixtures" / "quality"
HOLDOUT = ROOT / "tests" / "fixtures" / "quality_holdout"
DOC = ROOT / "docs" / "QUALITY.md"
CONFIG = ROOT / "configs" / "seeds-to-sft.yaml"
#: Issue 17's acceptance targets, as shares.
TARGETS = {"sound_kept": 0.98, "kind_caught": 0.90, "overall_caught": 0.95}
MARKER = "<!-- bench_quality: hand-written below this line; kept when the document is regenerated -->"
AUDIT_PLACEHOLDER = """
## Audit of 30 curated records from make seeds-to-sft

_Not filled in yet._ After `make seeds-to-sft`, draw 30 records from `outputs/seeds-to-sft/filter/curated.jsonl`
with a fixed seed (e.g. `python -c "import random; random.seed(17); ..."`), and give each a verdict (sound /
not sound) and why. Target: ≥ 80% sound, no one- or two-word answer to an open task, no copied in-context label.
"""


# ---------------------------------------------------------------------------------------------- fixtures


class FixtureError(Exception):
    """A fixture folder the benchmark cannot score (no files, a record without ground truth, repeated ids)."""


def fixture_files(folder: Path) -> list[Path]:
    """The fixture files in filter input order: ``sound_*.jsonl`` first (so every duplicate's original comes
    earlier), then the other ``*.jsonl`` files, each group sorted by name."""
    files = sorted(folder.glob("*.jsonl"))
    return [p for p in files if p.name.startswith("sound")] + [p for p in files if not p.name.startswith("sound")]


def load_truth(files: list[Path]) -> list[dict[str, Any]]:
    """Every fixture record as a dict (``datagen.formats.read_any`` validates them), in input order."""
    from datagen.formats import read_any

    records = []
    for path in files:
        for example in read_any(path):
            quality = example.meta.get("quality")
            if not isinstance(quality, dict) or not isinstance(quality.get("kind"), str):
                raise FixtureError(f"{path}: record {example.id} has no meta.quality.kind")
            records.append(example.to_dict())
    ids = Counter(r["id"] for r in records)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise FixtureError(f"fixture ids must be unique; repeated: {repeated[:5]}")
    return records


# ---------------------------------------------------------------------------------------------- scoring


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def score(records: list[dict[str, Any]], rejects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Kept and caught rates from ground truth and the filter's verdicts.

    ``records``: fixture records (``meta.quality.kind`` is ``sound`` or a defect kind); ``rejects``: id → the
    reject block of each dropped record (``stage``, ``reason``, ``detail``, ``duplicate_of``). A record not in
    ``rejects`` was kept.

    >>> recs = [{"id": "a", "lang": "en", "meta": {"quality": {"kind": "sound"}}},
    ...         {"id": "b", "lang": "en", "meta": {"quality": {"kind": "sound"}}},
    ...         {"id": "c", "lang": "zh", "meta": {"quality": {"kind": "refusal"}}}]
    >>> s = score(recs, {"b": {"stage": "heuristics", "reason": "truncated", "detail": "ends with ';'"},
    ...                  "c": {"stage": "heuristics", "reason": "refusal", "detail": "抱歉"}})
    >>> s["sound"]["en"]["kept_rate"], s["defects"]["refusal"]["caught_rate"], s["overall_caught_rate"]
    (0.5, 1.0, 1.0)
    >>> s["false_positives"][0]["rule"]
    'truncated'
    """
    sound: dict[str, dict[str, Any]] = {}
    defects: dict[str, dict[str, Any]] = {}
    false_positives, misses = [], []
    by_category: dict[str, Counter] = defaultdict(Counter)
    for rec in records:
        quality = rec.get("meta", {}).get("quality", {})
        kind, lang = quality.get("kind"), rec.get("lang") or "?"
        reject = rejects.get(rec["id"])
        if kind == "sound":
            entry = sound.setdefault(lang, {"total": 0, "kept": 0, "dropped_by": Counter()})
            entry["total"] += 1
            category = quality.get("category", "other")
            by_category[f"{lang}/{category}"]["total"] += 1
            if reject is None:
                entry["kept"] += 1
                by_category[f"{lang}/{category}"]["kept"] += 1
            else:
                entry["dropped_by"][reject.get("reason", "?")] += 1
                false_positives.append(_listing(rec, reject))
        else:
            entry = defects.setdefault(kind, {"total": 0, "caught": 0, "en": 0, "zh": 0, "caught_by": Counter()})
            entry["total"] += 1
            entry[lang] = entry.get(lang, 0) + 1
            if reject is None:
                misses.append(_listing(rec, None))
            else:
                entry["caught"] += 1
                entry["caught_by"][reject.get("reason", "?")] += 1
    for entry in sound.values():
        entry["kept_rate"] = _share(entry["kept"], entry["total"])
        entry["met"] = entry["kept_rate"] is not None and entry["kept_rate"] >= TARGETS["sound_kept"]
        entry["dropped_by"] = dict(entry["dropped_by"].most_common())
    for entry in defects.values():
        entry["caught_rate"] = _share(entry["caught"], entry["total"])
        entry["met"] = entry["caught_rate"] is not None and entry["caught_rate"] >= TARGETS["kind_caught"]
        entry["caught_by"] = dict(entry["caught_by"].most_common())
    caught = sum(e["caught"] for e in defects.values())
    total = sum(e["total"] for e in defects.values())
    overall = _share(caught, total)
    met = (
        all(e["met"] for e in sound.values())
        and all(e["met"] for e in defects.values())
        and overall is not None
        and overall >= TARGETS["overall_caught"]
    )
    return {
        "sound": dict(sorted(sound.items())),
        "defects": dict(sorted(defects.items())),
        "overall_caught": caught,
        "overall_defects": total,
        "overall_caught_rate": overall,
        "all_targets_met": met,
        "categories": {k: dict(v) for k, v in sorted(by_category.items())},
        "false_positives": false_positives,
        "misses": misses,
    }


def _listing(rec: dict[str, Any], reject: dict[str, Any] | None) -> dict[str, Any]:
    """One false positive or miss: who, why, and the record's text."""
    quality = rec.get("meta", {}).get("quality", {})
    out = {
        "id": rec["id"],
        "lang": rec.get("lang"),
        "kind": quality.get("kind"),
        "category": quality.get("category"),
        "note": quality.get("note"),
        "instruction": rec.get("instruction", ""),
        "input": rec.get("input", ""),
        "output": rec.get("output", ""),
    }
    if rec.get("messages"):
        out["messages"] = rec["messages"]
    if reject is not None:
        out.update(rule=reject.get("reason"), stage=reject.get("stage"), detail=reject.get("detail"))
        if reject.get("duplicate_of"):
            out["duplicate_of"] = reject["duplicate_of"]
    return out


# ---------------------------------------------------------------------------------------------- the run


def filter_config(files: list[Path], out: Path, embed: bool) -> Any:
    """configs/seeds-to-sft.yaml's filter section over ``files``, on the CPU, without the judge."""
    from datagen.config import load_yaml
    from datagen.filter.pipeline import load_config

    section = dict(load_yaml(CONFIG).get("filter") or {})
    section.update(inputs=[str(p) for p in files], out=str(out), judge=False, embed_dedup=embed, embed_device="cpu")
    return load_config(None, **section)


def run(fixtures: Path, embed: bool = True, holdout: Path | None = None) -> dict[str, Any]:
    """Filter the fixtures (and the held-out ones, in the same run) and score each set (plus config and timings).

    The input order is every ``sound*`` file (main set, then held-out), then the defect files, so a duplicate's
    original always comes first; each set is scored on its own records.
    """
    from datagen.filter.pipeline import REJECTS, run_filter
    from datagen.records import read_examples

    main_files = fixture_files(fixtures)
    if not main_files:
        raise FixtureError(f"{fixtures}: no .jsonl fixture files")
    held_files = fixture_files(holdout) if holdout is not None and holdout.is_dir() else []
    files = (
        [p for p in main_files if p.name.startswith("sound")]
        + [p for p in held_files if p.name.startswith("sound")]
        + [p for p in main_files if not p.name.startswith("sound")]
        + [p for p in held_files if not p.name.startswith("sound")]
    )
    records = load_truth(main_files)
    held = load_truth(held_files) if held_files else []
    clash = {r["id"] for r in records} & {r["id"] for r in held}
    if clash:
        raise FixtureError(f"held-out fixture ids repeat main ones: {sorted(clash)[:5]}")
    with tempfile.TemporaryDirectory(prefix="bench_quality-") as tmp:
        cfg = filter_config(files, Path(tmp) / "filter", embed)
        started = time.perf_counter()
        stats = asyncio.run(run_filter(cfg))
        seconds = time.perf_counter() - started
        rejects = {r.id: r.reject or {} for r in read_examples(Path(tmp) / "filter" / REJECTS)}
    result = score(records, rejects)
    result.update(
        fixtures=_shown(fixtures),
        files=[p.name for p in main_files],
        records=len(records) + len(held),
        filter_seconds=round(seconds, 1),
        config={
            "rouge_threshold": cfg.rouge_threshold,
            "embed_threshold": cfg.embed_threshold,
            "embed_dedup": cfg.embed_dedup,
            "embed_model": cfg.embed_model or "bundled all-MiniLM-L6-v2",
            "embed_device": cfg.embed_device,
            "judge": cfg.judge,
            "keep": cfg.keep,
        },
        rejects_by_stage=stats.get("rejects_by_stage", {}),
        holdout=None,
    )
    if held:
        result["holdout"] = {
            **score(held, rejects),
            "fixtures": _shown(holdout),
            "files": [p.name for p in held_files],
        }
    return result


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# ---------------------------------------------------------------------------------------------- rendering


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{100 * rate:.1f}%"


def _mark(met: bool) -> str:
    return "yes" if met else "**no**"


def summary_table(result: dict[str, Any]) -> str:
    """The figures beside their targets, as a Markdown table."""
    t = TARGETS
    rows = ["| measure | figure | target | met |", "| --- | --- | --- | --- |"]
    for lang, e in result["sound"].items():
        rows.append(
            f"| sound kept, {lang} | {_pct(e['kept_rate'])} ({e['kept']}/{e['total']}) | "
            f"≥ {t['sound_kept']:.0%} | {_mark(e['met'])} |"
        )
    overall = result["overall_caught_rate"]
    rows.append(
        f"| defects caught, all kinds | {_pct(overall)} ({result['overall_caught']}/"
        f"{result['overall_defects']}) | ≥ {t['overall_caught']:.0%} | "
        f"{_mark(overall is not None and overall >= t['overall_caught'])} |"
    )
    for kind, e in result["defects"].items():
        rows.append(
            f"| caught: {kind} | {_pct(e['caught_rate'])} ({e['caught']}/{e['total']}) | "
            f"≥ {t['kind_caught']:.0%} | {_mark(e['met'])} |"
        )
    return "\n".join(rows)


def _code(text: Any, limit: int = 240) -> str:
    """``text`` as an inline code span showing escapes (newlines as \\n), cut at ``limit`` characters."""
    s = json.dumps(text, ensure_ascii=False)
    if len(s) > limit:
        s = s[:limit] + "…"
    return "`` " + s.replace("``", "`\u200b`") + " ``"


def _record_lines(item: dict[str, Any]) -> list[str]:
    """The record's text under its bullet, one field a line (Markdown hard breaks: two trailing spaces)."""
    if item.get("messages"):
        turns = " / ".join(f"{m['role']}: {m['content']}" for m in item["messages"])
        return [f"  conversation: {_code(turns, 400)}"]
    lines = [f"  instruction: {_code(item['instruction'])}"]
    if item.get("input"):
        lines.append(f"  input: {_code(item['input'])}")
    lines.append(f"  output: {_code(item['output'])}")
    return lines


def _bullet(head: str, item: dict[str, Any]) -> list[str]:
    lines = [head, *_record_lines(item)]
    return [line + "  " for line in lines[:-1]] + lines[-1:]


def render(result: dict[str, Any], tail: str) -> str:
    """The whole document: generated part, marker line, then ``tail`` (the hand-written part)."""
    sound_total = sum(e["total"] for e in result["sound"].values())
    held = result.get("holdout")
    lines = [
        "# Quality benchmark",
        "",
        (
            "Written by `python bench/bench_quality.py` (the `quality` section of `make bench`); everything above the "
            "marker line near the end is regenerated, everything below it is kept. The real filter "
            "(`datagen.filter.pipeline.run_filter`) runs over hand-written fixtures "
            f"(`{result['fixtures']}/`: {', '.join(result['files'])}) with ground truth in `meta.quality`: "
            f"{sound_total} sound records and {result['overall_defects']} planted defects of "
            f"{len(result['defects'])} kinds. Config: `configs/seeds-to-sft.yaml`'s filter section "
            f"(ROUGE-L {result['config']['rouge_threshold']}, embedding cosine {result['config']['embed_threshold']}"
            f"{'' if result['config']['embed_dedup'] else ' — embedding stage OFF'}, keep "
            f"{result['config']['keep']}, no judge), encoder {result['config']['embed_model']} on "
            f"{result['config']['embed_device']}. Targets (issue 17) are shown, not asserted."
        ),
        "",
        f"- date: {result.get('date', '')}",
        (f"- filter time: {result['filter_seconds']} s for {result['records']} records (model loading included)"),
        f"- all targets met: {_mark(result['all_targets_met'])}",
    ]
    if held:
        lines.append(
            f"- held-out set (`{held['fixtures']}/`, scored separately, see the end): all targets met: "
            f"{_mark(held['all_targets_met'])}"
        )
    lines += ["", "## Figures", "", summary_table(result), ""]
    found = result.get("classify")
    if found:
        overall = found["heldout"]["all"]["combined"]
        lines += [
            "## Classification decision (Self-Instruct's routing, `datagen classify`)",
            "",
            (
                f"Held-out labelled set (`tests/fixtures/classify/heldout.jsonl`, never used as neighbours): accuracy "
                f"{overall['accuracy']:.1%} (target ≥ 90%), recall on classification tasks {overall['recall']:.1%} "
                f"(target ≥ 75%): {_mark(all(found['targets_met'].values()))}. From "
                "`bench/bench_classify.py --no-model-vote`; the model vote only breaks ties."
            ),
            "",
            found["markdown"],
            "",
        ]
    lines += _details(result, "##")
    if held:
        h_sound = sum(e["total"] for e in held["sound"].values())
        lines += [
            "",
            "## Held-out fixtures",
            "",
            (
                f"`{held['fixtures']}/` ({', '.join(held['files'])}): {h_sound} sound records and "
                f"{held['overall_defects']} defects, written after the rules were tuned on the main set and meant "
                "never to be tuned on (a rule written for one of these records makes this check worthless); "
                "filtered in the same run, scored on their own. A check that the rules generalise; fewer "
                "records per kind, so each figure moves in larger steps."
            ),
            "",
            summary_table(held),
            "",
            *_details(held, "###"),
        ]
    return "\n".join(lines).rstrip() + "\n\n" + MARKER + "\n" + tail.lstrip("\n")


def _details(result: dict[str, Any], level: str) -> list[str]:
    """Rules behind the figures, kept-rate per category, then every false positive and miss."""
    sub = level + "#"
    lines = [
        f"{level} What dropped sound records, and what caught each defect kind",
        "",
        "| group | dropped or caught by (rule: count) |",
        "| --- | --- |",
    ]
    for lang, e in result["sound"].items():
        lines.append(
            f"| sound {lang} (false positives) | {', '.join(f'{r}: {n}' for r, n in e['dropped_by'].items()) or '–'} |"
        )
    for kind, e in result["defects"].items():
        lines.append(
            f"| {kind} ({e.get('en', 0)} en, {e.get('zh', 0)} zh) | "
            f"{', '.join(f'{r}: {n}' for r, n in e['caught_by'].items()) or '–'} |"
        )
    lines += [
        "",
        f"{level} Sound records kept, by category",
        "",
        "| language/category | kept | total |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {c.get('kept', 0)} | {c['total']} |" for name, c in result["categories"].items()]

    fps = result["false_positives"]
    lines += ["", f"{level} False positives: {len(fps)} sound records dropped, by rule", ""]
    if not fps:
        lines.append("None.")
    by_rule: dict[str, list] = defaultdict(list)
    for item in fps:
        by_rule[item.get("rule") or "?"].append(item)
    for rule, items in sorted(by_rule.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines += [f"{sub} {rule} ({len(items)})", ""]
        for item in items:
            dup = f", duplicate of `{item['duplicate_of']}`" if item.get("duplicate_of") else ""
            lines += _bullet(
                f"- `{item['id']}` ({item['lang']}, {item.get('category')}; {item.get('stage')}) — "
                f"detail: {_code(item.get('detail'), 160)}{dup}",
                item,
            )
        lines.append("")
    misses = result["misses"]
    lines += ["", f"{level} Misses: {len(misses)} defects kept, by kind", ""]
    if not misses:
        lines.append("None.")
    by_kind: dict[str, list] = defaultdict(list)
    for item in misses:
        by_kind[item["kind"]].append(item)
    for kind, items in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines += [f"{sub} {kind} ({len(items)})", ""]
        for item in items:
            lines += _bullet(f"- `{item['id']}` ({item['lang']}) — {item.get('note') or ''}", item)
        lines.append("")
    return lines


def hand_written_tail(doc: Path) -> str:
    """What follows the marker line in an existing document, or the audit section's placeholder."""
    if doc.exists():
        text = doc.read_text(encoding="utf-8")
        if MARKER in text:
            return text.split(MARKER, 1)[1]
    return AUDIT_PLACEHOLDER


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def markdown_summary(result: dict[str, Any]) -> str:
    """The short form for docs/BENCHMARKS.md (bench/run.py shows a result's ``markdown`` key)."""
    text = (
        summary_table(result) + f"\n\n{len(result['false_positives'])} false positives and "
        f"{len(result['misses'])} misses, each listed in docs/QUALITY.md."
    )
    held = result.get("holdout")
    if held:
        kept = ", ".join(f"{lang} {_pct(e['kept_rate'])}" for lang, e in held["sound"].items())
        text += f" Held-out set: sound kept {kept}, defects caught {_pct(held['overall_caught_rate'])}."
    return text


def brief_result(result: dict[str, Any], doc: Path | None) -> dict[str, Any]:
    """The headline figures, for bench/run.py's docs/BENCHMARKS.md section (the lists live in the document)."""
    out: dict[str, Any] = {"markdown": result["markdown"]}
    for lang, e in result["sound"].items():
        out[f"sound_kept_rate_{lang}"] = e["kept_rate"]
    out.update(
        overall_caught_rate=result["overall_caught_rate"],
        all_targets_met=result["all_targets_met"],
        false_positives=len(result["false_positives"]),
        misses=len(result["misses"]),
        records=result["records"],
        filter_seconds=result["filter_seconds"],
        embed_dedup=result["config"]["embed_dedup"],
    )
    held = result.get("holdout")
    if held:
        for lang, e in held["sound"].items():
            out[f"holdout_sound_kept_rate_{lang}"] = e["kept_rate"]
        out.update(
            holdout_caught_rate=held["overall_caught_rate"],
            holdout_targets_met=held["all_targets_met"],
            holdout_false_positives=len(held["false_positives"]),
            holdout_misses=len(held["misses"]),
        )
    if doc is not None:
        out["doc"] = str(doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc)
    return out


def classification_figures() -> dict[str, Any] | None:
    """``bench/bench_classify.py --no-model-vote``'s result: the classification decision (cues + neighbours) on
    the seeds, leave-one-out, and on the held-out labelled set. The model vote only breaks ties; its own figures
    are in the ``classify`` section of ``make bench``."""
    with tempfile.TemporaryDirectory(prefix="bench_quality-classify-") as tmp:
        out = Path(tmp) / "classify.json"
        done = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("bench_classify.py")), "--no-model-vote", "--out", str(out)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not out.exists():
            print(f"bench_quality: bench_classify failed: {done.stderr[-500:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", type=Path, default=FIXTURES, help="folder of fixture .jsonl files")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the document (.md; default docs/QUALITY.md), or the short JSON result if it ends in .json",
    )
    parser.add_argument(
        "--holdout",
        type=Path,
        default=HOLDOUT,
        help="folder of held-out fixtures, scored separately (default: tests/fixtures/quality_holdout)",
    )
    parser.add_argument("--no-holdout", action="store_true", help="leave the held-out fixtures out")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document, when --out names the JSON result")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="write the full result (every figure, false positive and miss) as JSON here",
    )
    parser.add_argument("--no-doc", action="store_true", help="write no document (bench/run.py --smoke)")
    parser.add_argument("--no-embed", action="store_true", help="skip the embedding stage (a quick check only)")
    args = parser.parse_args(argv)
    doc, brief = args.doc, None
    if args.out is not None and args.out.suffix == ".json":
        brief = args.out
    elif args.out is not None:
        doc = args.out
    from datagen.errors import DatagenError

    try:
        result = run(
            args.fixtures.resolve(),
            embed=not args.no_embed,
            holdout=None if args.no_holdout else args.holdout.resolve(),
        )
    except (FixtureError, DatagenError) as exc:  # bad fixtures or config: say what, exit 2 (STYLE.md §4)
        print(f"bench_quality: {exc}", file=sys.stderr)
        return 2
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["classify"] = None if args.no_embed else classification_figures()
    result["markdown"] = markdown_summary(result)
    print(summary_table(result))
    print(
        f"{len(result['false_positives'])} false positives, {len(result['misses'])} misses; "
        f"filter {result['filter_seconds']} s"
    )
    if result.get("holdout"):
        print("held-out set:")
        print(summary_table(result["holdout"]))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, ensure_ascii=False, indent=1))
        print(f"wrote {args.json}")
    if brief is not None:
        write_text_atomic(brief, json.dumps(brief_result(result, None if args.no_doc else doc), ensure_ascii=False))
        print(f"wrote {brief}")
    if not args.no_doc:
        write_text_atomic(doc, render(result, hand_written_tail(doc)))
        print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
