"""Issue 18, items 10 and 13: a hostile endpoint answer, or a broken answer cache, never ends a run with a crash.

10. An answer whose content holds a lone surrogate (``"\\ud800"``: valid JSON, but no UTF-8 file or SQLite row
    can store it) or whose ``usage`` block has the wrong shape is a bad answer: counted (``bad_response``),
    retried, and given up on with a reason after the retry budget; the run goes on (it used to exit 1).
13. A corrupt or read-only answer cache is an error naming the file, what is wrong and how to go on
    (``--no-cache``, or move it aside), exit 2, before the first paid request; the file is left byte for byte
    as it was, so the answers it holds are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from datagen.cli import cli
from datagen.errors import LLMBadResponse
from datagen.llm.cache import ResponseCache
from datagen.llm.client import LLMClient, LLMConfig
from tests.plugins.faults import HOSTILE_ANSWERS, MODEL_ID
from tests.reliability._support import SEEDS, responder


def _client(url: str, tmp: Path, **overrides) -> LLMClient:
    return LLMClient(
        LLMConfig(
            base_urls=(url,),
            model=MODEL_ID,
            cache_path=tmp / "cache.sqlite",
            backoff_base=0.01,
            backoff_max=0.02,
            **overrides,
        )
    )


def test_lone_surrogate_and_malformed_usage_are_retried_bad_answers(fault_server, tmp_path, record_property):
    """#10: A request answered first with a lone surrogate, then with `usage: {"prompt_tokens": "many"}`, then well:
    two `bad_response` retries, the good answer returned and cached. A request that always gets a surrogate:
    LLMBadResponse naming the surrogate after the retry budget (a reason, not a UnicodeEncodeError), counted in
    the ledger, and nothing unstorable in the cache."""
    fault_server.plan.script = {
        "flaky": ["surrogate", "bad_usage", "ok"],
        "hostile": ["surrogate"] * 10,
        "usage": ["bad_usage"] * 10,
    }

    async def go():
        async with _client(fault_server.url, tmp_path, max_retries=3) as llm:
            good = await llm.chat([{"role": "user", "content": "flaky"}])
            failures = []
            for text in ("hostile", "usage"):
                try:
                    await llm.chat([{"role": "user", "content": text}])
                except LLMBadResponse as exc:
                    failures.append(exc)
            return good, failures, llm.ledger, len(llm.cache)

    good, failures, ledger, cached = asyncio.run(go())
    assert good.attempts == 3 and "\ud800" not in good.text and good.text.startswith("answer["), good
    assert [f.reason for f in failures] == ["bad_response", "bad_response"], failures
    assert "surrogate" in str(failures[0]) and "usage" in str(failures[1]), failures
    assert all(f.attempts == 4 for f in failures)
    assert ledger.errors["bad_response"] == 2 + 4 + 4 and ledger.failed == 2 and ledger.succeeded == 1, ledger
    assert cached == 1
    record_property(
        "tried",
        fault_server.requests_for("flaky") + fault_server.requests_for("hostile") + fault_server.requests_for("usage"),
    )
    record_property("detail", f"errors {dict(ledger.errors)}; failed {ledger.failed}; {failures[0]}"[:200])


def test_run_against_an_endpoint_sending_hostile_answers_finishes(fault_server, tmp_path, record_property):
    """#10: `datagen run` (Self-Instruct) against an endpoint where 30% of attempts answer with a lone surrogate or a
    malformed `usage` block: exit 0, every record valid UTF-8 without U+D800, the bad answers counted as
    `bad_response` retries in the manifest."""
    fault_server.responder = responder()
    fault_server.plan.rate = 0.3
    fault_server.plan.kinds = HOSTILE_ANSWERS
    config = {
        "name": "r",
        "out_dir": str(tmp_path / "out"),
        "endpoint": {
            "base_url": fault_server.url,
            "model": MODEL_ID,
            "cache_path": str(tmp_path / "c.sqlite"),
            "backoff_base": 0.01,
            "backoff_max": 0.02,
            "max_retries": 8,
        },
        "self_instruct": {"seeds": SEEDS, "num_instructions": 4, "batch_size": 2, "classifier_eval_seeds": 2},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "run.yaml")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    run_dir = tmp_path / "out" / "r"
    records = (run_dir / "self_instruct" / "records.jsonl").read_bytes().decode("utf-8")
    assert records and "\\ud800" not in records and "\ud800" not in records
    llm = json.loads((run_dir / "manifest.json").read_text())["stages"]["self_instruct"]["llm"]
    assert llm["retries"] > 0, llm
    outcomes = [e["outcome"] for e in fault_server.log]
    assert {"surrogate", "bad_usage"} <= set(outcomes), outcomes
    record_property("tried", len(outcomes))
    record_property(
        "detail",
        f"{outcomes.count('surrogate')} surrogate + {outcomes.count('bad_usage')} bad-usage "
        f"answers of {len(outcomes)}; {llm['retries']} retries, exit 0",
    )


def _make_cache(path: Path) -> None:
    cache = ResponseCache(path)
    cache.put(
        "k1",
        MODEL_ID,
        {
            "text": "kept answer",
            "finish_reason": "stop",
            "model": MODEL_ID,
            "prompt_tokens": 1,
            "completion_tokens": 2,
        },
    )
    cache.close()


@contextlib.contextmanager
def _immutable(path: Path):
    """Make ``path`` unwritable even for root (the suite runs as root, which ignores permission bits)."""
    if (
        shutil.which("chattr") is None
        or subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False).returncode
    ):
        pytest.skip("chattr +i is not available here: cannot make a file read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "read-only"])
def test_corrupt_or_read_only_cache_names_the_file_and_the_way_on(damage, fault_server, tmp_path, record_property):
    """#13: The answer cache replaced by random bytes, cut to half its size, or made read-only (`chattr +i`):
    `datagen respond` exits 2 with the file's path, what is wrong, `--no-cache` and "move it aside"; no
    request is paid for; the file is unchanged (the answers it holds are still there); `--no-cache` runs."""
    cache = tmp_path / "cache.sqlite"
    _make_cache(cache)
    for suffix in ("-wal", "-shm"):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        cache.write_bytes(bytes(range(256)) * 64)
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    before = cache.read_bytes()
    (tmp_path / "p.jsonl").write_text('{"instruction": "Name a prime.", "output": ""}\n')
    args = [
        "respond",
        "--in",
        str(tmp_path / "p.jsonl"),
        "--out",
        str(tmp_path / "out"),
        "--base-url",
        fault_server.url,
        "--model",
        MODEL_ID,
        "--cache-path",
        str(cache),
    ]
    with _immutable(cache) if damage == "read-only" else contextlib.nullcontext():
        result = CliRunner().invoke(cli, args)
    output = result.output
    assert result.exit_code == 2, output + repr(result.exception)
    assert "Traceback" not in output and "internal error" not in output, output
    assert str(cache) in output and "--no-cache" in output and "move the file aside" in output, output
    assert ("corrupt" if damage != "read-only" else "cannot be opened for writing") in output, output
    assert fault_server.log == [], "a request was paid for before the cache failed"
    assert cache.read_bytes() == before, "the cache file was changed"
    if damage == "read-only":
        assert ResponseCache(cache).get("k1")["text"] == "kept answer"
    result = CliRunner().invoke(cli, [*args[:-2], "--no-cache"])
    assert result.exit_code == 0, result.output
    record_property("detail", output.strip().splitlines()[-1].replace(f"{tmp_path}/", "")[:200])
