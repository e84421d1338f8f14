"""The classification decision: cues, neighbour vote (leave-one-out), model tie-break, evidence, the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.generate import classify
from datagen.generate.classify import NeighbourIndex, agreement, combine, cue_vote, decide
from datagen.prompts import render
from datagen.records import Example, read_examples, write_jsonl
from tests.plugins.faults import MODEL_ID

HELDOUT = "tests/fixtures/classify/heldout.jsonl"


@pytest.fixture(scope="module")
def index():
    return NeighbourIndex(classify.labelled_tasks(classify.DEFAULT_NEIGHBOURS))


# ------------------------------------------------------------------------------------------- cues


@pytest.mark.parametrize(
    "text,vote,match",
    [
        ("Classify the animal as mammal, bird or fish.", True, "classify"),
        ("State whether the claim is true or false.", True, "whether"),
        ("Which of the following cities is a capital?", True, "which of"),
        ("Is this email spam or not?", True, "is this … or …"),
        ("Rate the ticket's urgency as high, medium, or low.", True, "option list"),
        ("Categorize the expense for the report.", True, "categorize"),
        ("判断这条评论的情感是正面还是负面。", True, "判断"),
        ("这本书属于哪一类？", True, "属于"),
        ("给这条反馈打上标签：建议、错误或咨询。", True, "分类"),
        # open tasks: the main verb comes first, even when a cue word follows it
        ("Write a short story about a man who can transform his body into a robot.", False, "write"),
        ("Write a Python function that checks whether a number is prime.", False, "write"),
        ("Explain whether renting or buying is better, and why.", False, "explain"),
        ("编写一个函数，判断字符串是否为回文。", False, "编写"),
        ("解释什么是通货膨胀。", False, "解释"),
        # neither: the neighbours and the model decide
        ("Identify the flaw in the reasoning below.", None, None),
    ],
)
def test_cue_vote_en_and_zh(text, vote, match):
    assert cue_vote(text) == (vote, match)


def test_model_only_breaks_ties():
    assert combine(cue=True, neighbour=0.0, model=None) is True  # a cue outweighs neighbours alone
    assert combine(cue=True, neighbour=0.0, model=False) is False  # ... but not neighbours and model together
    assert combine(cue=False, neighbour=0.1, model=True) is False  # weak model cannot overturn cue + neighbours
    assert combine(cue=False, neighbour=0.9, model=True) is True  # where they disagree, it decides
    assert combine(cue=None, neighbour=None, model=True) is True  # the only voice left
    assert combine(cue=None, neighbour=None, model=None) is False  # nothing known: not classification


# ------------------------------------------------------------------------------------------- decisions


CLEAR = [
    ("Decide whether the tweet is sarcastic or sincere.", True),
    ("Classify the fruit as tropical or temperate.", True),
    ("Is the sentence grammatical? Answer yes or no.", True),
    ("Write a short story about a man who can transform his body into a robot.", False),
    ("Give me three ideas for a birthday party.", False),
    ("Translate the paragraph into French.", False),
    ("判断这句话是事实还是观点。", True),
    ("这条短信是垃圾短信吗？只回答是或否。", True),
    ("写一首关于秋天的诗。", False),
    ("用Python写一个冒泡排序。", False),
]


def test_decisions_on_clear_examples_with_their_evidence(index):
    decisions = decide([t for t, _ in CLEAR], index)
    assert [d.is_classification for d in decisions] == [label for _, label in CLEAR]
    evidence = decisions[0].evidence()
    assert set(evidence) == {"cue", "neighbour", "model"}
    assert evidence["cue"] == {"vote": True, "match": "whether"} and evidence["model"] == {"vote": None}
    nearest = evidence["neighbour"]["nearest"]
    assert len(nearest) == 3 and all(
        isinstance(t, str) and isinstance(lab, bool) and -1 <= s <= 1 for t, lab, s in nearest
    )
    assert 0 <= evidence["neighbour"]["score"] <= 1 and evidence["neighbour"]["vote"] is True
    # Chinese neighbours are Chinese seeds (character n-grams), English ones English (MiniLM)
    zh = decisions[6].evidence()["neighbour"]["nearest"]
    assert all(any("\u4e00" <= c <= "\u9fff" for c in text) for text, _, _ in zh)


def test_neighbour_vote_is_leave_one_out():
    labelled = [
        ("Classify the colour as warm or cool.", True),
        ("Classify the fruit as sweet or sour.", True),
        ("Write a poem about the sea.", False),
        ("Write a poem about the moon.", False),
        ("写一首关于山的诗。", False),
        ("判断这句话是对还是错。", True),
        ("判断这个数是奇数还是偶数。", True),
    ]
    index = NeighbourIndex(labelled, k=2)
    votes = index.votes([t for t, _ in labelled])
    for (text, label), vote in zip(labelled, votes):
        assert text not in [n[0] for n in vote["neighbours"]]  # never its own neighbour
    assert votes[0]["score"] > 0.5 and votes[2]["score"] < 0.5  # the other of its pair decides
    assert votes[5]["score"] > 0.5 and all(n[0].startswith(("写", "判断")) for n in votes[5]["neighbours"])
    found = agreement(
        [lab for _, lab in labelled], [d.is_classification for d in decide([t for t, _ in labelled], index)]
    )
    assert found["evaluated"] == 7 and found["accuracy"] == 1.0 and found["recall"] == 1.0


def test_agreement_counts():
    found = agreement([True, True, False, False, True], [True, False, True, False, None])
    assert (found["agree"], found["accuracy"], found["precision"], found["recall"], found["unanswered"]) == (
        2,
        0.4,
        0.5,
        0.3333,
        1,
    )


def test_heldout_fixture_is_labelled_en_and_zh_and_never_a_seed():
    rows = [json.loads(line) for line in open(HELDOUT, encoding="utf-8")]
    seeds = {t for t, _ in classify.labelled_tasks(classify.DEFAULT_NEIGHBOURS)}
    assert len(rows) >= 80 and not {r["instruction"] for r in rows} & seeds
    share = sum(r["is_classification"] for r in rows) / len(rows)
    assert 0.35 <= share <= 0.45 and {r["lang"] for r in rows} == {"en", "zh"}


# ------------------------------------------------------------------------------------------- the command


def test_cli_writes_every_record_with_the_decision_and_evidence(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(
        src,
        [Example(instruction=t, output="", is_classification=label) for t, label in CLEAR[:4]]
        + [Example(instruction="Summarise the meeting notes.", output="They agreed.")],
    )
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        cli, ["classify", str(src), "--out", str(out), "--no-model-vote"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "wrote 5 records" in result.output and "agreement with the input's labels 100.0%" in result.output
    records = read_examples(out)
    assert [r.is_classification for r in records] == [True, True, True, False, False]
    assert records[4].output == "They agreed." and "label" not in records[4].meta["classify"]
    assert records[0].meta["classify"]["label"] is True and records[0].meta["classify"]["cue"]["vote"] is True
    stats = json.loads((tmp_path / "out.jsonl.stats.json").read_text())
    assert stats["agreement"]["evaluated"] == 4 and stats["agreement"]["accuracy"] == 1.0 and stats["llm"] is None


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "x", "output": ""}\n{"instruction": 3}\n')
    result = CliRunner().invoke(cli, ["classify", str(src), "--out", str(tmp_path / "out.jsonl"), "--no-model-vote"])
    assert result.exit_code == 2 and "in.jsonl:2" in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_model_vote_over_http_breaks_ties_only(fault_server, tmp_path):
    """Against a real server: the model's Yes/No reaches the evidence, decides where cue and neighbours are
    silent, and is outvoted where they speak. A failed request is no vote."""
    answers = {
        "Consider the animal described below.": " Yes",
        "Consider the plant described below.": " No",
        "Write a haiku about rain.": " Yes",
        "Consider the rock described below.": " Yes",
    }

    def responder(kind, body):
        task = body["prompt"].rstrip().rsplit("Task: ", 1)[1].split("\n")[0]
        return answers[task]

    fault_server.responder = responder
    neighbours = tmp_path / "zh_only.jsonl"  # no English neighbours: the English tasks get no neighbour vote
    neighbours.write_text(
        json.dumps(
            {
                "id": "z",
                "name": "z",
                "instruction": "判断这句话是对还是错。",
                "instances": [{"input": "", "output": "对"}],
                "is_classification": True,
            },
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [Example(instruction=t, output="") for t in answers])
    out = tmp_path / "out.jsonl"
    rock_prompt = render("en/self_instruct_classify", instruction="Consider the rock described below.")
    fault_server.plan.script = {rock_prompt: ["500"] * 5}
    result = CliRunner().invoke(
        cli,
        [
            "classify",
            str(src),
            "--out",
            str(out),
            "--neighbours",
            str(neighbours),
            "--base-url",
            fault_server.url,
            "--model",
            MODEL_ID,
            "--max-retries",
            "0",
            "--no-cache",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    records = {r.instruction: r for r in read_examples(out)}
    evidence = {t: r.meta["classify"] for t, r in records.items()}
    assert evidence["Consider the animal described below."]["model"]["vote"] is True
    assert evidence["Consider the animal described below."]["neighbour"]["score"] is None
    assert records["Consider the animal described below."].is_classification is True  # the model decided
    assert records["Consider the plant described below."].is_classification is False
    assert evidence["Write a haiku about rain."]["model"]["vote"] is True
    assert records["Write a haiku about rain."].is_classification is False  # the cue outweighs it
    assert evidence["Consider the rock described below."]["model"]["vote"] is None  # failed: no vote
    assert records["Consider the rock described below."].is_classification is False
    assert {e["text"] for e in fault_server.log} == {
        render("en/self_instruct_classify", instruction=t) for t in answers
    }
