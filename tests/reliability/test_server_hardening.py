"""`datagen serve` hardening beyond tests/llm/test_server.py (which covers 413 by size and chunked bodies, 401
on /v1/models, loopback binding of ServeConfig and serve_in_thread): the CLI's own defaults, the key kept out
of argv and reprs, auth checked before a body is read, a lying Content-Length, every /v1 route behind the key,
and a server that keeps serving after a burst of rejected requests.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from datagen.cli import cli
from datagen.llm.server import ServeConfig, _serve_args, serve_in_thread
from tests.conftest import PLANTED_API_KEY
from tests.plugins.models import TINY_MODEL

LIMIT = 4096


@pytest.fixture(scope="module")
def keyed_server(tiny_model_dir):
    cfg = ServeConfig(
        model=str(tiny_model_dir),
        port=0,
        served_model_name=TINY_MODEL,
        api_key=PLANTED_API_KEY,
        max_request_bytes=LIMIT,
    )
    with serve_in_thread(cfg) as url:
        yield url


def _raw(url: str, request: bytes, timeout: float = 5.0) -> tuple[int, float]:
    """Send raw bytes; return the status code and how long the answer took."""
    parts = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        head = sock.recv(4096).decode("latin-1")
    return int(head.split(" ", 2)[1]), time.monotonic() - started


def test_cli_defaults_bind_loopback_and_take_the_key_from_the_environment(monkeypatch):
    """`datagen serve` with no flags binds 127.0.0.1; DATAGEN_SERVE_API_KEY reaches the server config; the key
    is in neither the config's repr nor the argv of a child server (argv is world-readable in ps)."""
    seen = {}
    monkeypatch.setattr("datagen.llm.server.run_server", lambda cfg, url_file=None: seen.setdefault("cfg", cfg))
    monkeypatch.setenv("DATAGEN_SERVE_API_KEY", PLANTED_API_KEY)
    result = CliRunner().invoke(cli, ["serve", "--port", "0"])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert cfg.host == "127.0.0.1" and cfg.api_key == PLANTED_API_KEY
    assert PLANTED_API_KEY not in repr(cfg) and PLANTED_API_KEY not in " ".join(_serve_args(cfg))
    assert PLANTED_API_KEY not in result.output


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions", "/v1/models"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer wrong-key", f"Basic {PLANTED_API_KEY}", f"Bearer {PLANTED_API_KEY}x", PLANTED_API_KEY],
)
def test_every_route_needs_the_key(keyed_server, route, authorization):
    """Every /v1 route answers 401 to a missing, empty, wrong, non-Bearer or extended key."""
    headers = {"authorization": authorization} if authorization else {}
    body = {"model": TINY_MODEL, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi", "max_tokens": 1}
    method = httpx.get if route == "/v1/models" else httpx.post
    kwargs = {} if route == "/v1/models" else {"json": body}
    response = method(keyed_server.removesuffix("/v1") + route, headers=headers, trust_env=False, timeout=30, **kwargs)
    assert response.status_code == 401
    assert PLANTED_API_KEY not in response.text


def test_auth_is_checked_before_the_body_is_read(keyed_server):
    """A request without the key that declares a 10 GB body gets 401 at once: nothing is read first."""
    path = urlsplit(keyed_server).path + "/chat/completions"
    status, seconds = _raw(
        keyed_server,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 10000000000\r\n\r\n{{".encode(),
    )
    assert status == 401 and seconds < 5


def test_a_lying_content_length_is_refused_without_waiting_for_the_body(keyed_server):
    """With the key, a declared 10 GB body (and 1 byte sent) gets 413 at once instead of a hung connection."""
    path = urlsplit(keyed_server).path + "/completions"
    status, seconds = _raw(
        keyed_server,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PLANTED_API_KEY}"
        f"\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{".encode(),
    )
    assert status == 413 and seconds < 5


def test_the_server_keeps_serving_after_a_burst_of_rejected_requests(keyed_server):
    """40 oversized and unauthenticated requests in a row, then a normal one: answered."""
    base = keyed_server.removesuffix("/v1")
    big = {"model": TINY_MODEL, "prompt": "x" * (LIMIT * 2)}
    good = {"authorization": f"Bearer {PLANTED_API_KEY}"}
    with httpx.Client(trust_env=False, timeout=30) as client:
        for i in range(20):
            assert client.post(base + "/v1/completions", json=big, headers=good).status_code == 413
            assert client.post(base + "/v1/completions", json=big).status_code == 401
        answer = client.post(
            base + "/v1/completions", json={"model": TINY_MODEL, "prompt": "Hi", "max_tokens": 2}, headers=good
        )
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 2
