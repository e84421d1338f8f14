"""Issue 18.11: `datagen serve` bounds the work of one request and of one client.

n x prompts is capped per request; a client that disconnects stops its generation; a client that sends its
headers or body too slowly is cut off; without an API key only loopback Host/Origin are served, so a web page
cannot drive the server (CSRF, DNS rebinding).
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from datagen.llm.server import ServeConfig, serve_in_thread
from tests.conftest import PLANTED_API_KEY
from tests.plugins.models import TINY_MODEL

TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    cfg = ServeConfig(
        model=str(tiny_model_dir),
        port=0,
        served_model_name=TINY_MODEL,
        max_choices=8,
        client_timeout=TIMEOUT,
        max_batch_size=4,
    )
    with serve_in_thread(cfg) as url:
        yield url


def _addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _post(url: str, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers or {}, trust_env=False, timeout=30)


def test_n_times_prompts_is_bounded(server, record_property):
    """n x prompts over the limit is 400 naming `n`, answered at once; at the limit it is served."""
    started = time.monotonic()
    reply = _post(server, "/completions", {"model": TINY_MODEL, "prompt": ["a", "b", "c"], "n": 3, "max_tokens": 2})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "n"
    assert "at most 8" in reply.json()["error"]["message"]
    assert time.monotonic() - started < 2
    chat = _post(
        server,
        "/chat/completions",
        {"model": TINY_MODEL, "n": 9, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "n"
    ok = _post(server, "/completions", {"model": TINY_MODEL, "prompt": ["a", "b"], "n": 4, "max_tokens": 2})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 8
    record_property("tried", 3)


def test_a_disconnected_client_stops_its_generation(server):
    """A client that hangs up mid-generation: its rows stop (counted in /health) and the server serves on."""
    health = server.removesuffix("/v1") + "/health"
    before = httpx.get(health, trust_env=False).json()["cancelled_rows"]
    body = json.dumps(
        {"model": TINY_MODEL, "prompt": "Once upon a time", "max_tokens": 2000, "n": 2, "temperature": 1.0, "seed": 1}
    ).encode()
    with socket.create_connection(_addr(server)) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while httpx.get(health, trust_env=False).json()["cancelled_rows"] < before + 2:
        assert time.monotonic() < deadline, "the abandoned generation was not cancelled"
        time.sleep(0.1)
    ok = _post(server, "/completions", {"model": TINY_MODEL, "prompt": "x", "max_tokens": 2})
    assert ok.status_code == 200


def test_slow_headers_are_cut_off(server):
    """A client trickling its headers (slowloris) loses the connection after the client timeout."""
    started = time.monotonic()
    with socket.create_connection(_addr(server), timeout=10) as sock:
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 40
        closed = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    pass
                finally:
                    sock.setblocking(True)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
    assert closed, "the server held a slow client for the whole trickle"
    assert time.monotonic() - started < TIMEOUT + 3


def test_slow_body_is_408(server):
    """Headers promise 100 bytes, 10 arrive: 408 after the client timeout, not a connection held forever."""
    with socket.create_connection(_addr(server), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model":'
        )
        started = time.monotonic()
        head = sock.recv(4096).decode("latin-1")
    assert head.split(" ", 2)[1] == "408"
    assert TIMEOUT - 0.2 < time.monotonic() - started < TIMEOUT + 3


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Host": "evil.example"}, 403),
        ({"Host": "evil.example:8000"}, 403),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Host": "localhost:1234"}, 200),
        ({"Host": "[::1]:1234", "Origin": "http://localhost:3000"}, 200),
        ({"Host": "127.0.0.1"}, 200),
    ],
)
def test_without_a_key_only_loopback_hosts_and_origins(server, headers, status):
    """DNS rebinding and CSRF: a foreign Host or Origin gets 403 on every route; loopback names are served."""
    for path in ("/models", "/chat/completions"):
        if path == "/models":
            reply = httpx.get(server + path, headers=headers, trust_env=False)
        else:
            reply = _post(
                server,
                path,
                {"model": TINY_MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]},
                headers,
            )
        assert reply.status_code == status, (path, reply.text)
        if status == 403:
            assert "not allowed" in reply.json()["error"]["message"]


def test_allow_host_and_api_key_open_other_names(tiny_model_dir):
    """--allow-host NAME serves that name; with an API key the key is the check and any Host is served."""
    cfg = ServeConfig(model=str(tiny_model_dir), port=0, served_model_name=TINY_MODEL, allowed_hosts=("gpu-box",))
    with serve_in_thread(cfg) as url:
        assert httpx.get(url + "/models", headers={"Host": "gpu-box:8000"}, trust_env=False).status_code == 200
        assert httpx.get(url + "/models", headers={"Host": "other"}, trust_env=False).status_code == 403
    cfg = ServeConfig(model=str(tiny_model_dir), port=0, served_model_name=TINY_MODEL, api_key=PLANTED_API_KEY)
    with serve_in_thread(cfg) as url:
        key = {"Authorization": f"Bearer {PLANTED_API_KEY}", "Host": "anything.example"}
        assert httpx.get(url + "/models", headers=key, trust_env=False).status_code == 200


def _raw_post(path: str, body: dict) -> tuple[bytes, bytes]:
    """A request split in two: all but its last byte (send now), and the last byte (send to start it)."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + data[:-1], data[-1:]


