"""Issue 18.2: the id `datagen serve` reports identifies the weights, so cached answers never cross models.

Before, `serve --adapter` reported the base model's id; the client's answer cache (keyed by model id) then
replayed the base model's answers for the tuned model and the closing loop measured the base model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import openai
import pytest

from datagen.llm.cache import cache_key
from datagen.llm.server import ServeConfig, serve_in_thread


def _adapter(base: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero random weights (seeded), saved the way peft saves any adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return _adapter(tiny_model_dir, root / "a", 1), _adapter(tiny_model_dir, root / "b", 2)


def test_served_id_changes_with_the_weights_and_so_does_the_cache_key(
    tiny_model_dir, adapters, tmp_path, record_property
):
    """Base, adapter A, adapter B and A retrained in place get four ids (and cache keys); a copy keeps its id."""
    a, b = adapters
    base_id = ServeConfig(model=str(tiny_model_dir)).model_id
    a_id = ServeConfig(model=str(tiny_model_dir), adapter=a).model_id
    b_id = ServeConfig(model=str(tiny_model_dir), adapter=b).model_id
    assert a_id.startswith(base_id + "+adapter@") and b_id.startswith(base_id + "+adapter@")
    copy = shutil.copytree(a, tmp_path / "copy-of-a")
    assert ServeConfig(model=str(tiny_model_dir), adapter=copy).model_id == a_id  # content, not path
    retrained = _adapter(tiny_model_dir, tmp_path / "copy-of-a", 3)  # saved over the copy, same path
    r_id = ServeConfig(model=str(tiny_model_dir), adapter=retrained).model_id
    ids = [base_id, a_id, b_id, r_id]
    assert len(set(ids)) == 4, ids
    messages = [{"role": "user", "content": "Say something."}]
    keys = {cache_key("chat", i, messages, {"temperature": 0}, 0) for i in ids}
    assert len(keys) == 4
    record_property("tried", len(ids))


def test_a_merged_model_folder_is_named_by_its_weights(tiny_model_dir, tmp_path):
    """Two model folders with the same name but different weights (a base and a merge) get different ids."""
    from transformers import AutoModelForCausalLM

    merged = tmp_path / tiny_model_dir.name
    shutil.copytree(tiny_model_dir, merged)
    assert ServeConfig(model=str(merged)).model_id == ServeConfig(model=str(tiny_model_dir)).model_id
    model = AutoModelForCausalLM.from_pretrained(merged)
    model.model.embed_tokens.weight.data[0, 0] += 1.0
    model.save_pretrained(merged)
    assert ServeConfig(model=str(merged)).model_id != ServeConfig(model=str(tiny_model_dir)).model_id


def test_the_server_reports_and_requires_the_tuned_id(tiny_model_dir, adapters):
    """/v1/models lists the tuned id and answers with it; a client still naming the base id gets 404."""
    cfg = ServeConfig(model=str(tiny_model_dir), adapter=adapters[0], port=0)
    base_id = ServeConfig(model=str(tiny_model_dir)).model_id
    with serve_in_thread(cfg) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert client.models.list().data[0].id == cfg.model_id
        reply = client.chat.completions.create(
            model=cfg.model_id, messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0
        )
        assert reply.model == cfg.model_id
        with pytest.raises(openai.NotFoundError, match="does not exist"):
            client.chat.completions.create(model=base_id, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert httpx.get(url.removesuffix("/v1") + "/health", trust_env=False).json()["model"] == cfg.model_id
