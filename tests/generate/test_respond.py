"""`datagen respond` end to end over real HTTP: outputs, rejects, resume after SIGKILL without paying twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from click.testing import CliRunner

from datagen.cli import cli
from datagen.llm.cache import ResponseCache, cache_key
from datagen.llm.client import SamplingParams
from datagen.records import Example, read_examples, write_jsonl
from tests.conftest import PLANTED_API_KEY
from tests.plugins.faults import MODEL_ID

ARGS = ["--model", MODEL_ID, "--max-retries", "3"]


def make_inputs(path, n):
    write_jsonl(path, [Example(instruction=f"Question number {i}?", output="") for i in range(n)])


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_respond_answers_in_input_order_and_rejects_with_reasons(fault_server, tmp_path):
    make_inputs(tmp_path / "in.jsonl", 12)
    fault_server.plan.script = {"Question number 3?": ["500"] * 10, "Question number 5?": ["length"]}
    result = invoke(
        "respond",
        "--in",
        tmp_path / "in.jsonl",
        "--out",
        tmp_path / "out",
        "--base-url",
        fault_server.url,
        *ARGS,
        "--timeout",
        "5",
    )
    assert result.exit_code == 0, result.output
    kept = read_examples(tmp_path / "out" / "responses.jsonl")
    rejects = read_examples(tmp_path / "out" / "rejects.jsonl")
    assert [e.instruction for e in kept] == [f"Question number {i}?" for i in range(12) if i not in (3, 5)]
    assert all(e.output.endswith(f"to: {e.instruction}") and e.meta["model"] == MODEL_ID for e in kept)
    assert {e.instruction: e.reject["reason"] for e in rejects} == {
        "Question number 3?": "server_error",
        "Question number 5?": "truncated",
    }
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["kept"] == 10 and stats["rejected"] == 2
    assert stats["rejects_by_reason"] == {"server_error": 1, "truncated": 1}
    assert stats["llm"]["failures"][0]["reason"] == "server_error" and stats["llm"]["failures"][0]["attempts"] == 4

    # a second run with the same arguments asks only for the one that failed (the endpoint has recovered)
    fault_server.log.clear()
    fault_server.plan.script = {}
    again = invoke(
        "respond", "--in", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--base-url", fault_server.url, *ARGS
    )
    assert again.exit_code == 0, again.output
    assert [e["text"] for e in fault_server.log] == ["Question number 3?"]
    assert len(read_examples(tmp_path / "out" / "responses.jsonl")) == 11
    assert [e.reject["reason"] for e in read_examples(tmp_path / "out" / "rejects.jsonl")] == ["truncated"]


def test_bad_input_writes_nothing(tmp_path, fault_server):
    (tmp_path / "in.jsonl").write_text('{"instruction": "ok", "output": ""}\n{"instruction": 1}\n')
    result = invoke(
        "respond", "--in", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--base-url", fault_server.url, *ARGS
    )
    assert result.exit_code == 2 and f"{tmp_path / 'in.jsonl'}:2:" in result.output
    assert not (tmp_path / "out").exists() and fault_server.log == []


def test_killed_run_resumes_without_repeating_cached_calls(fault_server, tmp_path, monkeypatch):
    """SIGKILL `datagen respond` half-way; the restart asks the server nothing it had already answered+cached."""
    n = 60
    make_inputs(tmp_path / "in.jsonl", n)
    fault_server.plan.latency = 0.05
    env = {**os.environ, "DATAGEN_HOME": str(tmp_path / "home"), "DATAGEN_API_KEY": PLANTED_API_KEY}
    cmd = [
        sys.executable,
        "-m",
        "datagen",
        "respond",
        "--in",
        str(tmp_path / "in.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--base-url",
        fault_server.url,
        *ARGS,
        "--concurrency",
        "4",
    ]
    partial = tmp_path / "out" / ".state" / "responses.jsonl"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if partial.exists() and partial.read_bytes().count(b"\n") >= n // 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "responses.jsonl").exists()  # no final output from a killed run

    cache = ResponseCache(tmp_path / "home" / "llm_cache.sqlite")
    cached_keys = cache.keys()
    cache.close()
    params = SamplingParams(max_tokens=512).to_request(0)
    key_of = {
        f"Question number {i}?": cache_key(
            "chat", MODEL_ID, [{"role": "user", "content": f"Question number {i}?"}], params, 0
        )
        for i in range(n)
    }
    cached_texts = {t for t, k in key_of.items() if k in cached_keys}
    assert n // 2 <= len(cached_texts) < n
    before = len(fault_server.log)

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    asked_after = [e["text"] for e in fault_server.log[before:]]
    assert not set(asked_after) & cached_texts
    assert len(asked_after) == n - len(cached_texts)
    kept = read_examples(tmp_path / "out" / "responses.jsonl")
    assert [e.instruction for e in kept] == list(key_of)  # all of them, once each, in input order
    for path in [
        tmp_path / "out" / "responses.jsonl",
        tmp_path / "out" / "stats.json",
        partial,
        tmp_path / "home" / "llm_cache.sqlite",
    ]:
        assert PLANTED_API_KEY.encode() not in path.read_bytes()
    assert PLANTED_API_KEY not in done.stdout + done.stderr
