"""Self-Instruct's routing uses the classification decision, and label copies are stopped at the source.

The failure this pins: SmolLM2 answered "Yes" to "is it classification?" for open tasks (the classify
prompt's last example was a "Yes"), so "Write a short story…" went output-first, and the model continued
the output-first prompt with its last example's first label, "Unsupport".
"""

from __future__ import annotations

import asyncio
import json

from datagen.generate.self_instruct import filter_instances, generate, in_context_outputs, instance_prompt
from datagen.records import read_examples
from tests.generate.test_self_instruct import config, scripted

OPEN_TASKS = [
    "Write a short story about a man who can transform his body into a robot.",
    "Describe a sunny morning at the harbor in three sentences.",
    "Explain how a lighthouse keeper spends a stormy night.",
]
CLF_TASKS = [
    "Classify the review of the harbor cafe as positive or negative.",
    "Decide whether the headline about the glacier is clickbait or not clickbait.",
]


def copying_model():
    """Says Yes to every classification question and copies the output-first prompt's labels."""
    base = scripted()
    served = {"n": 0}

    def respond(kind, body):
        prompt = body.get("prompt", "")
        if prompt.rstrip().endswith("Is it classification?"):
            return " Yes"
        if "Given the classification task definition" in prompt and prompt.endswith("Class label: positive\n"):
            return "Input: Lovely coffee.\nClass label: negative\nInput: Cold soup."  # continues the started answer
        if "Given the classification task definition" in prompt:
            return "Class label: Unsupport\nInput: The glacier moved.\nClass label: positive\nInput: Lovely coffee."
        if prompt.startswith("Come up with a series") and served["n"] == 0:
            served["n"] += 1
            return " " + "\n".join(f"{10 + i}. {t}" if i else t for i, t in enumerate(OPEN_TASKS + CLF_TASKS))
        return base(kind, body)

    return respond


def test_open_tasks_go_input_first_even_when_the_model_says_yes(fault_server, tmp_path):
    fault_server.responder = copying_model()
    stats = asyncio.run(generate(config(tmp_path, fault_server.url, num_instructions=5, batch_size=1)))
    out = tmp_path / "out"
    routes = {
        json.loads(l)["instruction"]: json.loads(l)["is_classification"]
        for l in (out / "is_clf.jsonl").read_text().splitlines()
    }
    assert all(routes[t] is False for t in OPEN_TASKS) and all(routes[t] is True for t in CLF_TASKS)
    records = read_examples(out / "records.jsonl")
    by_task = {r.instruction: r for r in records}
    for task in OPEN_TASKS:
        evidence = by_task[task].meta["classify"]
        assert evidence["model"]["vote"] is True and evidence["cue"]["vote"] is False
        assert by_task[task].meta["route"] == "input_first" and by_task[task].output != "Unsupport"
        assert (
            "Planks, mountain climbers, bicycle crunches and jumping jacks, combined with a calorie deficit, "
            "work best." in by_task[task].meta["in_context"]
        )
    # a task that names its labels gets its answer started with the first one, and keeps the task's labels
    kept_clf = [r for r in records if r.instruction == CLF_TASKS[0]]
    assert [(r.input, r.output) for r in kept_clf] == [("Lovely coffee.", "positive"), ("Cold soup.", "negative")]
    assert "Unsupport" in kept_clf[0].meta["in_context"] and "positive" not in kept_clf[0].meta["in_context"][3:]
    assert kept_clf[0].meta["route"] == "output_first"
    # elsewhere the copied label is dropped, and so is a label the task never names
    assert not any(r.output == "Unsupport" for r in records)
    copied = [r for r in read_examples(out / "rejects.jsonl") if r.reject["reason"] == "copied_in_context"]
    assert {r.output for r in copied} >= {"Unsupport"} and stats["rejects_by_reason"]["copied_in_context"] >= 2
    # agreement on the labelled seeds is the combined decision's, leave-one-out, with the model's beside it
    agreement, model = stats["classifier_agreement"], stats["model_agreement"]
    assert agreement["evaluated"] == model["evaluated"] == 10
    assert all(key.endswith("predicted=True") for key in model["confusion"])  # a model that always says Yes
    assert agreement["accuracy"] >= 0.8 and model["accuracy"] < agreement["accuracy"]


def test_in_context_outputs_are_read_from_the_rendered_prompt():
    out_first = in_context_outputs(instance_prompt("Label the tweet.", True, "en"))
    assert out_first[:3] == ["mixed", "positive", "negative"] and "Unsupport" in out_first
    assert in_context_outputs(instance_prompt("写一首诗。", False, "zh")) == [
        "平板支撑、登山跑、仰卧蹬车和开合跳效果较好，同时要控制饮食、保持热量缺口。",
        "上海、杭州、苏州",
        "100 °F ≈ 37.8 °C",
    ]
    assert "正面" in in_context_outputs(instance_prompt("判断情感。", True, "zh"))


def test_label_prefill_starts_the_answer_with_the_tasks_first_label():
    assert instance_prompt("Label the change as physical or chemical.", True, "en").endswith(
        "Task: Label the change as physical or chemical.\nClass label: physical\n"
    )
    assert instance_prompt("判断这个词是褒义还是贬义。", True, "zh").endswith("类别标签：褒义\n")
    assert instance_prompt("Label the tweet.", True, "en").endswith("Task: Label the tweet.\n")
    assert instance_prompt("Label the change as physical or chemical.", False, "en").endswith("Example 1\n")


def test_copy_filter_keeps_labels_the_task_names():
    shown = ["Support", "Unsupport", "positive"]
    kept, dropped, _ = filter_instances(
        [("a", "Unsupport"), ("b", "positive"), ("c", "A new answer.")],
        False,
        5,
        shown,
        "Is the review positive or negative?",
    )
    assert kept == [("b", "positive"), ("c", "A new answer.")] and dropped == [
        (("a", "Unsupport"), "copied_in_context")
    ]
    kept, dropped, _ = filter_instances([("", "正面")], False, 5, ["正面", "负面"], "写一首诗。")
    assert not kept and dropped[0][1] == "copied_in_context"
