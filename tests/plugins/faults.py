"""A fault-injecting, scriptable OpenAI-compatible HTTP server for tests of the LLM path.

A real model cannot return a 429 or reset a connection on demand, so this server does, on real HTTP:
``429`` (with ``Retry-After``), ``429_plain`` (without), ``500``/``502``/``503``, ``reset`` (TCP RST),
``stall`` (answer only after the client's timeout), ``malformed`` (broken JSON), ``empty_choices``,
``length`` (a truncated answer: data, not a fault) and ``slow`` (late but within the timeout). Two hostile
answers are scripted only (not in ``ALL_FAULTS``, so seeded fault mixes stay as they were): ``surrogate`` (the
content holds a lone ``\\ud800``, valid JSON that no UTF-8 file can store) and ``bad_usage`` (a ``usage`` block
of the wrong shape: a string count). It also serves the Batch API (``/v1/files``, ``/v1/batches``: see
``batch_api.py``) with faults of its own.

Faults come from a per-request script, or at a seeded rate decided from a hash of (request, attempt), so
the same run sees the same faults whatever the concurrency. Answers are a deterministic function of the
request, or come from ``responder`` for scripted generator tests. Every request is logged, so a test can
count calls per distinct request. Stdlib ``http.server``: it gives the raw socket control resets need.

    def test_x(fault_server):
        fault_server.plan.rate = 0.3
        url = fault_server.url            # http://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.plugins.batch_api import BatchState, handle_batch_route, is_batch_route

ALL_FAULTS = ("429", "429_plain", "500", "502", "503", "reset", "stall", "malformed", "empty_choices")
HOSTILE_ANSWERS = ("surrogate", "bad_usage")  # well-formed JSON, hostile content: scripted or listed in ``kinds``
MODEL_ID = "fault-model"


@dataclass
class FaultPlan:
    """What the server does. Tests mutate it; ``FaultServer.reset()`` restores the defaults."""

    rate: float = 0.0  # chance that an attempt gets a fault from ``kinds``
    kinds: tuple[str, ...] = ALL_FAULTS
    seed: int = 0
    script: dict[str, list[str]] = field(default_factory=dict)  # request text → outcomes per attempt ("ok" = answer)
    down: bool = False  # every request gets a 503
    latency: float = 0.0  # seconds added to every answer
    retry_after: str = "1"  # Retry-After header value for "429"
    stall_seconds: float = 3.0
    slow_seconds: float = 0.2
    require_key: str | None = None  # answer 401 unless "Authorization: Bearer <key>"


def request_text(kind: str, body: dict[str, Any]) -> str:
    """The text a request is known by in scripts and logs: the last user message, or the prompt."""
    if kind == "chat":
        users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
        return users[-1] if users else ""
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def default_answer(kind: str, body: dict[str, Any]) -> str:
    """A deterministic answer that names its request, so tests can match answers to requests."""
    text = request_text(kind, body)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]
    return f"answer[{digest}] to: {text[:80]}"


class FaultServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a stalled handler must not hold up shutdown

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan = FaultPlan()
        self.responder: Callable[[str, dict[str, Any]], str | tuple[str, str]] | None = None
        self.lock = threading.Lock()
        self.log: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.handler_errors: list[BaseException] = []
        self.batches = BatchState()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-exchange (timeouts, a stopped run) is normal here; anything else is
        kept for the test to raise. socketserver's default prints a traceback into the test's captured output."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, OSError)):
            return
        self.handler_errors.append(error)

    def reset(self) -> None:
        with self.lock:
            self.plan = FaultPlan()
            self.responder = None
            self.log.clear()
            self.attempts.clear()
            self.handler_errors.clear()
            self.batches = BatchState()

    def requests_for(self, text: str) -> int:
        with self.lock:
            return sum(1 for entry in self.log if entry["text"] == text)

    def answered(self) -> Counter[str]:
        """How many successful answers each request text received."""
        with self.lock:
            return Counter(e["text"] for e in self.log if e["outcome"] in ("ok", "length", "slow"))

    def decide(self, text: str) -> str:
        """The outcome of this attempt of this request: scripted, or drawn at the plan's rate."""
        with self.lock:
            attempt = self.attempts[text]
            self.attempts[text] += 1
            plan = self.plan
        if plan.down:
            return "503"
        if text in plan.script:
            steps = plan.script[text]
            return steps[attempt] if attempt < len(steps) else "ok"
        if plan.rate > 0:
            draw = hashlib.sha256(f"{plan.seed}|{text}|{attempt}".encode()).digest()
            if struct.unpack(">Q", draw[:8])[0] / 2**64 < plan.rate:
                return plan.kinds[draw[8] % len(plan.kinds)]
        return "ok"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(status, {"error": {"message": message, "type": "fault_injected", "code": status}}, headers)

    def do_GET(self) -> None:
        if is_batch_route(self.path):
            return handle_batch_route(self, "GET")
        if self.path.rstrip("/") in ("/health", "/v1/health"):
            self._json(200, {"status": "ok"})
        elif self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "tests"}]})
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # surfaced by the fixture, so a broken server fails the test
            self.server.handler_errors.append(exc)
            raise

    def _post(self) -> None:
        if is_batch_route(self.path):
            return handle_batch_route(self, "POST")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        kind = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}.get(self.path)
        if kind is None:
            return self._error(404, f"no route {self.path}")
        plan = self.server.plan
        if plan.require_key and self.headers.get("Authorization") != f"Bearer {plan.require_key}":
            return self._error(401, "invalid api key")
        text = request_text(kind, body)
        if body.get("model") != MODEL_ID:
            with self.server.lock:
                self.server.log.append(
                    {
                        "text": text,
                        "kind": kind,
                        "outcome": "unknown_model",
                        "time": time.time(),
                        "body": body,
                        "auth": self.headers.get("Authorization"),
                    }
                )
            return self._error(404, f"model {body.get('model')!r} not found")
        outcome = self.server.decide(text)
        with self.server.lock:
            self.server.log.append(
                {
                    "text": text,
                    "kind": kind,
                    "outcome": outcome,
                    "time": time.time(),
                    "body": body,
                    "auth": self.headers.get("Authorization"),
                }
            )
        if plan.latency:
            time.sleep(plan.latency)
        if outcome == "429":
            return self._error(429, "rate limited", {"Retry-After": plan.retry_after})
        if outcome == "429_plain":
            return self._error(429, "rate limited")
        if outcome in ("500", "502", "503"):
            return self._error(int(outcome), f"injected {outcome}")
        if outcome == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        if outcome == "malformed":
            return self._json(200, b'{"id": "cmpl-broken", "choices": [{"message": ')
        if outcome == "empty_choices":
            return self._json(200, {"id": "cmpl-empty", "object": "chat.completion", "model": MODEL_ID, "choices": []})
        if outcome == "stall":
            time.sleep(plan.stall_seconds)
        if outcome == "slow":
            time.sleep(plan.slow_seconds)
        self._answer(kind, body, outcome)

    def _answer(self, kind: str, body: dict[str, Any], outcome: str) -> None:
        self._json(200, completion_body(self.server, kind, body, outcome))