def _read_until_content(sock: socket.socket) -> bytes:
    """Read server-sent events until one carries generated text (not only the role): the stream is mid-way."""
    seen = b""
    while True:
        chunk = sock.recv(4096)
        assert chunk, f"the stream ended before any text: {seen[-300:]!r}"
        seen += chunk
        lines = seen.decode(errors="replace").split("\n")
        if any('"content": "' in line and '"content": ""' not in line for line in lines):
            return seen


def test_a_stream_abandoned_mid_way_stops_its_generation(server, record_property):
    """A streaming client that reads its first text and hangs up: its generation stops too (counted in /health).

    The client hangs up after a text delta, so its row was generating (a stream abandoned while still queued is
    the next test). The row is counted only when stopped by its cancel, not when it ran to max_tokens.
    """
    health = server.removesuffix("/v1") + "/health"
    before = httpx.get(health, trust_env=False).json()["cancelled_rows"]
    body = {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": "Go on."}],
        "max_tokens": 1900,
        "temperature": 1.0,
        "seed": 2,
        "stream": True,
    }
    started = time.monotonic()
    with socket.create_connection(_addr(server), timeout=30) as sock:
        sock.sendall(b"".join(_raw_post("/v1/chat/completions", body)))
        _read_until_content(sock)
    deadline = time.monotonic() + 30
    while httpx.get(health, trust_env=False).json()["cancelled_rows"] < before + 1:
        assert time.monotonic() < deadline, "the abandoned stream kept generating"
        time.sleep(0.1)
    record_property("detail", f"cancel counted {time.monotonic() - started:.1f} s after the request")


def test_a_stream_abandoned_while_queued_is_dropped(server):
    """A stream that hangs up after its role chunk, before its batch starts: never generated, counted cancelled."""
    health = server.removesuffix("/v1") + "/health"
    before = httpx.get(health, trust_env=False).json()
    busy = {"model": TINY_MODEL, "prompt": "x", "max_tokens": 1500, "temperature": 0}  # holds the model thread
    stream = {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": "Go on."}],
        "max_tokens": 50,
        "n": 3,
        "temperature": 1.0,
        "seed": 3,
        "stream": True,
    }
    with socket.create_connection(_addr(server), timeout=60) as first:
        first.sendall(b"".join(_raw_post("/v1/completions", busy)))
        deadline = time.monotonic() + 30
        batches = sum(before["batch_sizes"].values())
        while sum(httpx.get(health, trust_env=False).json()["batch_sizes"].values()) == batches:
            assert time.monotonic() < deadline, "the first request never started"
            time.sleep(0.02)
        with socket.create_connection(_addr(server), timeout=30) as sock:  # queued behind the busy request
            sock.sendall(b"".join(_raw_post("/v1/chat/completions", stream)))
            seen = b""
            while b"data: " not in seen:  # the role chunk, sent before the request reaches the model
                chunk = sock.recv(4096)
                assert chunk, seen
                seen += chunk
            assert b'"content": ""' in seen and b'"content": "' not in seen.replace(b'"content": ""', b"")
        reply = b""
        while chunk := first.recv(65536):
            reply += chunk
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["usage"]["completion_tokens"] == 1500
    deadline = time.monotonic() + 30
    while httpx.get(health, trust_env=False).json()["cancelled_rows"] < before["cancelled_rows"] + 3:
        assert time.monotonic() < deadline, "the rows of a stream abandoned in the queue were not counted"
        time.sleep(0.1)


def test_an_abandoned_stream_does_not_hurt_its_batch_mate(server, record_property):
    """A stream and a plain request generated in one batch: the stream hangs up, its row stops, the other
    request still gets every token it asked for."""
    health = server.removesuffix("/v1") + "/health"
    mate = {"model": TINY_MODEL, "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0}
    stream = {
        "model": TINY_MODEL,
        "messages": [{"role": "user", "content": "Go on."}],
        "max_tokens": 1900,
        "temperature": 1.0,
        "seed": 4,
        "stream": True,
    }
    for attempt in range(1, 4):  # the two must land in one batch (the worker waits 20 ms for company)
        before = httpx.get(health, trust_env=False).json()
        with (
            socket.create_connection(_addr(server), timeout=60) as other,
            socket.create_connection(_addr(server), timeout=30) as sock,
        ):
            mate_head, mate_last = _raw_post("/v1/completions", mate)
            stream_head, stream_last = _raw_post("/v1/chat/completions", stream)
            other.sendall(mate_head)
            sock.sendall(stream_head)
            time.sleep(0.2)
            other.sendall(mate_last)
            sock.sendall(stream_last)
            _read_until_content(sock)
            sock.close()
            reply = b""
            while chunk := other.recv(65536):
                reply += chunk
        answer = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        assert answer["usage"]["completion_tokens"] == 400 and answer["choices"][0]["finish_reason"] == "length"
        after = httpx.get(health, trust_env=False).json()
        assert after["cancelled_rows"] >= before["cancelled_rows"] + 1, "the abandoned stream kept generating"
        if after["batch_sizes"].get("2", 0) > before["batch_sizes"].get("2", 0):
            record_property("detail", f"batched together on attempt {attempt}")
            return
    pytest.fail("the two requests never shared a batch in 3 attempts")
