"""Closing the loop: eval before/after, merge, and serving the trained adapter over real HTTP."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import ConfigError
from datagen.train import sft
from datagen.train.evaluate import EvalConfig, evaluate, mean_rouge, rouge_scores
from datagen.train.merge import merge
from tests.train.test_sft import tiny_config, write_toy

#: One reply to many prompts: a set the tiny random model memorises in ~30 steps (its logits are too flat
#: to tell prompts apart, so distinct replies would test the model, not the trainer).
REPLY = "The sky is blue today."
MEMO = [(f"Question number {i}: what colour is the sky?", REPLY) for i in range(6)]


@pytest.fixture(scope="module")
def memorised(tiny_model_dir, tmp_path_factory):
    """(adapter folder, data file): a LoRA adapter trained on MEMO."""
    out = tmp_path_factory.mktemp("memo")
    data = write_toy(out / "memo.jsonl", MEMO)
    cfg = tiny_config(tiny_model_dir, max_steps=30, per_device_train_batch_size=6, eval_fraction=0.0)
    sft.train(data, out / "run", cfg)
    return out / "run" / "adapter", data


def test_eval_scores_the_tuned_model_closer_to_the_references(memorised, tmp_path):
    adapter, data = memorised
    report = evaluate(data, tmp_path / "eval", EvalConfig(adapter=adapter, max_new_tokens=12))
    base, tuned = report["base"], report["tuned"]
    assert report["samples"] == 6 and report["base"] and report["adapter"] == str(adapter)
    assert base["rougeL"]["fmeasure"] < 0.1 < 0.4 < tuned["rougeL"]["fmeasure"]
    assert (
        tuned["rouge1"]["recall"] > base["rouge1"]["recall"]
        and tuned["rouge2"]["fmeasure"] > base["rouge2"]["fmeasure"]
    )
    assert tuned["loss"] < base["loss"] and tuned["perplexity"] < base["perplexity"]
    assert base["reference_tokens"] == tuned["reference_tokens"] > 6  # the reply and <|im_end|>, per sample
    assert report["improvement"]["loss"] == pytest.approx((base["loss"] - tuned["loss"]) / base["loss"])
    assert report["improvement"]["rougeL_fmeasure"] is None  # the base scored 0: no relative change defined

    assert json.loads((tmp_path / "eval" / "eval.json").read_text()) == report
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and {s["reference"] for s in samples} == {REPLY}
    assert samples[0]["prompt"] == [{"role": "user", "content": MEMO[0][0]}]
    assert sum(REPLY.rstrip(".") in s["tuned"] for s in samples) >= 3
    markdown = (tmp_path / "eval" / "samples.md").read_text()
    assert "| base | tuned | reference |" in markdown and markdown.count("## ") == 6


def test_eval_cli_scores_the_base_alone(tiny_model_dir, memorised, tmp_path):
    _, data = memorised
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--base",
            str(tiny_model_dir),
            "--data",
            str(data),
            "--max-samples",
            "2",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "e"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "scored 2 samples: base ROUGE-L F" in result.output
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["samples"] == 2 and "tuned" not in report and "improvement" not in report
    assert "| base | reference |" in (tmp_path / "e" / "samples.md").read_text()


def test_rouge_counts_chinese_characters_as_tokens():
    # 猫坐在垫子上 (6 characters) vs 猫在垫子上睡觉 (7): unigrams 猫在垫子上 shared (5); bigrams 在垫 垫子 子上
    # shared (3 of 5 and of 6); LCS 猫在垫子上 (5).
    scores = rouge_scores("猫坐在垫子上", "猫在垫子上睡觉")
    assert scores["rouge1"] == {"precision": 5 / 7, "recall": 5 / 6, "fmeasure": pytest.approx(10 / 13, abs=1e-15)}
    assert scores["rouge2"] == {"precision": 3 / 6, "recall": 3 / 5, "fmeasure": pytest.approx(6 / 11, abs=1e-15)}
    assert scores["rougeL"] == scores["rouge1"]
    # Latin words stay words among CJK characters: 用 python 写 代 码 vs 用 python 写 程 序.
    mixed = rouge_scores("用 Python 写代码", "用Python写程序")
    assert mixed["rouge1"]["fmeasure"] == pytest.approx(0.6) and mixed["rougeL"]["fmeasure"] == pytest.approx(0.6)
    assert mixed["rouge2"] == {"precision": 0.5, "recall": 0.5, "fmeasure": 0.5}
    assert rouge_scores("猫坐在垫子上", "") == {
        t: {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0} for t in ("rouge1", "rouge2", "rougeL")
    }
    mean = mean_rouge(["猫在垫子上睡觉", "狗"], ["猫坐在垫子上", "猫"])
    assert mean["rougeL"]["recall"] == pytest.approx((5 / 6 + 0) / 2)


def test_rouge_equals_rouge_score_on_english():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    pairs = [
        ("The sky is blue today.", "the sky is very blue today"),
        ("Paris is the capital of France.", "The capital of France is Paris, of course."),
        ("the the the cat", "the cat the cat the"),
        ("It's 3:00 p.m. -- well-known O'Neil", "its 3 00 pm well known oneil"),
        ("A single word", ""),
        ("", ""),
        ("nothing shared", "at all here"),
        ("Rust 1.80 ships LazyCell & LazyLock", "LazyLock ships in Rust 1.80"),
    ]
    assert scorer.score("猫坐在垫子上", "猫在垫子上睡觉")["rougeL"].fmeasure == 0  # why we do not use its tokenizer
    for reference, prediction in pairs:
        theirs = scorer.score(reference, prediction)
        ours = rouge_scores(reference, prediction)
        for t in ("rouge1", "rouge2", "rougeL"):
            assert ours[t] == theirs[t]._asdict(), (reference, prediction, t)


def test_merged_model_gives_the_adapter_models_logits(tiny_model_dir, memorised, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, _ = memorised
    merged_dir = merge(adapter, tmp_path / "merged")  # the base comes from the adapter's train_config.json
    assert (merged_dir / "config.json").is_file() and (merged_dir / "model.safetensors").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    batch = tokenizer(
        ["Question number 3: what colour is the sky?", "Something else entirely"], return_tensors="pt", padding=True
    )
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        base_logits = base(**batch).logits
        unmerged = PeftModel.from_pretrained(base, adapter).eval()
        adapter_logits = unmerged(**batch).logits
        merged_logits = merged(**batch).logits
    assert float((merged_logits - adapter_logits).abs().max()) < 1e-4
    assert float((merged_logits - base_logits).abs().max()) > 1e-2  # the adapter is in there


def test_merge_refuses_a_quantized_base(memorised, tmp_path, tiny_model_dir):
    adapter, _ = memorised
    quantized = tmp_path / "q"
    shutil.copytree(tiny_model_dir, quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="is a quantized model \\(bitsandbytes\\)"):
        merge(adapter, tmp_path / "m", base=str(quantized))
    with pytest.raises(ConfigError, match="not a folder with adapter_config.json"):
        merge(tmp_path, tmp_path / "m")


def test_merge_cli(memorised, tmp_path):
    adapter, _ = memorised
    result = CliRunner().invoke(cli, ["merge", "--adapter", str(adapter), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert f"merged {adapter} into {tmp_path / 'm'}" in result.output
    assert (tmp_path / "m" / "model.safetensors").is_file() and not list(tmp_path.glob(".m.*"))


def test_serve_answers_with_the_trained_adapter(tiny_model_dir, memorised):
    import openai

    from datagen.llm.local import DecodingParams, LocalBackend
    from datagen.llm.server import ServeConfig, serve_in_thread

    adapter, _ = memorised
    messages = [{"role": "user", "content": MEMO[0][0]}]
    params = DecodingParams(temperature=0, max_tokens=8)
    [[tuned]] = LocalBackend(tiny_model_dir, adapter).chat([(messages, params)])
    [[untuned]] = LocalBackend(tiny_model_dir).chat([(messages, params)])
    assert tuned.text != untuned.text and "sky" in tuned.text

    with serve_in_thread(
        ServeConfig(model=str(tiny_model_dir), adapter=adapter, port=0, served_model_name="tuned")
    ) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="tuned", messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == tuned.text


@pytest.mark.slow
@pytest.mark.timeout(1800)  # ~90 s on 2 idle cores; a host busy with other jobs measured 16 min
def test_acceptance_lora_on_smollm2_fits_a_toy_set(embedded_model_dir, tmp_path):
    """~30 LoRA steps of SmolLM2-135M on 64 made-up facts, on CPU (the same as bench/accept_sft.py)."""
    from bench.accept_sft import run_acceptance

    r = run_acceptance(tmp_path, steps=30, records=64, eval_samples=8, base=str(embedded_model_dir), held_out=False)
    assert r["steps"] == 30 and r["train_samples"] == 8
    assert r["eval_loss_after"] < 0.5 * r["eval_loss_before"]  # measured: 2.42 -> 0.64 on the 8 held-out records
    base, tuned = r["train_records_rougeL_f"]
    assert tuned > base + 0.3  # measured on 16 records: 0.36 -> 0.87 (the format, and most made-up code names)
    assert r["passed"]
