"""Models out: the adapter names a portable base id and carries a model card; merged folders load in
transformers 4 and 5."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from datagen.train import sft
from datagen.train.export import EMBEDDED_HUB_ID, base_model_id
from datagen.train.merge import merge
from tests.train.test_sft import tiny_config, write_toy

ROOT = Path(__file__).resolve().parents[2]
TINY_ID = "datagen-tests/tiny-llama"


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    summary = sft.train(
        write_toy(out / "toy.jsonl"), out / "run", tiny_config(tiny_model_dir, max_steps=4, base_model_id=TINY_ID)
    )
    return summary, out / "run"


def hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """A Hugging Face hub cache holding ``model_dir`` as ``repo_id``, laid out as huggingface_hub leaves a download."""
    org, name = repo_id.split("/")
    repo = root / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in model_dir.iterdir():
        shutil.copy(path, snapshot / path.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return root


def test_adapter_names_the_base_id_and_keeps_the_local_path_in_our_metadata(run, tiny_model_dir):
    summary, out = run
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == TINY_ID
    # peft saves target_modules from a set, in this process's hash order; two runs must write the same file
    assert len(adapter["target_modules"]) > 2 and adapter["target_modules"] == sorted(adapter["target_modules"])
    assert summary["base_model_id"] == TINY_ID and summary["base_model_dir"] == str(tiny_model_dir)
    assert json.loads((out / "adapter" / "train_config.json").read_text())["base"] == str(tiny_model_dir)


def test_model_card_says_base_data_settings_and_eval(run):
    summary, out = run
    card = (out / "adapter" / "README.md").read_text()
    assert card.startswith(f"---\nbase_model: {TINY_ID}\nlibrary_name: peft\n")
    assert f"| base | {summary['eval_loss_before']:.4f} |" in card
    assert f"| tuned | {summary['eval_loss_after']:.4f} |" in card
    assert "| lora_r | 16 |" in card and "| learning_rate | 0.01 |" in card
    assert f"{summary['train_records']} records" in card and summary["data_sha256"][:16] in card


def test_outputs_are_readable_by_others(run):
    _, out = run
    for path in [out, *out.rglob("*")]:
        if "checkpoints" in path.parts or ".tokenized" in path.parts:
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path} has mode {oct(mode)}"  # group and others may read
        if path.is_dir():
            assert mode & 0o011 == 0o011, f"{path} has mode {oct(mode)}"


def test_adapter_loads_from_a_copy_elsewhere_given_only_the_base_id(run, tiny_model_dir, tmp_path):
    """A user's machine: the base in their HF cache under its id, the adapter folder copied anywhere, offline."""
    _, out = run
    copy = tmp_path / "somewhere" / "my-adapter"
    shutil.copytree(out / "adapter", copy)
    cache = hub_cache(tmp_path / "hf-cache", TINY_ID, tiny_model_dir)
    script = (
        "import sys, torch\n"
        "from peft import AutoPeftModelForCausalLM, PeftModel\n"
        "from transformers import AutoModelForCausalLM\n"
        "tuned = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sys.argv[2]), sys.argv[1])\n"
        "ids = torch.tensor([[1, 2, 3, 4, 5]])\n"
        "with torch.no_grad():\n"
        "    print(float((tuned(input_ids=ids).logits - ref(input_ids=ids).logits).abs().max()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HOME", "HF_HUB_CACHE")}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script, str(copy), str(tiny_model_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-6


def test_base_ids_for_the_embedded_model_hub_folders_and_plain_folders(tmp_path):
    from types import SimpleNamespace as C

    assert base_model_id(C(base="embedded", base_model_id=None), tmp_path) == EMBEDDED_HUB_ID
    assert base_model_id(C(base="embedded", base_model_id="me/x"), tmp_path) == "me/x"
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen3-0.6B"}))
    assert base_model_id(C(base=str(tmp_path), base_model_id=None), tmp_path) == "Qwen/Qwen3-0.6B"
    (tmp_path / "config.json").write_text("{}")
    assert base_model_id(C(base=str(tmp_path), base_model_id=None), tmp_path) == tmp_path.name


@pytest.fixture(scope="module")
def merged(run, tmp_path_factory):
    _, out = run
    return merge(out / "adapter", tmp_path_factory.mktemp("merged") / "merged")


def test_merged_config_carries_the_keys_transformers_4_reads(merged):
    config = json.loads((merged / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]
    assert config["torch_dtype"] == config["dtype"] == "float32"
    tokenizer = json.loads((merged / "tokenizer_config.json").read_text())
    assert tokenizer["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not isinstance(tokenizer.get("extra_special_tokens"), list)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(merged)("hi")["input_ids"]  # 5.x still reads it all
    assert AutoModelForCausalLM.from_pretrained(merged).config.rope_parameters["rope_theta"] == config["rope_theta"]
    modes = {stat.S_IMODE(p.stat().st_mode) & 0o044 for p in [merged, *merged.iterdir()]}
    assert modes == {0o044}


@pytest.mark.skipif(
    not os.environ.get("DATAGEN_TRANSFORMERS4_PYTHON"),
    reason="set DATAGEN_TRANSFORMERS4_PYTHON to a python with transformers 4.x (docs/TRAINING.md)",
)
def test_merged_model_gives_the_same_logits_in_transformers_4(merged):
    script = (
        "import json, sys, torch, transformers\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "ids = tok('The colour is', return_tensors='pt')['input_ids']\n"
        "with torch.no_grad():\n"
        "    theta = getattr(model.config, 'rope_theta', None) or model.config.rope_parameters['rope_theta']\n"
        "    print(json.dumps([transformers.__version__, theta, ids.tolist(),\n"
        "                      model(ids).logits[0, -1, :5].tolist()]))\n"
    )
    outputs = []
    for python in (os.environ["DATAGEN_TRANSFORMERS4_PYTHON"], sys.executable):
        done = subprocess.run(
            [python, "-c", script, str(merged)],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "PYTHONPATH": ""},
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    (v4, theta4, ids4, logits4), (v5, theta5, ids5, logits5) = outputs
    assert v4.startswith("4.") and v5.startswith("5.")
    assert theta4 == theta5 and ids4 == ids5
    assert max(abs(a - b) for a, b in zip(logits4, logits5)) < 1e-4
