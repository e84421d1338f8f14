"""Session fixtures for models and model servers (a pytest plugin loaded by tests/conftest.py).

    model_cache            folder of converted models, shared by the whole session (DATAGEN_MODEL_CACHE)
    embedded_model_dir     SmolLM2-135M-Instruct converted to safetensors (~30 s once, then < 1 s)
    tiny_model_dir         a random 3M-parameter Llama with the SmolLM2 tokenizer: fast training/plumbing
    tiny_server_url        an OpenAI-compatible server over the tiny model (random text), served as TINY_MODEL
    embedded_server_url    the same over the real SmolLM2 (real text), served as EMBEDDED_MODEL

Set DATAGEN_MODEL_CACHE to a lasting folder to skip the SmolLM2 conversion in later sessions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datagen.llm.server import EMBEDDED_MODEL_ID, ServeConfig, serve_in_thread

TINY_MODEL = "tiny-llama"
EMBEDDED_MODEL = EMBEDDED_MODEL_ID


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The converted-model folder, exported as DATAGEN_MODEL_CACHE so every test shares one conversion.

    Autouse because the per-test DATAGEN_HOME isolation would otherwise send each conversion to a fresh folder.
    """
    configured = os.environ.get("DATAGEN_MODEL_CACHE")
    path = Path(configured) if configured else tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATAGEN_MODEL_CACHE", str(path))
        yield path


@pytest.fixture(scope="session")
def embedded_model_dir(model_cache: Path) -> Path:
    """SmolLM2-135M-Instruct as a plain safetensors folder."""
    from datagen.llm.local import resolve_model_dir

    return resolve_model_dir(None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random ``LlamaForCausalLM`` (hidden 64, 2 layers: ~3.2M parameters, almost all embeddings).

    It carries the SmolLM2 tokenizer and chat template, so data code sees real tokens; its text is noise.
    The tokenizer comes straight from the GGUF (~5 s), so tiny-only test runs skip the SmolLM2 conversion.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from datagen.llm.local import embedded_gguf_path

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_server_url(tiny_model_dir: Path) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a server over the tiny model, for plumbing tests."""
    with serve_in_thread(ServeConfig(model=str(tiny_model_dir), port=0, served_model_name=TINY_MODEL)) as url:
        yield url


@pytest.fixture(scope="session")
def embedded_server_url(embedded_model_dir: Path) -> Iterator[str]:
    """Base URL of a server over the real SmolLM2, for the few tests that need sensible text."""
    cfg = ServeConfig(model=str(embedded_model_dir), port=0, served_model_name=EMBEDDED_MODEL)
    with serve_in_thread(cfg) as url:
        yield url
