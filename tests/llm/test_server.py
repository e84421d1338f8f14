"""The OpenAI-compatible server: real HTTP, real models, the official ``openai`` client."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from datagen.errors import ConfigError, LLMError, LLMServerError
from datagen.llm.local import LocalBackend
from datagen.llm.server import ServeConfig, serve_in_thread, start_server_process, wait_healthy
from tests.conftest import PLANTED_API_KEY
from tests.plugins.models import EMBEDDED_MODEL, TINY_MODEL

CHAT = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def client(tiny_server_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=tiny_server_url, api_key="unused", max_retries=0)


@pytest.fixture
def http(tiny_server_url: str) -> httpx.Client:
    with httpx.Client(base_url=tiny_server_url.removesuffix("/v1"), trust_env=False, timeout=30) as c:
        yield c


def _health(base_url: str) -> dict:
    return httpx.get(base_url.removesuffix("/v1") + "/health", trust_env=False).json()


def _chat_prompt_tokens(model_dir: Path, messages: list[dict]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# -------------------------------------------------------------------------------- the OpenAI shape


def test_chat_completion_is_shaped_like_openai(client, tiny_model_dir):
    reply = client.chat.completions.create(model=TINY_MODEL, messages=CHAT, max_tokens=5, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == TINY_MODEL
    assert abs(reply.created - time.time()) < 60
    [choice] = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 5
    assert reply.usage.prompt_tokens == _chat_prompt_tokens(tiny_model_dir, CHAT)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 5


def test_n_gives_n_choices_and_usage_sums_them(client):
    reply = client.chat.completions.create(model=TINY_MODEL, messages=CHAT, n=3, max_tokens=4, temperature=1.0, seed=1)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert [c.finish_reason for c in reply.choices] == ["length"] * 3
    assert reply.usage.completion_tokens == 3 * 4


def test_completions_accept_a_list_of_prompts(client, tiny_model_dir):
    from transformers import AutoTokenizer

    prompts = ["1. apple\n2.", "The weather today is"]
    reply = client.completions.create(model=TINY_MODEL, prompt=prompts, n=2, max_tokens=3, temperature=0.7)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert all(c.finish_reason == "length" for c in reply.choices)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert reply.usage.prompt_tokens == sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    assert reply.usage.completion_tokens == 4 * 3


def test_completions_default_to_16_tokens_like_openai(client):
    reply = client.completions.create(model=TINY_MODEL, prompt="Once upon a time", temperature=0)
    assert reply.usage.completion_tokens == 16 and reply.choices[0].finish_reason == "length"


def test_temperature_zero_is_deterministic(client):
    texts = {
        client.chat.completions.create(model=TINY_MODEL, messages=CHAT, max_tokens=10, temperature=0)
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(texts) == 1


def test_same_seed_same_text(client):
    def sample(seed: int) -> list[str]:
        reply = client.chat.completions.create(
            model=TINY_MODEL, messages=CHAT, n=2, max_tokens=8, temperature=1.0, seed=seed
        )
        return [c.message.content for c in reply.choices]

    first = sample(123)
    assert sample(123) == first
    assert first[0] != first[1]
    assert sample(124) != first


def test_stop_cuts_the_text(client):
    full = client.completions.create(model=TINY_MODEL, prompt="Hello", max_tokens=20, temperature=0).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    reply = client.completions.create(
        model=TINY_MODEL, prompt="Hello", max_tokens=20, temperature=0, stop=[stop, "qqzz"]
    )
    assert reply.choices[0].text == full[: full.find(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_models_lists_the_served_id(client):
    model, encoder = client.models.list().data  # the chat model first: clients without --model take it
    assert model.id == TINY_MODEL and model.object == "model" and encoder.id == "all-minilm-l6-v2"


def test_concurrent_requests_are_batched(tiny_server_url):
    before = _health(tiny_server_url)["batch_sizes"]

    async def burst() -> list:
        aclient = openai.AsyncOpenAI(base_url=tiny_server_url, api_key="unused", max_retries=0)
        async with aclient:
            return await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model=TINY_MODEL,
                        messages=[{"role": "user", "content": f"Item {i}"}],
                        max_tokens=32,
                        temperature=0,
                    )
                    for i in range(8)
                )
            )

    replies = asyncio.run(burst())
    assert [r.usage.completion_tokens for r in replies] == [32] * 8
    after = _health(tiny_server_url)["batch_sizes"]
    new = {int(size): count - before.get(size, 0) for size, count in after.items() if count > before.get(size, 0)}
    assert sum(size * count for size, count in new.items()) == 8  # every request went through the batcher
    assert max(new) > 1, new


# ------------------------------------------------------------------------------------------- errors


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_unknown_model_is_404(client, http):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=CHAT, max_tokens=2)
    error = _error(http.post("/v1/completions", json={"model": "nope", "prompt": "x"}), 404)
    assert error["code"] == "model_not_found"


def test_unknown_route_is_404_in_openai_shape(http):
    _error(http.get("/v1/nothing"), 404)
    _error(http.get("/v1/chat/completions"), 405)


def test_malformed_json_is_400(http):
    truncated = b'{"model": "tiny-llama", "messages": ['
    error = _error(
        http.post("/v1/chat/completions", content=truncated, headers={"content-type": "application/json"}), 400
    )
    assert error["code"] == "invalid_json"
    _error(http.post("/v1/chat/completions", content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
    _error(http.post("/v1/chat/completions", json=[1, 2]), 400)


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"messages": "hi"}, "messages"),
        ("/v1/chat/completions", {}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": 3}]}, "messages"),
        ("/v1/chat/completions", {"messages": CHAT, "temperature": "hot"}, "temperature"),
        ("/v1/chat/completions", {"messages": CHAT, "max_tokens": True}, "max_tokens"),
        ("/v1/chat/completions", {"messages": CHAT, "n": 1.5}, "n"),
        ("/v1/chat/completions", {"messages": CHAT, "stop": [1]}, "stop"),
        ("/v1/chat/completions", {"messages": CHAT, "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
        ("/v1/chat/completions", {"messages": CHAT, "n": 0}, "n"),
        ("/v1/chat/completions", {"messages": CHAT, "temperature": 3}, "temperature"),
        ("/v1/chat/completions", {"messages": CHAT, "top_p": 0}, "top_p"),
        ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 100_000}, None),  # over the context
        ("/v1/completions", {"prompt": 3}, "prompt"),
        ("/v1/completions", {"prompt": []}, "prompt"),
        ("/v1/completions", {}, "prompt"),
    ],
)
def test_bad_fields_are_400(http, path, body, param):
    error = _error(http.post(path, json={"model": TINY_MODEL, **body}), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_bad_request_fails_alone_in_its_batch(tiny_server_url):
    """A request that fails validation in the worker must not fail the others gathered with it."""

    async def both() -> list:
        aclient = openai.AsyncOpenAI(base_url=tiny_server_url, api_key="unused", max_retries=0)
        async with aclient:
            good = aclient.chat.completions.create(model=TINY_MODEL, messages=CHAT, max_tokens=3)
            bad = aclient.completions.create(model=TINY_MODEL, prompt="word " * 2100, max_tokens=3)
            return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = asyncio.run(both())
    assert good.usage.completion_tokens == 3
    assert isinstance(bad, openai.BadRequestError) and "context" in str(bad)


def test_oversized_body_is_413(http):
    huge = {"model": TINY_MODEL, "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    assert _error(http.post("/v1/chat/completions", json=huge), 413)["code"] == "request_too_large"

    def chunks():  # no content-length: the limit is enforced while reading
        yield b'{"model": "tiny-llama", "prompt": "'
        for _ in range(11):
            yield b"x" * 100_000
        yield b'"}'

    _error(http.post("/v1/completions", content=chunks()), 413)


def test_api_key_is_required_when_configured(tiny_model_dir, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = ServeConfig(model=str(tiny_model_dir), port=0, served_model_name=TINY_MODEL, api_key=PLANTED_API_KEY)
    assert PLANTED_API_KEY not in repr(cfg)
    with serve_in_thread(cfg) as url:
        base = url.removesuffix("/v1")
        assert httpx.get(base + "/health", trust_env=False).status_code == 200  # health stays open
        for headers in [{}, {"authorization": "Bearer wrong"}, {"authorization": PLANTED_API_KEY}]:
            response = httpx.get(url + "/models", headers=headers, trust_env=False)
            assert _error(response, 401)["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="sk-wrong", max_retries=0).models.list()
        good = openai.OpenAI(base_url=url, api_key=PLANTED_API_KEY, max_retries=0)
        assert good.chat.completions.create(model=TINY_MODEL, messages=CHAT, max_tokens=2).usage.completion_tokens == 2
    assert PLANTED_API_KEY not in caplog.text


def test_503_while_loading_then_ready(tiny_model_dir):
    release = threading.Event()

    def slow_load() -> LocalBackend:
        release.wait(30)
        return LocalBackend(tiny_model_dir)

    cfg = ServeConfig(model=str(tiny_model_dir), port=0, served_model_name=TINY_MODEL)
    with serve_in_thread(cfg, loader=slow_load, wait=False) as url:
        response = httpx.get(url.removesuffix("/v1") + "/health", trust_env=False)
        assert response.status_code == 503 and response.json()["status"] == "loading"
        response = httpx.post(url + "/chat/completions", json={"model": TINY_MODEL, "messages": CHAT}, trust_env=False)
        assert _error(response, 503)["code"] == "model_loading"
        release.set()
        wait_healthy(url, timeout=30)
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        assert client.chat.completions.create(model=TINY_MODEL, messages=CHAT, max_tokens=2).choices


def test_failed_load_surfaces_in_the_caller(tmp_path):
    def broken() -> LocalBackend:
        raise RuntimeError("weights are corrupt")

    with pytest.raises(LLMServerError, match="weights are corrupt"):
        with serve_in_thread(ServeConfig(model=str(tmp_path), port=0), loader=broken):
            pass


def test_binds_loopback_by_default(tiny_server_url):
    assert ServeConfig().host == "127.0.0.1"
    assert urlsplit(tiny_server_url).hostname == "127.0.0.1"
    port = urlsplit(tiny_server_url).port
    try:
        outside = socket.gethostbyname(socket.gethostname())
    except OSError:
        outside = None
    if outside and not outside.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((outside, port), timeout=2).close()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"port": 70000}, "serve.port"),
        ({"max_batch_size": 0}, "serve.max_batch_size"),
        ({"max_request_bytes": 10}, "serve.max_request_bytes"),
        ({"api_key": " "}, "serve.api_key"),
        ({"served_model_name": "a b"}, "serve.served_model_name"),
        ({"device": "tpu"}, "serve.device"),
        ({"model": "/no/such/model"}, "serve.model"),
        ({"adapter": Path("/no/such/adapter")}, "serve.adapter"),
    ],
)
def test_serve_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ConfigError, match=f"^{field}"):
        ServeConfig(**kwargs)


def test_served_model_name_defaults(tiny_model_dir):
    assert ServeConfig().model_id == EMBEDDED_MODEL
    assert ServeConfig(model="embedded").model_id == EMBEDDED_MODEL
    assert ServeConfig(model=str(tiny_model_dir)).model_id.startswith(tiny_model_dir.name + "@")
    assert ServeConfig(model=str(tiny_model_dir), served_model_name="mine").model_id == "mine"


def test_adapter_is_served_with_the_chat_template_it_was_trained_with(tiny_model_dir, tmp_path):
    """`datagen train` saves its tokenizer beside the adapter; `serve --adapter` renders chats with its template."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from datagen.train.config import TrainConfig
    from datagen.train.data import TEMPLATES
    from datagen.train.sft import train

    data = tmp_path / "data.jsonl"
    rows = [{"instruction": f"Name colour {i}.", "input": "", "output": f"Colour {i}."} for i in range(4)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = TrainConfig(
        base=str(tiny_model_dir),
        chat_template="alpaca",
        max_steps=1,
        per_device_train_batch_size=2,
        eval_fraction=0.0,
        max_seq_len=64,
    )
    train(data, tmp_path / "sft", cfg, echo=lambda *_: None)
    adapter = tmp_path / "sft" / "adapter"

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.chat_template != TEMPLATES["alpaca"]  # the base model's is ChatML
    alpaca = tokenizer.apply_chat_template(
        CHAT, chat_template=TEMPLATES["alpaca"], tokenize=False, add_generation_prompt=True
    )
    assert alpaca.startswith("### Instruction:\nSay something.")
    alpaca_tokens = len(tokenizer(alpaca, add_special_tokens=False)["input_ids"])
    assert alpaca_tokens != _chat_prompt_tokens(tiny_model_dir, CHAT)

    backend = LocalBackend(tiny_model_dir, adapter)
    assert backend.tokenizer.chat_template == TEMPLATES["alpaca"]
    with serve_in_thread(
        ServeConfig(model=str(tiny_model_dir), adapter=adapter, port=0, served_model_name="t")
    ) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="t", messages=CHAT, max_tokens=2, temperature=0)
    assert reply.usage.prompt_tokens == alpaca_tokens

    # An adapter folder without a tokenizer (saved by other tools) is served with the base model's template.
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(adapter / name, bare / name)
    assert LocalBackend(tiny_model_dir, bare).tokenizer.chat_template == tokenizer.chat_template


