"""Issue 18, item 12: credentials inside a base URL (``https://user:key@host/v1``) and secret-looking query
parameters (``?api_key=``) are redacted everywhere the program writes or logs, through one helper
(``datagen.redaction``): stats.json, manifest.json, report.html, the lock file, log lines and error messages.

The URL still works (the credentials are sent); only what is shown changes.
"""

from __future__ import annotations

import socket

import pytest

from datagen.errors import ConfigError
from datagen.llm.client import LLMConfig
from datagen.redaction import redact_text, redact_url
from tests.reliability._support import (
    REPO,
    SEEDS,
    responder,
    run_datagen,
    subprocess_env,
    write_config,
)

USER_SECRET = "sekrit-pass-4F9q"
QUERY_SECRET = "qsecret-77Zx"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _leaks(root, *texts: str) -> list[str]:
    found = [f"output stream {i}" for i, text in enumerate(texts) if USER_SECRET in text or QUERY_SECRET in text]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if USER_SECRET.encode() in data or QUERY_SECRET.encode() in data:
                found.append(str(path))
    return found


@pytest.mark.parametrize("scenario", ["working-endpoint", "endpoint-down"])
def test_url_credentials_never_written_or_logged(scenario, fault_server, tmp_path, record_property):
    """#12: `datagen -v run` (Self-Instruct + Self-QA) with `base_url: http://alice:<secret>@127.0.0.1:PORT/v1`,
    against a working endpoint (the credentials still reach it, as HTTP Basic auth) and against a closed port
    with a `?api_key=<secret>` query too (every request fails): the secrets appear in no output stream, run
    file, manifest, stats, report or cache; the redacted form `http://***@127.0.0.1` is what the manifest
    shows."""
    fault_server.responder = responder()
    if scenario == "working-endpoint":
        url = fault_server.url.replace("http://", f"http://alice:{USER_SECRET}@")
        endpoint, code = {}, 0
    else:
        url = f"http://alice:{USER_SECRET}@127.0.0.1:{_closed_port()}/v1?api_key={QUERY_SECRET}&x=1"
        endpoint, code = {"max_retries": 0, "circuit_breaker": 0.2}, None
    config = write_config(
        tmp_path / "c.yaml",
        tmp_path / "out",
        url,
        tmp_path / "home" / "cache.sqlite",
        endpoint=endpoint,
        self_instruct={"seeds": SEEDS, "num_instructions": 2, "batch_size": 1, "classifier_eval_seeds": 1},
        self_qa={"docs": str(REPO / "seeds" / "docs"), "max_chunks": 1, "questions_per_chunk": 1},
    )
    env = subprocess_env(tmp_path / "home")
    result = run_datagen("-v", "run", config, env=env, timeout=120, cwd=tmp_path)
    if code is not None:
        assert result.returncode == code, result.stderr[-3000:]
        assert fault_server.log, "the endpoint was never reached"
        assert all(e["auth"].startswith("Basic ") for e in fault_server.log), fault_server.log[0]["auth"]
    else:
        # every request fails for good: listed as failures (exit 0, `--resume` asks them again), no crash
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr[-3000:]
        assert "request failed for good" in result.stderr, result.stderr[-3000:]
    leaks = _leaks(tmp_path / "out", result.stdout, result.stderr) + _leaks(tmp_path / "home")
    assert not leaks, f"URL credentials leaked into: {leaks}"
    manifest = tmp_path / "out" / "r" / "manifest.json"
    if manifest.exists():
        assert "http://***@127.0.0.1" in manifest.read_text(), manifest.read_text()[:2000]
    record_property(
        "detail",
        f"exit {result.returncode}; searched {sum(1 for p in tmp_path.rglob('*') if p.is_file())}"
        " files and both output streams: no secret",
    )


def test_redaction_helper_covers_config_errors_and_stats(record_property):
    """#12: The one helper on its own: userinfo and secret query values (`api_key`, `token`, `sig`, `password`) become
    `***`, other parameters stay; `LLMConfig.public_dict` (what stats.json holds) and a bad-scheme ConfigError
    show only the redacted URL."""
    cases = {
        "https://bob:sk-1@api.example.com/v1": "https://***@api.example.com/v1",
        "https://api.example.com/v1?api_key=abc&model=x": "https://api.example.com/v1?api_key=***&model=x",
        "http://h/v1?token=t1&sig=s2&Password=p3": "http://h/v1?token=***&sig=***&Password=***",
        "see https://u@h/x and http://k:v@h2/y?auth=z.": "see https://***@h/x and http://***@h2/y?auth=***",
        "http://127.0.0.1:8000/v1": "http://127.0.0.1:8000/v1",
    }
    for raw, expected in cases.items():
        assert redact_text(raw) == expected, (raw, redact_text(raw))
    public = LLMConfig(base_urls=(f"https://bob:{USER_SECRET}@api.example.com/v1?key={QUERY_SECRET}",)).public_dict()
    assert public["base_urls"] == ["https://***@api.example.com/v1?key=***"], public
    with pytest.raises(ConfigError) as caught:
        LLMConfig(base_urls=(f"ftp://bob:{USER_SECRET}@h/v1",))
    assert USER_SECRET not in str(caught.value) and redact_url(f"ftp://bob:{USER_SECRET}@h/v1") in str(caught.value)
    record_property("tried", len(cases) + 2)
