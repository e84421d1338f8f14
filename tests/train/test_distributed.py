"""Training past one process: the same numbers at any world size, batch split or eval batch size; one set of
outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datagen.errors import ConfigError, TemplateError
from datagen.train import distributed, sft
from datagen.train.data import (
    TEMPLATES,
    audit_template,
    cached_rows,
    resolve_chat_template,
)
from tests.train.test_sft import tiny_config, write_toy

ROOT = Path(__file__).resolve().parents[2]
#: 16 records: 12 train rows (3 optimizer steps per epoch at a global batch of 4), 4 held out.
COLOURS = [
    "red",
    "green",
    "blue",
    "white",
    "black",
    "pink",
    "grey",
    "gold",
    "teal",
    "navy",
    "plum",
    "rose",
    "sand",
    "lime",
    "ruby",
    "jade",
]
PAIRS = [(f"Name colour number {i}.", f"Colour {i} is {c}.") for i, c in enumerate(COLOURS)]


def adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and "checkpoints" not in p.parts}


COMMON = {"max_steps": 4, "eval_steps": 2, "eval_fraction": 0.25}


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory):
    """The reference: one process, batches of 4 rows; (data file, summary, out folder)."""
    folder = tmp_path_factory.mktemp("one")
    data = write_toy(folder / "toy.jsonl", PAIRS)
    summary = sft.train(
        data,
        folder / "one",
        tiny_config(tiny_model_dir, per_device_train_batch_size=4, per_device_eval_batch_size=3, **COMMON),
    )
    return data, summary, folder / "one"


def two_process_config(tiny_model_dir, path: Path, **extra) -> Path:
    """2 processes of 2 rows: the reference's global batch of 4, and another eval batch size."""
    cfg = tiny_config(tiny_model_dir, per_device_train_batch_size=2, per_device_eval_batch_size=2, **COMMON, **extra)
    path.write_text(json.dumps(cfg.to_dict()))
    return path


@pytest.mark.slow  # ~60-110 s on 2 busy cores: two processes start torch, transformers and the model
def test_two_gloo_processes_give_the_one_process_numbers_and_one_set_of_files(one_process, tiny_model_dir, tmp_path):
    data, one, one_dir = one_process
    config = two_process_config(tiny_model_dir, tmp_path / "two.json", nproc=2)  # launched as a user would
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "datagen",
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "two"),
            "--config",
            str(config),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "train_summary.json").read_text())

    assert done.stdout.count("trained 4 steps") == 1  # the summary line once, not once per rank
    assert files(tmp_path / "two") == files(one_dir)
    assert (
        two["world_size"] == 2 and one["world_size"] == 1 and two["global_batch_size"] == one["global_batch_size"] == 4
    )
    assert abs(two["eval_loss_before"] - one["eval_loss_before"]) < 1e-5
    assert abs(two["eval_loss_after"] - one["eval_loss_after"]) < 1e-5
    assert abs(two["eval_perplexity_after"] - one["eval_perplexity_after"]) / one["eval_perplexity_after"] < 1e-5
    # float tolerance: gradients agree to ~4e-8, which Adam's 1/sqrt(v) scaling grows over 4 steps at lr 1e-2
    assert max_diff(adapter_weights(one_dir), adapter_weights(tmp_path / "two")) < 1e-4
    curves = [json.loads((folder / "loss_curve.json").read_text()) for folder in (one_dir, tmp_path / "two")]
    # the logged training loss is the global token-weighted mean, so it matches step by step
    assert [round(p["loss"], 5) for p in curves[0]["train"]] == [round(p["loss"], 5) for p in curves[1]["train"]]
    assert [e["step"] for e in curves[1]["eval"]] == [0, 2, 4]
    print(
        f"eval loss 1 vs 2 processes: {one['eval_loss_before']:.7f}/{two['eval_loss_before']:.7f} before, "
        f"{one['eval_loss_after']:.7f}/{two['eval_loss_after']:.7f} after; adapter max |diff| "
        f"{max_diff(adapter_weights(one_dir), adapter_weights(tmp_path / 'two')):.2e}"
    )


@pytest.mark.slow  # as above
def test_accelerate_launch_with_the_shipped_ddp_config_gives_the_same_numbers(one_process, tiny_model_dir, tmp_path):
    """``accelerate launch --config_file configs/accelerate/ddp.yaml`` unchanged; on a CPU-only machine its
    launcher starts gloo processes (its own ``--cpu`` flag would start one process only)."""
    data, one, one_dir = one_process
    config = two_process_config(tiny_model_dir, tmp_path / "two.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "configs" / "accelerate" / "ddp.yaml"),
            "--num_processes",
            "2",
            "-m",
            "datagen",
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "acc"),
            "--config",
            str(config),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "acc" / "train_summary.json").read_text())
    assert done.stdout.count("trained 4 steps") == 1 and two["world_size"] == 2
    assert abs(two["eval_loss_after"] - one["eval_loss_after"]) < 1e-5
    assert max_diff(adapter_weights(one_dir), adapter_weights(tmp_path / "acc")) < 1e-4


