"""report.html's curation panels from a hand-made run folder (no model, no server), and the verbs chart's parse."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess

import pytest

from datagen.records import Example, write_json, write_jsonl
from datagen.report import verb_object, write_report
from tests.pipeline.report_run import KEPT, REJECTS, make_run


def _section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, f"no section {section_id}"
    return html_lib.unescape(re.sub(r"<[^>]+>", " ", match.group(1)))


def test_every_curation_panel_is_rendered_from_the_run_files(tmp_path):
    page = write_report(make_run(tmp_path / "run")).read_text(encoding="utf-8")

    rejected = _section(page, "rejected-examples")
    for stage, rules in REJECTS.items():
        for reason, rule_stage, detail, pairs in rules:
            assert re.search(rf"{stage}: {reason}\s+{len(pairs)} rejected", rejected), (stage, reason)
            shown = [i for i, o in pairs if f"Instruction:  {i}" in rejected and f"Answer:  {o}" in rejected]
            assert len(shown) == min(3, len(pairs))  # three examples (or all there are), each with its answer
    assert "1 word(s) for an open task" in rejected and '"rouge_l": 0.82' in rejected and "[heuristics]" in rejected

    kept = _section(page, "kept-examples")
    for method in (*KEPT, "self-instruct-multiturn"):
        assert re.search(rf"\b{method}\b", kept)
    assert sum(kept.count(i) for i, _ in KEPT["self-instruct"]) == 3  # three of the five, not all
    assert "Make it cheaper." in kept and "Take the train and camp." in kept  # a conversation turn by turn
    assert "from curated.jsonl" in kept

    classifier = _section(page, "classifier")
    assert re.search(r"classifier_agreement\.rate\s+87\.5%", classifier)
    assert re.search(r"classifier_agreement\.evaluated\s+16", classifier)

    note = re.search(r'<p class="note" id="shortfall">(.*?)</p>', page).group(1)
    assert "smaller than asked" in note and "self-instruct 5 of 20 instructions" in note and "self-qa" not in note

    verbs = _section(page, "verbs")
    assert re.search(r"write\s+1\s+poem \(1\)", verbs) and re.search(r"翻译\s+1\s+话 \(1\)", verbs)
    assert "English" in verbs and "Chinese" in verbs
    assert not re.search(r"\b(how|what|the)\s+\d", verbs)  # question words are not verbs
    assert page.count('alt="root verbs and objects"') == 2  # one chart per language

    training = _section(page, "training")
    assert "3 point(s): step 0: 2.9 · step 5: 2.5 · step 10: 2.2" in training
    assert 'alt="training loss curve"' in page

    side = _section(page, "side-by-side")
    for text in ("Name a primary colour.", "Colours are nice.", "把“你好”翻译成英文。", "你好", "Hello."):
        assert text in side


def test_a_run_with_only_one_generator_renders_without_the_optional_files(tmp_path):
    run = tmp_path / "run"
    write_jsonl(
        run / "self_qa" / "records.jsonl",
        [Example(instruction="Summarize the passage.", output="It is about tides.", meta={"method": "self-qa"})],
    )
    write_json(
        run / "manifest.json",
        {"name": "qa", "config": {"self_qa": {}}, "stages": {"self_qa": {"kept": 1, "rejected": 0}}},
    )
    page = write_report(run).read_text(encoding="utf-8")
    assert "No rejected records in this run." in _section(page, "rejected-examples")
    assert "No classifier agreement recorded" in _section(page, "classifier")
    assert "No evaluation in this run." in _section(page, "side-by-side")
    assert "generators' records.jsonl" in _section(page, "kept-examples")
    assert 'id="shortfall"' not in page  # no filter ran, nothing asked of self-qa: no note


def test_curated_set_meeting_the_ask_has_no_shortfall_note_and_new_classifier_fields_show(tmp_path):
    run = make_run(tmp_path / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["config"]["self_instruct"]["num_instructions"] = 5
    write_json(run / "manifest.json", manifest)
    stats = json.loads((run / "self_instruct" / "stats.json").read_text())
    stats.pop("classifier_agreement")
    stats["classification_evidence"] = {"recall_on_classification_seeds": 0.8, "neighbours": 12}
    write_json(run / "self_instruct" / "stats.json", stats)
    page = write_report(run).read_text(encoding="utf-8")
    assert 'id="shortfall"' not in page
    classifier = _section(page, "classifier")
    assert re.search(r"classification_evidence\.recall_on_classification_seeds\s+80\.0%", classifier)
    assert "classifier_agreement" not in classifier


@pytest.mark.parametrize(
    "curve",
    [
        [{"loss": 2.0, "step": 1}, {"eval_loss": 2.8, "step": 0}, {"eval_loss": 2.3, "step": 4}, {"train_runtime": 9}],
        {"log_history": [{"eval_loss": 2.8, "step": 0}, {"eval_loss": 2.3, "step": 4}]},
        {"train": [{"step": 1, "loss": 2.0}], "eval": [{"step": 0, "eval_loss": 2.8}, {"step": 4, "eval_loss": 2.3}]},
    ],
)
def test_every_eval_point_is_plotted_whatever_the_curve_layout(tmp_path, curve):
    run = tmp_path / "run"
    write_json(run / "train" / "loss_curve.json", curve)
    page = write_report(run).read_text(encoding="utf-8")
    assert "2 point(s): step 0: 2.8 · step 4: 2.3" in _section(page, "training")
    assert 'alt="training loss curve"' in page


@pytest.mark.parametrize(
    "instruction, expected",
    [
        ("Write a short poem about the sea.", ("write", "poem")),
        ("Please classify the following review.", ("classify", "review")),
        ("Can you give me a list of three fruits?", ("give", "list")),
        ("Could you please rewrite this sentence in a formal tone?", ("rewrite", "sentence")),
        ("Given the list of numbers, sort them in ascending order.", ("sort", None)),
        ("Give a shell command that lists all large files.", ("give", "command")),
        ("Draft a warm, polite email to a landlord.", ("draft", "email")),
        ("Come up with five icebreaker questions for a team.", ("come up with", "questions")),
        ("Explain why the sky is blue.", ("explain", None)),
        ("What is the capital of France?", None),
        ("How do I boil an egg?", None),
        ("The following text is a review.", None),
        ("Four friends share a bill of $86.", None),
        ("写一首关于秋天的诗。", ("写", "诗")),
        ("请解释量子计算的基本原理。", ("解释", "原理")),
        ("列出三种富含维生素C的水果。", ("列出", "水果")),
        ("把下面这句话翻译成英文。", ("翻译", "话")),
        ("根据以下信息写一张请假条。", ("写", "请假条")),
        ("以“春雨”为主题，写一首五言小诗。", ("写", "小诗")),
        ("为一家书店写三条宣传语。", ("写", "宣传语")),
        ("帮我总结这篇文章。", ("总结", "文章")),
        ("判断下面的说法是否正确。", ("判断", "说法")),
        ("为什么月亮会有阴晴圆缺？", None),
        ("", None),
    ],
)
def test_root_verb_and_first_noun_object(instruction, expected):
    assert verb_object(instruction) == expected


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_curation_panels_show_in_headless_chromium(tmp_path):
    report = write_report(make_run(tmp_path / "run"))
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,6400",
    ]
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0 and "Uncaught" not in dom.stderr
    for section in (
        "shortfall",
        "rejected-examples",
        "kept-examples",
        "classifier",
        "verbs",
        "training",
        "side-by-side",
    ):
        assert f'id="{section}"' in dom.stdout, section
    assert dom.stdout.count('class="reject"') == 2 + 3 + 3 + 2 and dom.stdout.count('class="sample"') == 3 + 1 + 2 + 2
    assert 'alt="training loss curve"' in dom.stdout and dom.stdout.count('alt="root verbs and objects"') == 2
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 100_000
