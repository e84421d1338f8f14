"""Secrets: the API key planted in the environment never shows up anywhere the program writes or says.

Checked on the failure paths, where keys usually leak: a rejected key (401), server errors and malformed
answers from an endpoint that *echoes the Authorization header back* in its error bodies (as some proxies
do), and a circuit that opens on a dead endpoint. Places searched: stdout and stderr of `datagen -v run`
(debug logging on, and the SDK's own ``OPENAI_LOG=debug``), every file under the run folder (outputs, rejects,
state logs, manifest, report), DATAGEN_HOME (the SQLite answer cache and its WAL), exception messages and
whole tracebacks of the client's errors.
"""

from __future__ import annotations

import asyncio
import traceback

import pytest

from datagen.errors import LLMError
from datagen.llm.client import LLMClient, LLMConfig
from tests.conftest import PLANTED_API_KEY
from tests.plugins.faults import MODEL_ID, FaultServer, _Handler, running
from tests.reliability._support import REPO, SEEDS, responder, run_datagen, subprocess_env, write_config


class _EchoingHandler(_Handler):
    """The fault server's handler, but every error and broken body repeats the Authorization header it got."""

    def do_POST(self):
        self.server.auth_seen.append(self.headers.get("Authorization"))
        super().do_POST()

    def _error(self, status, message, headers=None):
        super()._error(status, f"{message}; you sent Authorization: {self.headers.get('Authorization')}", headers)

    def _json(self, status, payload, headers=None):
        if isinstance(payload, bytes):  # the "malformed" fault
            payload = payload + f" {self.headers.get('Authorization')}".encode()
        super()._json(status, payload, headers)


@pytest.fixture
def echo_server():
    server = FaultServer()
    server.RequestHandlerClass = _EchoingHandler
    server.auth_seen = []
    with running(server):
        yield server


def _files_with_key(root):
    key = PLANTED_API_KEY.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and key in p.read_bytes()]


SCENARIOS = {
    # name: (plan settings, endpoint settings, expected exit code)
    "auth-failure": ({"require_key": "sk-the-right-one"}, {}, 0),
    "server-errors-and-malformed": (
        {"rate": 0.5, "kinds": ("500", "502", "503", "429", "malformed", "empty_choices")},
        {"max_retries": 1},
        0,
    ),
    "circuit-open": ({"down": True}, {"circuit_breaker": 0.3, "max_retries": 50}, 1),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_planted_key_never_leaks_on_failure_paths(scenario, echo_server, tmp_path, record_property):
    """`datagen -v run` (self-instruct + self-qa) with DATAGEN_API_KEY planted, OPENAI_LOG=debug and an endpoint
    that echoes the Authorization header: 401s, 5xx/429/malformed answers, an open circuit. The key is sent,
    and appears in no output stream, file, cache, manifest or report."""
    plan, endpoint, code = SCENARIOS[scenario]
    echo_server.responder = responder()
    for name, value in plan.items():
        setattr(echo_server.plan, name, value)
    config = write_config(
        tmp_path / "c.yaml",
        tmp_path / "out",
        echo_server.url,
        tmp_path / "home" / "cache.sqlite",
        endpoint=endpoint,
        self_instruct={"seeds": SEEDS, "num_instructions": 3, "batch_size": 2, "classifier_eval_seeds": 2},
        self_qa={"docs": str(REPO / "seeds" / "docs"), "max_chunks": 2, "questions_per_chunk": 1},
    )
    env = subprocess_env(tmp_path / "home", DATAGEN_API_KEY=PLANTED_API_KEY, OPENAI_LOG="debug")
    result = run_datagen("-v", "run", config, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == code, result.stderr[-3000:]
    seen = echo_server.auth_seen
    assert seen and all(auth == f"Bearer {PLANTED_API_KEY}" for auth in seen)  # the key was really sent
    assert PLANTED_API_KEY not in result.stdout and PLANTED_API_KEY not in result.stderr
    assert "DEBUG" in result.stderr  # the debug logs were really on
    assert not _files_with_key(tmp_path), _files_with_key(tmp_path)
    if scenario == "circuit-open":
        assert "re-run with --resume" in result.stderr
    else:
        assert (tmp_path / "out" / "r" / "report.html").is_file()
    record_property("tried", len(seen))
    record_property(
        "detail",
        f"{len(seen)} requests carried the key; exit {result.returncode}; "
        f"searched stdout, stderr and {sum(1 for p in tmp_path.rglob('*') if p.is_file())} files",
    )


@pytest.mark.parametrize("kind", ["401", "500", "malformed"])
def test_client_errors_and_their_tracebacks_never_hold_the_key(kind, echo_server, tmp_path, monkeypatch):
    """The LLMError a failed request raises: its message, repr and whole formatted traceback (causes included,
    as DATAGEN_DEBUG=1 would print it) never hold the key, even when the server echoed it."""
    monkeypatch.setenv("DATAGEN_API_KEY", PLANTED_API_KEY)
    if kind == "401":
        echo_server.plan.require_key = "sk-the-right-one"
    else:
        echo_server.plan.script = {"hello": [kind] * 3}
    cfg = LLMConfig(base_urls=(echo_server.url,), model=MODEL_ID, max_retries=1, backoff_base=0.01, cache=False)

    async def ask():
        async with LLMClient(cfg) as llm:
            await llm.chat([{"role": "user", "content": "hello"}])

    with pytest.raises(LLMError) as caught:
        asyncio.run(ask())
    error = caught.value
    assert echo_server.auth_seen == [f"Bearer {PLANTED_API_KEY}"] * len(echo_server.auth_seen) != []
    assert PLANTED_API_KEY not in str(error) and PLANTED_API_KEY not in repr(error)
    formatted = "".join(traceback.format_exception(error))
    assert PLANTED_API_KEY not in formatted, "the key is in the exception chain"