# ---------------------------------------------------------------------------------------- processes


def test_run_server_writes_url_file_and_stops_cleanly_on_sigterm(tiny_model_dir, tmp_path):
    url_file = tmp_path / "url"
    code = (
        "from pathlib import Path; from datagen.llm.server import ServeConfig, run_server; "
        f"cfg = ServeConfig(model={str(tiny_model_dir)!r}, port=0, served_model_name='t'); "
        f"run_server(cfg, url_file=Path({str(url_file)!r}))"
    )
    root = Path(__file__).parents[2]
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root)
    try:
        deadline = time.monotonic() + 120
        while not url_file.exists():
            if proc.poll() is not None:
                pytest.fail(f"run_server exited with {proc.returncode}:\n{proc.stdout.read().decode()}")
            assert time.monotonic() < deadline, "no url file after 120 s"
            time.sleep(0.1)
        url = url_file.read_text()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        wait_healthy(url, timeout=10)
        assert openai.OpenAI(base_url=url, api_key="x", max_retries=0).models.list().data[0].id == "t"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert f"ready at {url}" in proc.stdout.read().decode()
    finally:
        proc.kill()
        proc.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_server_process_always_stops_its_child(tiny_model_dir):
    cfg = ServeConfig(model=str(tiny_model_dir), port=0, served_model_name=TINY_MODEL)
    with start_server_process(cfg, timeout=120) as url:
        pid = _health(url)["pid"]
        assert pid != os.getpid() and _pid_alive(pid)
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model=TINY_MODEL, messages=CHAT, max_tokens=3)
        assert reply.usage.completion_tokens == 3
    assert not _pid_alive(pid)

    with pytest.raises(KeyboardInterrupt):
        with start_server_process(cfg, timeout=120) as url:
            pid = _health(url)["pid"]
            raise KeyboardInterrupt
    assert not _pid_alive(pid)