def first_step_gradients(monkeypatch, *args) -> dict:
    """Run ``sft.train(*args)`` keeping the LoRA gradients of its first optimizer step (all micro-batches summed)."""
    from transformers import TrainerCallback

    grads: dict = {}

    class Keep(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 0:
                grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    make = sft._make_trainer

    def with_callback(*a, **k):
        trainer = make(*a, **k)
        trainer.add_callback(Keep())
        return trainer

    monkeypatch.setattr(sft, "_make_trainer", with_callback)
    summary = sft.train(*args)
    return summary, grads


def test_gradient_accumulation_equals_a_larger_batch(tiny_model_dir, tmp_path, monkeypatch):
    data = write_toy(tmp_path / "toy.jsonl", PAIRS)
    # 4 rows of different lengths: a per-batch mean over micro-batches would weight their tokens unequally.
    big, g_big = first_step_gradients(
        monkeypatch,
        data,
        tmp_path / "big",
        tiny_config(tiny_model_dir, max_steps=2, per_device_train_batch_size=4, eval_steps=0),
    )
    acc, g_acc = first_step_gradients(
        monkeypatch,
        data,
        tmp_path / "acc",
        tiny_config(
            tiny_model_dir, max_steps=2, eval_steps=0, per_device_train_batch_size=1, gradient_accumulation_steps=4
        ),
    )
    assert g_big.keys() == g_acc.keys() and g_big
    worst = max(
        float((g_big[n] - g_acc[n]).norm() / max(float(g_big[n].norm()), 1e-12))
        for n in g_big
        if float(g_big[n].norm()) > 0
    )
    assert worst < 1e-4  # relative, per tensor
    assert abs(big["train_loss"] - acc["train_loss"]) < 1e-4  # the logged loss is token-weighted too
    print(
        f"gradient accumulation 1x4 vs 4x1: worst relative gradient difference {worst:.2e}, "
        f"train loss {big['train_loss']:.6f} vs {acc['train_loss']:.6f}"
    )


def test_eval_loss_does_not_depend_on_the_eval_batch_size(tiny_model_dir, tmp_path):
    data = write_toy(tmp_path / "toy.jsonl", PAIRS)
    losses = []
    for size in (1, 3, 8):
        s = sft.train(
            data,
            tmp_path / f"e{size}",
            tiny_config(tiny_model_dir, max_steps=1, eval_steps=0, eval_fraction=0.4, per_device_eval_batch_size=size),
        )
        losses.append((s["eval_loss_before"], s["eval_loss_after"], s["eval_tokens"]))
    for before, after, tokens in losses[1:]:
        assert abs(before - losses[0][0]) < 1e-5 and abs(after - losses[0][1]) < 1e-5 and tokens == losses[0][2]


def test_eval_batches_go_to_ranks_the_same_way_at_any_world_size():
    one = distributed.shard_batches(7, 2, 1, 0)
    two = [distributed.shard_batches(7, 2, 2, r) for r in (0, 1)]
    assert len(two[0]) == len(two[1]) == 2  # equal counts: sharded models' collectives stay in step
    assert sorted(tuple(b) for rank in two for b in rank if b is not None) == [tuple(b) for b in one]


def test_qlora_on_several_cpu_processes_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="load_in_4bit on several processes needs CUDA"):
        sft.train(write_toy(tmp_path / "toy.jsonl"), tmp_path / "out", tiny_config(tiny_model_dir, load_in_4bit=True))


# ---------------------------------------------------------------------------- template audit, token cache


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


CONVERSATIONS = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in PAIRS[:4]]


def test_audit_reports_turn_by_turn_rendering_for_a_template_without_markers(tokenizer):
    report = audit_template(tokenizer, CONVERSATIONS, resolve_chat_template(tokenizer, None))
    assert report["generation_markers"] is False and report["method"] == "turn-by-turn rendering"
    assert (report["conversations"], report["replies"]) == (4, 4)


def test_audit_compares_the_mask_with_generation_markers(tokenizer):
    marked = TEMPLATES["chatml"].replace(
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}",
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endif %}",
    )
    report = audit_template(tokenizer, CONVERSATIONS, resolve_chat_template(tokenizer, marked))
    assert report["generation_markers"] is True and report["marker_only_tokens"] == 0


def test_audit_stops_a_template_that_renders_replies_elsewhere(tokenizer):
    shouting = TEMPLATES["chatml"].replace("message['content']", "message['content'] | upper")
    with pytest.raises(TemplateError, match="conversation 1's reply 'Colour 0 is red.'"):
        audit_template(tokenizer, CONVERSATIONS, resolve_chat_template(tokenizer, shouting))


def test_tokenised_rows_are_cached_by_tokenizer_template_and_data(tokenizer, tmp_path, monkeypatch):
    from datagen.train import data as data_module

    cfg = tiny_config(Path("unused"))
    template = resolve_chat_template(tokenizer, None)
    first = cached_rows(tmp_path, tokenizer, template, cfg, [CONVERSATIONS, CONVERSATIONS[:1]])

    def refuse(*args, **kwargs):
        raise AssertionError("re-tokenised")

    monkeypatch.setattr(data_module, "build_rows", refuse)
    again = cached_rows(tmp_path, tokenizer, template, cfg, [CONVERSATIONS, CONVERSATIONS[:1]])
    assert [r for r, _ in again] == [r for r, _ in first] and again[0][1] == first[0][1]
    with pytest.raises(AssertionError, match="re-tokenised"):  # another template is another key
        cached_rows(tmp_path, tokenizer, resolve_chat_template(tokenizer, "alpaca"), cfg, [CONVERSATIONS])
    with pytest.raises(AssertionError, match="re-tokenised"):  # so is other data
        cached_rows(tmp_path, tokenizer, template, cfg, [CONVERSATIONS[:3]])


# ------------------------------------------------------------------------------------------ launchers


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_shipped_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(ROOT / "configs" / "accelerate" / f"{name}.yaml")
    assert config.distributed_type.value == {"ddp": "MULTI_GPU", "fsdp": "FSDP"}.get(name, "DEEPSPEED")
    if name == "fsdp":
        assert config.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD"
        assert config.fsdp_config["fsdp_use_orig_params"] is True
    if name.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])


def test_gpu_check_script_exits_cleanly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run scripts/gpu_check.sh itself")
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert done.returncode == 0 and "no CUDA device" in done.stdout
