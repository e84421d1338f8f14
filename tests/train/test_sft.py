"""The trainer: config precedence, what training must change (and must not), QLoRA, resume, outputs, CLI."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import ConfigError
from datagen.formats import read_any
from datagen.train import sft
from datagen.train.config import TrainConfig, load_train_config, to_bnb_config, to_lora_config
from datagen.train.data import Collator, records_sha256, split_records

#: Short, fixed replies: enough for the tiny random model to move its loss in a few steps.
TOY = [
    (f"Name colour number {i}.", f"Colour {i} is {c}.")
    for i, c in enumerate(["red", "green", "blue", "white", "black", "pink", "grey", "gold"])
]


def write_toy(path: Path, pairs=TOY) -> Path:
    path.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}) + "\n" for q, a in pairs))
    return path


def tiny_config(tiny_model_dir: Path, **overrides) -> TrainConfig:
    """Settings that make the tiny model move quickly; tests override what they check."""
    settings = dict(
        base=str(tiny_model_dir),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        lora_dropout=0.0,
        warmup_ratio=0.0,
        eval_fraction=0.25,
        save_steps=1000,
        max_seq_len=128,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


class Captured:
    """Wraps ``sft._load_model`` to keep the model it built and a copy of its base weights at load."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.model = None
        self.base_before: dict[str, object] = {}
        original = sft._load_model

        def load(*args, **kwargs):
            self.model = original(*args, **kwargs)
            self.base_before = {n: p.detach().clone() for n, p in self.model.named_parameters() if "lora_" not in n}
            return self.model

        monkeypatch.setattr(sft, "_load_model", load)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One LoRA run on the toy set: (summary, out folder, captured model, its base weights at load)."""
    out = tmp_path_factory.mktemp("sft")
    data = write_toy(out / "toy.jsonl")
    with pytest.MonkeyPatch.context() as mp:
        captured = Captured(mp)
        summary = sft.train(data, out / "run", tiny_config(tiny_model_dir, max_steps=12))
    return summary, out / "run", captured, data


# ------------------------------------------------------------------------------------------ config


def test_yaml_then_overrides_then_flags(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lora_r: 8\nlearning_rate: 0.001\npacking: true\ntarget_modules: [q_proj, v_proj]\nbase: a\n")
    cfg = load_train_config(path, ["lora_r=4", "max_steps=30"], {"base": "b"})
    assert (cfg.lora_r, cfg.learning_rate, cfg.packing, cfg.max_steps, cfg.base) == (4, 1e-3, True, 30, "b")
    assert cfg.target_modules == ("q_proj", "v_proj") and cfg.lora_alpha == TrainConfig().lora_alpha
    assert load_train_config(path, [], {"base": None}).base == "a"  # an unset flag does not override
    nested = tmp_path / "run.yaml"
    nested.write_text("train:\n  lora_r: 2\n")
    assert load_train_config(nested).lora_r == 2
    resolved = tmp_path / "resolved.json"
    resolved.write_text(json.dumps(cfg.to_dict()))  # train_config.json is a valid --config
    assert load_train_config(resolved) == cfg


def test_unknown_yaml_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("lora_rank: 8\n")
    with pytest.raises(ConfigError, match=r"train.yaml: train: unknown key 'lora_rank' \(did you mean 'lora_r'\?\)"):
        load_train_config(path)
    with pytest.raises(ConfigError, match="train: unknown key 'epochs'"):
        load_train_config(None, ["epochs=3"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_train_config(None, ["packing"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("lora_r=0", "train.lora_r must be an integer >= 1, got 0"),
        ("lora_r=2.5", "train.lora_r: expected an integer, got 2.5"),
        ("packing=maybe", "train.packing: expected true or false"),
        ("learning_rate=fast", "train.learning_rate: expected a number"),
        ("eval_fraction=1", r"train.eval_fraction must be in \[0, 1\)"),
        ("assistant_turns=first", "train.assistant_turns must be one of all, last"),
        ("report_to=mlflow", "train.report_to must be one of none, tensorboard, wandb"),
        ("target_modules=[]", "train.target_modules must be 'all-linear' or a non-empty list"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, [override])


def test_lora_and_bnb_configs_come_from_one_function_each():
    cfg = TrainConfig(
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        target_modules=("q_proj",),
        use_rslora=True,
        use_dora=True,
        load_in_4bit=True,
    )
    lora = to_lora_config(cfg)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.use_rslora, lora.use_dora) == (4, 8, 0.1, True, True)
    assert set(lora.target_modules) == {"q_proj"} and lora.task_type == "CAUSAL_LM"
    assert to_lora_config(TrainConfig()).target_modules == "all-linear"
    bnb = to_bnb_config(cfg)
    import torch

    assert bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    expected = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    assert bnb.bnb_4bit_compute_dtype == expected
    assert to_bnb_config(TrainConfig()) is None


def test_cli_maps_config_errors_to_exit_code_2(tmp_path):
    data = write_toy(tmp_path / "toy.jsonl")
    result = CliRunner().invoke(cli, ["train", "--data", str(data), "--out", str(tmp_path / "o"), "lora_rank=3"])
    assert result.exit_code == 2 and "unknown key 'lora_rank' (did you mean 'lora_r'?)" in result.output


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_report_to_a_missing_package_says_what_to_install(tmp_path, tiny_model_dir):
    data = write_toy(tmp_path / "toy.jsonl")
    with pytest.raises(ConfigError, match="pip install tensorboard"):
        sft.train(data, tmp_path / "o", tiny_config(tiny_model_dir, report_to="tensorboard"))


# ---------------------------------------------------------------------------------------- training


def test_lora_weights_moved_and_base_weights_did_not(trained):
    import torch

    _, _, captured, _ = trained
    params = dict(captured.model.named_parameters())
    lora_b = [p for n, p in params.items() if "lora_B" in n]
    assert lora_b and all(p.requires_grad for p in lora_b)
    assert all(float(p.detach().abs().max()) > 0 for p in lora_b)  # B starts at zero: every adapter was updated
    for name, before in captured.base_before.items():
        assert torch.equal(params[name].detach(), before), name
        assert not params[name].requires_grad


def test_loss_is_finite_and_decreasing(trained):
    summary, out, _, _ = trained
    curve = json.loads((out / "loss_curve.json").read_text())
    losses = [p["loss"] for p in curve["train"]]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    # eval_steps=-1 (default): every 10% of the 12 steps, rounded up to 2, besides before and after training
    assert [e["step"] for e in curve["eval"]] == [0, 2, 4, 6, 8, 10, 12]
    lrs = [p["learning_rate"] for p in curve["train"]]
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] < lrs[len(lrs) // 2] < lrs[0]  # cosine decay


def test_outputs_hold_adapter_tokenizer_config_hash_and_counts(trained, tiny_model_dir):
    summary, out, captured, data = trained
    adapter = out / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert (adapter / "tokenizer_config.json").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    config = json.loads((out / "train_config.json").read_text())
    assert config == tiny_config(tiny_model_dir, max_steps=12).to_dict()
    assert json.loads((adapter / "train_config.json").read_text()) == config
    on_disk = json.loads((out / "train_summary.json").read_text())
    assert on_disk["status"] == "done" and on_disk["global_step"] == 12
    train_records, held_out = split_records(read_any(data), 0.25, 42)
    assert on_disk["data_sha256"] == records_sha256(train_records)
    assert (on_disk["train_records"], on_disk["eval_records"]) == (6, 2)
    assert [e.id for e in read_any(out / "eval.jsonl")] == [e.id for e in held_out]
    # LoRA r=16 on all seven linear layers of 2 blocks (hidden 64, MLP 128): r * (in + out) each.
    per_block = 16 * (4 * (64 + 64) + 2 * (64 + 128) + (128 + 64))
    trainable = sum(p.numel() for p in captured.model.parameters() if p.requires_grad)
    assert on_disk["trainable_params"] == trainable == 2 * per_block
    assert on_disk["tokens_per_second"] > 0 and on_disk["peak_rss_mb"] > 0
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".adapter*"))


def test_a_crash_while_saving_leaves_the_previous_adapter_whole(tmp_path, tiny_model_dir, monkeypatch):
    data = write_toy(tmp_path / "toy.jsonl")
    out = tmp_path / "run"
    sft.train(data, out, tiny_config(tiny_model_dir, max_steps=1))
    before = {p.name: p.read_bytes() for p in (out / "adapter").iterdir()}

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the adapter weights were written, before the tokenizer

    from transformers import AutoTokenizer

    monkeypatch.setattr(type(AutoTokenizer.from_pretrained(tiny_model_dir)), "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        sft.train(
            data, out, tiny_config(tiny_model_dir, max_steps=2, resume_from_checkpoint=False, learning_rate=0.05)
        )
    assert {p.name: p.read_bytes() for p in (out / "adapter").iterdir()} == before
    assert not list(out.glob(".adapter*"))
    assert json.loads((out / "train_summary.json").read_text())["status"] == "running"  # not marked complete


def test_resume_continues_a_killed_run_to_the_same_weights(tmp_path, tiny_model_dir):
    import shutil

    from safetensors.torch import load_file

    data = write_toy(tmp_path / "toy.jsonl")
    cfg = tiny_config(tiny_model_dir, max_steps=6, save_steps=3, lora_dropout=0.1)
    straight = sft.train(data, tmp_path / "straight", cfg)
    out = tmp_path / "killed"
    sft.train(data, out, cfg)
    # As if killed between the checkpoint at step 3 and the end: later checkpoints and outputs never written.
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")
    shutil.rmtree(out / "adapter")
    resumed = sft.train(data, out, cfg)  # the same command again: resume_from_checkpoint=auto
    assert resumed["resumed_from"].endswith("checkpoint-3") and resumed["global_step"] == 6
    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    curve = json.loads((out / "loss_curve.json").read_text())["train"]
    reference = json.loads((tmp_path / "straight" / "loss_curve.json").read_text())["train"]
    assert [p["step"] for p in curve] == [1, 2, 3, 4, 5, 6]  # the history survives the restart
    assert [p["loss"] for p in curve] == pytest.approx([p["loss"] for p in reference], abs=1e-5)
    assert straight["resumed_from"] is None

    with pytest.raises(ConfigError, match=r"holds checkpoints of a different run \(lora_r changed\)"):
        sft.train(data, out, tiny_config(tiny_model_dir, max_steps=6, save_steps=3, lora_dropout=0.1, lora_r=4))
    with pytest.raises(ConfigError, match="holds no complete checkpoint"):
        sft.train(data, tmp_path / "fresh", tiny_config(tiny_model_dir, resume_from_checkpoint=True))


def _fake_checkpoint(folder: Path, *files: str, state: str = '{"global_step": 1}') -> Path:
    """A checkpoint folder holding ``files`` (a few bytes each) and, unless ``state`` is None, trainer_state.json."""
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"x" * 8)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def test_resume_picks_the_newest_complete_checkpoint_and_removes_torn_ones(tmp_path, caplog):
    full = ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
    checkpoints = tmp_path / "run" / "checkpoints"
    _fake_checkpoint(checkpoints / "checkpoint-2", *full)
    good = _fake_checkpoint(checkpoints / "checkpoint-9", *full)  # 9 < 10 < 12 by number, not by name
    torn = [
        _fake_checkpoint(checkpoints / "checkpoint-10", *full[:-1], state=None),  # killed before the state
        _fake_checkpoint(checkpoints / "checkpoint-11", *full, state='{"global_st'),  # killed inside the state
        _fake_checkpoint(checkpoints / "checkpoint-12", "adapter_config.json", "optimizer.pt"),  # no weights
        _fake_checkpoint(checkpoints / "checkpoint-13", "adapter_model.safetensors"),  # no optimizer
        _fake_checkpoint(checkpoints / "checkpoint-14"),  # empty
    ]
    (checkpoints / "checkpoint-14" / "adapter_model.safetensors").write_bytes(b"")  # a zero-byte file is no weights
    (checkpoints / "checkpoint-14" / "optimizer.pt").write_bytes(b"x")
    (checkpoints / "runs").mkdir()  # not a checkpoint: left alone
    problems = {p.name: sft._checkpoint_problem(p) for p in torn}
    assert problems == {
        "checkpoint-10": "no trainer_state.json",
        "checkpoint-11": "trainer_state.json is torn",
        "checkpoint-12": "no model or adapter weights",
        "checkpoint-13": "no optimizer state",
        "checkpoint-14": "no model or adapter weights",
    }
    assert sft._checkpoint_problem(good) is None
    assert sft._last_complete_checkpoint(checkpoints) == str(good)
    assert all(p.exists() for p in torn)  # looking does not delete

    cfg = TrainConfig(base="unused", resume_from_checkpoint=True)
    with caplog.at_level("WARNING", logger="datagen.train"):
        assert sft._resume_point(tmp_path / "run", cfg, "sha") == str(good)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-9", "runs"]
    assert "removing the incomplete checkpoint" in caplog.text
    assert "checkpoint-11 (trainer_state.json is torn)" in caplog.text

    only_torn = tmp_path / "other" / "checkpoints"
    _fake_checkpoint(only_torn / "checkpoint-1", *full, state=None)
    named = TrainConfig(base="unused", resume_from_checkpoint=str(only_torn / "checkpoint-1"))
    with pytest.raises(ConfigError, match=r"not a complete Trainer checkpoint \(no trainer_state.json\)"):
        sft._resume_point(tmp_path / "other", named, "sha")
    with pytest.raises(ConfigError, match="holds no complete checkpoint"):
        sft._resume_point(tmp_path / "other", cfg, "sha")
    assert sft._resume_point(tmp_path / "other", TrainConfig(base="unused"), "sha") is None  # auto: start afresh


def test_qlora_nf4_trains_on_cpu(tmp_path, tiny_model_dir, monkeypatch):
    import bitsandbytes as bnb

    data = write_toy(tmp_path / "toy.jsonl")
    captured = Captured(monkeypatch)
    summary = sft.train(data, tmp_path / "q", tiny_config(tiny_model_dir, load_in_4bit=True, max_steps=6))
    four_bit = [m for m in captured.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 2 * 7  # every linear layer of both blocks is NF4 ...
    assert all(m.weight.quant_type == "nf4" for m in four_bit)
    assert all(m.weight.quant_state.nested for m in four_bit)  # ... with double quantization
    curve = json.loads((tmp_path / "q" / "loss_curve.json").read_text())
    losses = [p["loss"] for p in curve["train"]]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert (tmp_path / "q" / "adapter" / "adapter_model.safetensors").is_file()


def test_packing_dora_rslora_checkpointing_accumulation_and_warmup_together(tmp_path, tiny_model_dir, monkeypatch):
    data = write_toy(tmp_path / "toy.jsonl")
    captured = Captured(monkeypatch)
    cfg = tiny_config(
        tiny_model_dir,
        packing=True,
        use_dora=True,
        use_rslora=True,
        gradient_checkpointing=True,
        max_steps=4,
        warmup_ratio=0.5,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        max_seq_len=256,
        assistant_turns="last",
    )
    summary = sft.train(data, tmp_path / "p", cfg)
    assert summary["train_rows"] < summary["data_stats"]["rows"] == 6  # rows were packed together
    assert captured.model.base_model.model.is_activation_checkpointing
    adapter_config = json.loads((tmp_path / "p" / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["use_dora"] and adapter_config["use_rslora"]
    assert math.isfinite(summary["train_loss"]) and summary["global_step"] == 4
    lrs = [p["learning_rate"] for p in json.loads((tmp_path / "p" / "loss_curve.json").read_text())["train"]]
    assert lrs[0] < lrs[1] < lrs[2] and lrs[2] == pytest.approx(1e-2) and lrs[3] < lrs[2]  # warmup 2 steps, cosine


@pytest.mark.parametrize("packing", [False, True])
def test_lm_head_on_trained_positions_only_gives_the_full_logits_losses(
    tmp_path, tiny_model_dir, monkeypatch, packing
):
    data = write_toy(tmp_path / "toy.jsonl")
    cfg = tiny_config(
        tiny_model_dir,
        max_steps=4,
        packing=packing,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_seq_len=96,
        eval_steps=2,
        logging_steps=1,
    )
    probe = sft._keeps_logits_by_mask
    seen = []
    monkeypatch.setattr(sft, "_keeps_logits_by_mask", lambda model: seen.append(probe(model)) or seen[-1])
    kept = sft.train(data, tmp_path / "kept", cfg)
    monkeypatch.setattr(sft, "_keeps_logits_by_mask", lambda model: False)
    full = sft.train(data, tmp_path / "full", cfg)
    assert seen == [True]  # the tiny Llama takes a boolean logits_to_keep
    curves = [json.loads((tmp_path / name / "loss_curve.json").read_text()) for name in ("kept", "full")]
    assert [p["loss"] for p in curves[0]["train"]] == pytest.approx([p["loss"] for p in curves[1]["train"]], abs=1e-5)
    assert [p["eval_loss"] for p in curves[0]["eval"]] == pytest.approx(
        [p["eval_loss"] for p in curves[1]["eval"]], abs=1e-5
    )
    assert len(curves[0]["train"]) == 4 and len(curves[0]["eval"]) == 3  # before, at step 2, at step 4
    assert kept["tokens_per_second"] > 0 and kept["train_loss"] == pytest.approx(full["train_loss"], abs=1e-5)


@pytest.mark.parametrize("packing", [True, False])
def test_training_attends_per_sample_on_padding_free_rows_with_the_padded_batches_losses(
    tmp_path, tiny_model_dir, monkeypatch, packing
):
    """Training switches to per-sample attention and one flat row per batch; every loss stays the same."""
    from datagen.train.attention import SEGMENT_ATTENTION

    pairs = [
        (question, answer.replace(" is ", " is a very " * (i % 4) + " ")) for i, (question, answer) in enumerate(TOY)
    ]
    data = write_toy(tmp_path / "toy.jsonl", pairs)  # replies of different lengths: packed rows differ in length
    cfg = tiny_config(
        tiny_model_dir,
        max_steps=4,
        packing=packing,
        per_device_train_batch_size=2,
        max_seq_len=100,
        eval_steps=2,
        logging_steps=1,
    )
    captured, widths = Captured(monkeypatch), []
    collate = sft.Collator.__call__
    monkeypatch.setattr(
        sft.Collator,
        "__call__",
        lambda self, rows: widths.append(collate(self, rows)["input_ids"].shape) or collate(self, rows),
    )
    segment = sft.train(data, tmp_path / "segment", cfg)
    assert captured.model.get_base_model().config._attn_implementation == SEGMENT_ATTENTION
    assert widths and all(rows == 1 for rows, _ in widths)  # each batch of 2 rows became one flat row
    assert max(width for _, width in widths) > (cfg.max_seq_len if packing else 60)
    segment_widths, widths[:] = list(widths), []
    monkeypatch.setattr(sft, "_attend_per_sample", lambda model: None)  # padded rows, transformers' own masks
    dense = sft.train(data, tmp_path / "dense", cfg)
    assert captured.model.get_base_model().config._attn_implementation == "sdpa"
    assert any(rows == 2 for rows, _ in widths)
    curves = [json.loads((tmp_path / name / "loss_curve.json").read_text()) for name in ("segment", "dense")]
    assert [p["loss"] for p in curves[0]["train"]] == pytest.approx([p["loss"] for p in curves[1]["train"]], abs=1e-5)
    assert [p["eval_loss"] for p in curves[0]["eval"]] == pytest.approx(
        [p["eval_loss"] for p in curves[1]["eval"]], abs=1e-5
    )
    assert len(curves[0]["train"]) == 4 and segment["train_rows"] == dense["train_rows"]
    assert (segment["train_rows"] < segment["train_records"]) == packing
    assert sum(w for _, w in segment_widths) < sum(rows * w for rows, w in widths)  # no padding computed
    assert segment["tokens_per_second"] > 0


def test_collator_lays_a_batch_of_packed_rows_end_to_end_when_padding_free():
    rows = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], "position_ids": [0, 1, 2]},
        {"input_ids": [8, 9], "labels": [-100, 9], "position_ids": [0, 1]},
    ]
    flat = Collator(pad_id=0, padding_free=True, trained_logits_only=True)(rows)
    assert flat["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and flat["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert flat["labels"].tolist() == [[-100, 6, 7, -100, 9]] and "attention_mask" not in flat
    assert flat["logits_to_keep"].tolist() == [[True, True, False, True, False]]
    single = Collator(pad_id=0, padding_free=True)(rows[1:])  # a single row is left as it is
    assert single["input_ids"].tolist() == [[8, 9]] and single["position_ids"].tolist() == [[0, 1]]
    unpacked = Collator(pad_id=0, padding_free=True)([{k: r[k] for k in ("input_ids", "labels")} for r in rows])
    assert unpacked["input_ids"].tolist() == [[5, 6, 7, 8, 9]]  # unpacked rows: each one its own sample
    assert unpacked["position_ids"].tolist() == [[0, 1, 2, 0, 1]] and "attention_mask" not in unpacked
    assert Collator(pad_id=0)([rows[0], rows[1]])["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]


def test_collator_marks_the_positions_whose_next_token_is_trained():
    batch = Collator(pad_id=0, trained_logits_only=True)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    )
    assert batch["logits_to_keep"].tolist() == [[True, True, False], [True, False, False]]
    assert "logits_to_keep" not in Collator(pad_id=0)([{"input_ids": [5], "labels": [5]}])


def test_cli_trains_and_shows_labels(tmp_path, tiny_model_dir):
    data = write_toy(tmp_path / "toy.jsonl")
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--data",
            str(data),
            "--base",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "o"),
            "--debug-labels",
            "1",
            "max_steps=2",
            "per_device_train_batch_size=2",
            "eval_fraction=0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[[Colour 0 is red.<|im_end|>]]↵" in result.output
    assert "trained 2 steps on 8 rows (0 dropped), 34,816 trainable parameters; adapter in" in result.output