def test_start_server_process_reports_the_childs_error(tmp_path):
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(LLMError, match="config.json"):  # the child's own message, from its output tail
        with start_server_process(ServeConfig(model=str(tmp_path / "empty-model"), port=0), timeout=120):
            pass


# ------------------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_embedded_model_chats_sensibly(embedded_server_url):
    client = openai.OpenAI(base_url=embedded_server_url, api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=EMBEDDED_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=30,
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_embedded_model_continues_a_numbered_list(embedded_server_url):
    client = openai.OpenAI(base_url=embedded_server_url, api_key="unused", max_retries=0)
    reply = client.completions.create(
        model=EMBEDDED_MODEL, prompt="Fruits:\n1. apple\n2. banana\n3.", temperature=0, max_tokens=16
    )
    text = reply.choices[0].text
    assert text.split("\n")[0].strip()  # item 3 got a name
    assert "\n4." in text  # and the list went on


@pytest.mark.slow
def test_embedded_model_serves_concurrent_requests_in_batches(embedded_server_url):
    before = _health(embedded_server_url)["batch_sizes"]

    async def burst() -> list:
        aclient = openai.AsyncOpenAI(base_url=embedded_server_url, api_key="unused", max_retries=0)
        async with aclient:
            questions = ["Name a colour.", "Name an animal.", "Name a city.", "Name a fruit."]
            return await asyncio.gather(
                *(
                    aclient.chat.completions.create(
                        model=EMBEDDED_MODEL, messages=[{"role": "user", "content": q}], max_tokens=20, temperature=0
                    )
                    for q in questions
                )
            )

    replies = asyncio.run(burst())
    assert all(r.choices[0].message.content.strip() for r in replies)
    after = _health(embedded_server_url)["batch_sizes"]
    assert any(int(size) > 1 and count > before.get(size, 0) for size, count in after.items())


def test_child_server_stops_when_its_parent_is_killed(tiny_model_dir, tmp_path):
    """A parent that dies by SIGKILL runs no cleanup; the child server must notice and stop by itself."""
    import signal as _signal
    import subprocess as _subprocess
    import sys as _sys
    import time as _time

    import httpx

    url_file = tmp_path / "url"
    code = (
        "import sys, time, pathlib\n"
        "from datagen.llm.server import ServeConfig, start_server_process\n"
        f"with start_server_process(ServeConfig(model={str(tiny_model_dir)!r}, port=0)) as url:\n"
        f"    pathlib.Path({str(url_file)!r}).write_text(url)\n"
        "    time.sleep(600)\n"
    )
    parent = _subprocess.Popen([_sys.executable, "-c", code])
    try:
        deadline = _time.monotonic() + 240
        while not url_file.exists() and _time.monotonic() < deadline:
            _time.sleep(0.2)
        url = url_file.read_text()
        child_pid = httpx.get(url.removesuffix("/v1") + "/health", timeout=10).json()["pid"]
    finally:
        parent.send_signal(_signal.SIGKILL)
        parent.wait()
    deadline = _time.monotonic() + 30
    while _time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        _time.sleep(0.2)
    else:
        os.kill(child_pid, _signal.SIGKILL)
        raise AssertionError("the orphaned server was still running 30 s after its parent died")


def test_the_child_server_gets_every_field_of_its_config():
    """``start_server_process`` starts ``datagen serve`` with ``_serve_args(cfg)``: parsed back by that command,
    the arguments must give the same config (``device`` used to be left out, so the child always chose "auto")."""
    from datagen import cli
    from datagen.llm.server import _serve_args

    cfg = ServeConfig(
        host="0.0.0.0",
        port=0,
        served_model_name="m1",
        max_batch_size=4,
        max_request_bytes=2048,
        device="cpu",
        max_choices=8,
        client_timeout=5.0,
        allowed_hosts=("example.org",),
    )
    with cli.serve_cmd.make_context("serve", _serve_args(cfg)) as ctx:
        given = dict(ctx.params)
        hosts, _ = given.pop("allow_hosts"), given.pop("url_file")
        assert cli.configure("ServeConfig", given, allowed_hosts=tuple(hosts)) == cfg