def completion_body(server: FaultServer, kind: str, body: dict[str, Any], outcome: str = "ok") -> dict[str, Any]:
    """The answer to one request, online or in a batch job: the same request gets the same answer either way."""
    reply = server.responder(kind, body) if server.responder else default_answer(kind, body)
    text, finish_reason = reply if isinstance(reply, tuple) else (reply, "stop")
    if outcome == "length":
        text, finish_reason = text[: max(1, len(text) // 2)], "length"
    if outcome == "surrogate":
        text = text + " \ud800"  # json.dumps escapes it as \ud800: valid JSON, unencodable as UTF-8
    usage: Any = {"prompt_tokens": len(json.dumps(body)) // 4, "completion_tokens": max(1, len(text.split()))}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if outcome == "bad_usage":
        usage = {"prompt_tokens": "many", "completion_tokens": {"n": 3}}
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    return {
        "id": "cmpl-test",
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [choice],
        "usage": usage,
    }


@contextlib.contextmanager
def running(server: FaultServer) -> Iterator[FaultServer]:
    """Serve ``server`` from a daemon thread for the duration of the block, then shut it down."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def _fault_server_session():
    server = FaultServer()
    with running(server):
        yield server


@pytest.fixture
def fault_server(_fault_server_session):
    """The session's fault server, reset for this test; errors raised inside its handlers fail the test."""
    _fault_server_session.reset()
    yield _fault_server_session
    errors = list(_fault_server_session.handler_errors)
    _fault_server_session.reset()
    if errors:
        raise errors[0]


@pytest.fixture
def second_fault_server():
    """A separate fault server, for load-balancing tests."""
    server = FaultServer()
    with running(server):
        yield server
