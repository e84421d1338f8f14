"""The quality benchmark's fixtures are what the issue asks for, and its scoring and document are right.

Fast: nothing here loads the embedding model (the one end-to-end run switches the embedding stage off).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from datagen.formats import read_any
from datagen.rouge import greedy_dedup
from datagen.text import normalize_text

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "quality"
HOLDOUT = ROOT / "tests" / "fixtures" / "quality_holdout"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "bench_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bq = _load_bench()


@pytest.fixture(scope="module")
def records():
    """Every fixture record, in the order the benchmark feeds them to the filter."""
    out = []
    for path in bq.fixture_files(FIXTURES):
        out.extend(read_any(path))  # every line is a valid datagen record (RecordError otherwise)
    return out


@pytest.fixture(scope="module")
def held():
    """The held-out fixture records, in benchmark order."""
    return [r for path in bq.fixture_files(HOLDOUT) for r in read_any(path)]


def _kind(example) -> str:
    return example.meta["quality"]["kind"]


def test_fixture_counts_meet_the_minimums(records):
    counts = Counter((_kind(r), r.lang) for r in records)
    assert counts[("sound", "en")] >= 300 and counts[("sound", "zh")] >= 100
    per_kind = Counter(_kind(r) for r in records if _kind(r) != "sound")
    assert len(per_kind) >= 12, per_kind
    assert all(n >= 20 for n in per_kind.values()), per_kind
    for kind in (
        "refusal",
        "truncation",
        "label_copy",
        "short_answer_open_task",
        "unrelated_answer",
        "echo",
        "wrong_language",
        "placeholder",
        "repetition",
        "paraphrase_duplicate",
        "zh_near_copy",
        "injection",
    ):
        assert per_kind[kind] >= 20, kind
    assert {r.lang for r in records} == {"en", "zh"}
    defect_langs = Counter(r.lang for r in records if _kind(r) != "sound")
    assert defect_langs["zh"] >= 60 and defect_langs["en"] >= 60, defect_langs


def test_fixture_ids_unique_and_sound_files_first(records):
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids))
    kinds = [_kind(r) for r in records]
    assert kinds.index("sound") == 0 and max(i for i, k in enumerate(kinds) if k == "sound") < min(
        i for i, k in enumerate(kinds) if k != "sound"
    )


def test_sound_records_span_the_record_kinds_and_categories(records):
    sound = [r for r in records if _kind(r) == "sound"]
    methods = Counter(r.meta["method"] for r in sound)
    assert methods["self-instruct"] >= 250 and methods["self-qa"] >= 30 and methods["self-kg"] >= 30
    assert sum(1 for r in sound if r.messages) >= 15
    categories = Counter(r.meta["quality"]["category"] for r in sound)
    for category in (
        "classification",
        "factual",
        "code",
        "regex",
        "list",
        "letter",
        "url_task",
        "math",
        "rewriting",
        "output_equals_input_allowed",
        "blacklist_word_in_context",
        "self_kg",
    ):
        assert categories[category] >= 5, category
    outputs = {r.output for r in sound}
    assert {"Canberra.", "Positive", "积极", "[0, 1)"} <= outputs
    assert any(o.endswith("Best,\nAnna") for o in outputs)
    assert any(r.output == r.input for r in sound)  # tasks whose right answer is the input


def test_sound_tasks_are_distinct(records):
    """Self-Instruct tasks differ by instruction (ROUGE-L < 0.7, as the filter measures); Self-QA and Self-KG
    records differ by question and answer (their instructions may share a template)."""
    sound = [r for r in records if _kind(r) == "sound"]
    single = [r for r in sound if r.meta["method"] == "self-instruct"]
    normalised = [normalize_text(r.instruction) for r in single]
    assert len(normalised) == len(set(normalised))
    _, dropped = greedy_dedup([r.instruction for r in single], 0.7)
    assert not dropped, [(single[i].id, single[j].id, s) for i, j, s in dropped]
    facts = [(r.instruction, r.output) for r in sound if r.meta["method"] in ("self-qa", "self-kg")]
    assert len(facts) == len(set(facts))
    profiles = [r for r in sound if r.instruction.startswith("Give a short profile of")]
    assert len(profiles) >= 10 and len({r.output for r in profiles}) == len(profiles)


def test_planted_defects_are_wired_to_their_originals(records):
    position = {r.id: i for i, r in enumerate(records)}
    by_id = {r.id: r for r in records}
    for i, r in enumerate(records):
        quality = r.meta["quality"]
        if quality["kind"] in ("paraphrase_duplicate", "zh_near_copy"):
            original = by_id[quality["of"]]
            assert _kind(original) == "sound" and position[original.id] < i
            assert r.instruction != original.instruction or r.input != original.input or r.output != original.output
            if quality["kind"] == "zh_near_copy":
                assert r.lang == original.lang == "zh"
        if quality["kind"] == "label_copy":
            assert r.output in r.meta["in_context"], r.id
        assert quality["kind"] == "sound" or quality.get("note"), r.id
    assert sum(1 for r in records if r.messages and _kind(r) != "sound") >= 5  # defects in a later turn
    truncations = [r for r in records if _kind(r) == "truncation"]
    with_reason = sum(r.meta.get("finish_reason") == "length" for r in truncations)
    assert 5 <= with_reason <= len(truncations) - 5


@pytest.mark.parametrize(
    "folder, names",
    [(FIXTURES, ("sound_en.jsonl", "sound_zh.jsonl", "defects.jsonl")), (HOLDOUT, ("sound.jsonl", "defects.jsonl"))],
)
def test_fixture_files_match_their_source(tmp_path, folder, names):
    """The .jsonl files are what build.py writes from the data modules (edit those, then rebuild)."""
    done = subprocess.run(
        [sys.executable, str(folder / "build.py"), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for name in names:
        assert (tmp_path / name).read_text(encoding="utf-8") == (folder / name).read_text(encoding="utf-8"), name


def test_held_out_fixtures_cover_every_kind_and_stay_distinct(records, held):
    assert all(r.id.startswith("h-") for r in held) and not {r.id for r in held} & {r.id for r in records}
    counts = Counter((_kind(r), r.lang) for r in held)
    assert counts[("sound", "en")] >= 50 and counts[("sound", "zh")] >= 25
    main_kinds = {_kind(r) for r in records}
    per_kind = Counter(_kind(r) for r in held)
    assert main_kinds == set(per_kind) and all(n >= 3 for n in per_kind.values()), per_kind
    position = {r.id: i for i, r in enumerate(held)}
    for i, r in enumerate(held):
        if "of" in r.meta["quality"]:
            assert _kind(held[position[r.meta["quality"]["of"]]]) == "sound" and position[r.meta["quality"]["of"]] < i
        if _kind(r) == "label_copy":
            assert r.output in r.meta["in_context"]
    # held-out tasks are new tasks: no near-duplicate of each other or of a main-set task
    single = [
        r
        for r in records + held
        if r.meta["method"] == "self-instruct" and _kind(r) not in ("paraphrase_duplicate", "zh_near_copy")
    ]
    _, dropped = greedy_dedup([r.instruction for r in single], 0.7)
    assert not dropped, [(single[i].id, single[j].id, s) for i, j, s in dropped]


def _rec(rid, lang, kind):
    return {
        "id": rid,
        "lang": lang,
        "instruction": f"task {rid}",
        "input": "",
        "output": "answer",
        "meta": {"quality": {"kind": kind, "category": "math"} if kind == "sound" else {"kind": kind, "note": "n"}},
    }


def test_score_computes_kept_and_caught_rates():
    records = [
        _rec("s1", "en", "sound"),
        _rec("s2", "en", "sound"),
        _rec("s3", "en", "sound"),
        _rec("s4", "en", "sound"),
        _rec("z1", "zh", "sound"),
        _rec("r1", "en", "refusal"),
        _rec("r2", "zh", "refusal"),
        _rec("e1", "en", "echo"),
        _rec("e2", "en", "echo"),
        _rec("e3", "zh", "echo"),
    ]
    rejects = {
        "s2": {"stage": "heuristics", "reason": "truncated", "detail": "ends with ';'"},
        "r1": {"stage": "heuristics", "reason": "refusal", "detail": "i'm sorry"},
        "r2": {"stage": "heuristics", "reason": "refusal", "detail": "抱歉"},
        "e1": {"stage": "rouge_dedup", "reason": "rouge_near_duplicate", "detail": "x", "duplicate_of": "s1"},
    }
    result = bq.score(records, rejects)
    assert result["sound"]["en"]["kept"] == 3 and result["sound"]["en"]["kept_rate"] == 0.75
    assert result["sound"]["zh"]["kept_rate"] == 1.0 and result["sound"]["zh"]["met"]
    assert not result["sound"]["en"]["met"]
    assert result["defects"]["refusal"]["caught_rate"] == 1.0 and result["defects"]["refusal"]["met"]
    assert result["defects"]["echo"]["caught"] == 1 and result["defects"]["echo"]["caught_rate"] == 0.3333
    assert result["defects"]["echo"]["caught_by"] == {"rouge_near_duplicate": 1}
    assert result["overall_caught"] == 3 and result["overall_defects"] == 5 and result["overall_caught_rate"] == 0.6
    assert not result["all_targets_met"]
    assert [(f["id"], f["rule"], f["detail"]) for f in result["false_positives"]] == [
        ("s2", "truncated", "ends with ';'")
    ]
    assert sorted(m["id"] for m in result["misses"]) == ["e2", "e3"]
    assert result["categories"]["en/math"] == {"total": 4, "kept": 3}

    perfect = bq.score(records, {r["id"]: {"reason": "x"} for r in records if r["meta"]["quality"]["kind"] != "sound"})
    assert perfect["all_targets_met"] and perfect["overall_caught_rate"] == 1.0 and not perfect["false_positives"]


def test_render_lists_every_false_positive_and_miss_and_keeps_the_hand_written_part(tmp_path):
    records = [
        _rec("s1", "en", "sound"),
        _rec("s2", "zh", "sound"),
        _rec("r1", "en", "refusal"),
        _rec("r2", "en", "refusal"),
    ]
    result = bq.score(
        records,
        {
            "s2": {"stage": "heuristics", "reason": "language_mismatch", "detail": "zh → en"},
            "r1": {"stage": "heuristics", "reason": "refusal", "detail": "sorry"},
        },
    )
    result.update(
        fixtures="f",
        files=["a.jsonl"],
        records=4,
        filter_seconds=1.0,
        date="today",
        config={
            "rouge_threshold": 0.7,
            "embed_threshold": 0.9,
            "embed_dedup": True,
            "embed_model": "m",
            "embed_device": "cpu",
            "judge": False,
            "keep": "first",
        },
    )
    doc = tmp_path / "QUALITY.md"
    assert "## Audit of 30 curated records from make seeds-to-sft" in bq.hand_written_tail(doc)
    doc.write_text(bq.render(result, bq.hand_written_tail(doc)), encoding="utf-8")
    text = doc.read_text(encoding="utf-8")
    assert "| sound kept, en | 100.0% (1/1) | ≥ 98% | yes |" in text
    assert "| sound kept, zh | 0.0% (0/1) | ≥ 98% | **no** |" in text
    assert "| caught: refusal | 50.0% (1/2) | ≥ 90% | **no** |" in text
    assert "### language_mismatch (1)" in text and "`s2`" in text and "### refusal (1)" in text and "`r2`" in text
    assert text.count(bq.MARKER) == 1 and text.index(bq.MARKER) < text.index("## Audit of 30 curated records")

    doc.write_text(text.replace("_Not filled in yet._", "1. `dg-abc` sound: a correct haiku."), encoding="utf-8")
    doc.write_text(bq.render(result, bq.hand_written_tail(doc)), encoding="utf-8")
    again = doc.read_text(encoding="utf-8")
    assert "1. `dg-abc` sound: a correct haiku." in again and "_Not filled in yet._" not in again
    assert again.count(bq.MARKER) == 1


def test_bench_runs_the_real_filter_without_the_encoder(tmp_path):
    doc, full, brief = tmp_path / "Q.md", tmp_path / "q.json", tmp_path / "brief.json"
    assert bq.main(["--no-embed", "--out", str(doc), "--json", str(full)]) == 0
    result = json.loads(full.read_text(encoding="utf-8"))
    assert result["records"] == sum(
        1 for folder in (FIXTURES, HOLDOUT) for p in bq.fixture_files(folder) for _ in read_any(p)
    )
    assert result["config"] == {
        **result["config"],
        "rouge_threshold": 0.7,
        "embed_threshold": 0.9,
        "embed_dedup": False,
        "judge": False,
        "embed_device": "cpu",
    }
    assert set(result["sound"]) == {"en", "zh"} and len(result["defects"]) >= 12
    n_fp = sum(e["total"] - e["kept"] for e in result["sound"].values())
    assert len(result["false_positives"]) == n_fp
    assert len(result["misses"]) == result["overall_defects"] - result["overall_caught"]
    text = doc.read_text(encoding="utf-8")
    assert "## Audit of 30 curated records from make seeds-to-sft" in text
    held = result["holdout"]
    assert held["files"] == ["sound.jsonl", "defects.jsonl"] and set(held["sound"]) == {"en", "zh"}
    assert "## Held-out fixtures" in text and text.index("## Held-out fixtures") < text.index(bq.MARKER)
    assert (
        result["records"]
        == sum(e["total"] for e in result["sound"].values())
        + result["overall_defects"]
        + sum(e["total"] for e in held["sound"].values())
        + held["overall_defects"]
    )
    assert bq.main(["--no-embed", "--no-doc", "--no-holdout", "--out", str(brief)]) == 0
    short = json.loads(brief.read_text(encoding="utf-8"))
    assert short["markdown"].startswith("| measure |") and "doc" not in short and "holdout_caught_rate" not in short
    assert short["false_positives"] == n_fp
