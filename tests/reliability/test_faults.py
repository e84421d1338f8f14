"""Endpoint faults: `datagen run` (self-instruct + self-qa) against the fault-injecting server.

Every fault kind the server has is used, slow answers included. ``length`` is left out of the 30% mix on
purpose: a truncated answer is data, not a fault (the record it would have made is rightly rejected as
``truncated``), so it cannot leave the records unchanged; tests/llm/test_client.py covers it. Streaming is not
tested because the client never streams (``stream`` is never sent; answers are read whole and validated).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from tests.plugins.faults import ALL_FAULTS
from tests.reliability._support import REPO, SEEDS, responder, write_config

FAULTS = (*ALL_FAULTS, "slow")
# The reason the client gives a request that failed for good, by the fault its last attempt got.
REASON = {
    "429": "rate_limited",
    "429_plain": "rate_limited",
    "500": "server_error",
    "502": "server_error",
    "503": "server_error",
    "reset": "connection",
    "stall": "timeout",
    "malformed": "bad_response",
    "empty_choices": "bad_response",
}
GENERATED = (
    "self_instruct/records.jsonl",
    "self_instruct/rejects.jsonl",
    "self_qa/records.jsonl",
    "self_qa/rejects.jsonl",
)


def sections(**endpoint):
    return dict(
        endpoint=endpoint or None,
        self_instruct={"seeds": SEEDS, "num_instructions": 12, "batch_size": 3, "classifier_eval_seeds": 4},
        self_qa={"docs": str(REPO / "seeds" / "docs"), "max_chunks": 10, "questions_per_chunk": 2},
    )


def run(config, *args):
    return CliRunner().invoke(cli, ["run", str(config), *args])


def outputs(run_dir):
    return {name: (run_dir / name).read_bytes() for name in GENERATED}


def requests_by_body(log):
    """Server log entries grouped per distinct request (the whole body: prompt, params, sample seed)."""
    groups = defaultdict(list)
    for entry in log:
        groups[json.dumps(entry["body"], sort_keys=True)].append(entry["outcome"])
    return groups


@pytest.fixture
def clean_reference(fault_server, tmp_path):
    """The fault-free run every faulty run is compared with; the server log is cleared afterwards."""
    fault_server.responder = responder()
    config = write_config(
        tmp_path / "clean.yaml", tmp_path / "clean", fault_server.url, tmp_path / "clean.sqlite", **sections()
    )
    result = run(config)
    assert result.exit_code == 0, result.output
    reference = outputs(tmp_path / "clean" / "r")
    assert reference["self_instruct/records.jsonl"] and reference["self_qa/records.jsonl"]
    calls = len(requests_by_body(fault_server.log))
    assert calls == len(fault_server.log)  # no request is sent twice without faults
    texts = list(dict.fromkeys(entry["text"] for entry in fault_server.log))
    fault_server.log.clear()
    fault_server.attempts.clear()
    return reference, calls, texts


def every_kind_at_least_once(plan, texts):
    """Script the first attempt of one request per fault kind, so each kind surely fires; the rest is random."""
    plan.script = {text: [kind] for text, kind in zip(texts[1::3], FAULTS)}
    assert len(plan.script) == len(FAULTS)


def test_thirty_percent_faults_lose_and_duplicate_nothing(fault_server, clean_reference, tmp_path, record_property):
    """30% of attempts get a fault (429 ± Retry-After, 500/502/503, reset, stall, malformed, empty choices,
    slow): same records as the fault-free run, every request answered exactly once, attempts ≤ 1 + max_retries."""
    reference, clean_calls, texts = clean_reference
    fault_server.plan.rate = 0.3
    fault_server.plan.kinds = FAULTS
    every_kind_at_least_once(fault_server.plan, texts)
    fault_server.plan.stall_seconds = 2.5
    fault_server.plan.slow_seconds = 0.3
    fault_server.plan.retry_after = "0"
    max_retries = 6
    config = write_config(
        tmp_path / "faulty.yaml",
        tmp_path / "faulty",
        fault_server.url,
        tmp_path / "f.sqlite",
        **sections(timeout=2.0, max_retries=max_retries),
    )
    started = time.monotonic()
    result = run(config)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "faulty" / "r"
    assert outputs(run_dir) == reference  # zero lost, zero duplicated, nothing different

    groups = requests_by_body(fault_server.log)
    outcomes = Counter(o for attempts in groups.values() for o in attempts)
    assert set(FAULTS) <= set(outcomes), f"some fault kinds never fired: {outcomes}"
    assert len(groups) == clean_calls  # the same requests as the clean run, no extra
    for attempts in groups.values():
        assert len(attempts) <= max_retries + 1, attempts  # the retry bound holds per request
        assert sum(o in ("ok", "slow") for o in attempts) == 1, attempts  # answered once, never twice
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"]
    for stage in ("self_instruct", "self_qa"):
        entry = manifest["stages"][stage]
        assert entry["llm_failures"] == [] and entry["llm"]["failed"] == 0
        assert entry["llm"]["retries"] > 0
    faults = sum(n for kind, n in outcomes.items() if kind not in ("ok",))
    record_property("tried", len(fault_server.log))
    record_property(
        "detail",
        f"{len(groups)} requests, {len(fault_server.log)} attempts, {faults} faults "
        f"({', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()) if k != 'ok')}); "
        f"max attempts per request {max(map(len, groups.values()))} ≤ {max_retries + 1}; "
        f"{time.monotonic() - started:.1f} s",
    )


def test_permanent_failures_are_listed_in_the_manifest_and_resume_asks_them_again(
    fault_server, clean_reference, tmp_path, record_property
):
    """With max_retries=1 some requests fail for good: each one is in manifest.json stages.*.llm_failures with
    the reason of its last fault; `--resume` on a healthy endpoint asks Self-QA's again (same records as clean)."""
    reference, _, _ = clean_reference
    fault_server.plan.rate = 0.3
    fault_server.plan.kinds = FAULTS
    fault_server.plan.stall_seconds = 2.5
    fault_server.plan.retry_after = "0"
    config = write_config(
        tmp_path / "flaky.yaml",
        tmp_path / "flaky",
        fault_server.url,
        tmp_path / "f.sqlite",
        **sections(timeout=2.0, max_retries=1),
    )
    result = run(config)
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "flaky" / "r"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    listed = [f for stage in manifest["stages"].values() for f in stage["llm_failures"]]

    groups = requests_by_body(fault_server.log)
    failed = [attempts for attempts in groups.values() if not any(o in ("ok", "slow") for o in attempts)]
    assert failed, "30% faults with one retry should fail some requests for good"
    assert all(len(attempts) == 2 for attempts in failed)  # 1 + max_retries attempts, then it gave up
    assert Counter(f["reason"] for f in listed) == Counter(REASON[attempts[-1]] for attempts in failed)
    assert all(f["attempts"] == 2 and f["message"] for f in listed)
    for stage in ("self_instruct", "self_qa"):
        entry = manifest["stages"][stage]
        assert entry["llm"]["failed"] == len(entry["llm_failures"])
        records = [json.loads(line) for line in (run_dir / stage / "records.jsonl").read_text().splitlines()]
        assert len({r["id"] for r in records}) == len(records)  # no duplicates even when requests fail
        llm_rejects = [
            json.loads(line)
            for line in (run_dir / stage / "rejects.jsonl").read_text().splitlines()
            if json.loads(line)["reject"]["reason"].removeprefix("llm_") in REASON.values()
        ]
        assert llm_rejects or not entry["llm_failures"]  # a failure is a reject with its reason, not a gap
    qa_clean = {json.loads(line)["id"] for line in reference["self_qa/records.jsonl"].decode().splitlines()}
    qa_flaky = {json.loads(line)["id"] for line in (run_dir / "self_qa/records.jsonl").read_text().splitlines()}
    assert qa_flaky <= qa_clean  # what was kept is right; only some is missing

    fault_server.plan.rate = 0.0
    before = len(fault_server.log)
    resumed = run(config, "--resume")
    assert resumed.exit_code == 0, resumed.output
    asked_again = len(fault_server.log) - before
    assert 0 < asked_again
    assert (run_dir / "self_qa/records.jsonl").read_bytes() == reference["self_qa/records.jsonl"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["self_qa"]["llm_failures"] == []
    record_property("tried", len(groups))
    record_property(
        "detail",
        f"{len(failed)} of {len(groups)} requests failed for good, all {len(listed)} listed "
        f"with reasons {dict(Counter(f['reason'] for f in listed))}; resume asked "
        f"{asked_again} again",
    )


def test_circuit_breaker_stops_the_run_and_resume_finishes_it(
    fault_server, clean_reference, tmp_path, record_property
):
    """The endpoint goes down mid-run for longer than endpoint.circuit_breaker: exit 1 with a message that says
    to re-run with --resume; `--resume` on the recovered endpoint ends with the fault-free run's records."""
    reference, clean_calls, _ = clean_reference
    base = responder()
    answered = {"n": 0}

    def going_down(kind, body):
        answered["n"] += 1
        if answered["n"] >= clean_calls // 3:  # a third of the way through, the endpoint dies
            fault_server.plan.down = True
        return base(kind, body)

    fault_server.responder = going_down
    # The breaker must open before a single request exhausts its retries (retry budget ≈ 40 × 25 ms > 0.5 s),
    # or requests fail for good one by one first (see docs/RELIABILITY.md, "circuit breaker vs retry budget").
    config = write_config(
        tmp_path / "down.yaml",
        tmp_path / "down",
        fault_server.url,
        tmp_path / "d.sqlite",
        **sections(circuit_breaker=0.5, max_retries=40),
    )
    started = time.monotonic()
    result = run(config)
    stopped_after = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "failed continuously" in result.output and "re-run with --resume" in result.output
    assert "Traceback" not in result.output
    assert stopped_after < 30
    run_dir = tmp_path / "down" / "r"
    manifest_path = run_dir / "manifest.json"
    assert not manifest_path.exists() or not json.loads(manifest_path.read_text())["complete"]

    fault_server.plan.down = False
    fault_server.responder = base
    resumed = run(config, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert outputs(run_dir) == reference
    record_property("tried", 1)
    record_property(
        "detail",
        f"endpoint down after {answered['n']} answers; stopped in {stopped_after:.1f} s with "
        "exit 1; resume matched the clean run",
    )


def test_an_outage_longer_than_the_retry_budget_but_shorter_than_the_breaker_is_recovered_by_resume(
    fault_server, clean_reference, tmp_path, record_property
):
    """The endpoint goes down; requests exhaust their retries before the circuit breaker opens (its window is
    longer than the retry budget, as with the defaults); `--resume` on the recovered endpoint asks those requests
    again and ends with the fault-free records of both stages."""
    reference, clean_calls, _ = clean_reference
    base = responder()
    answered = {"n": 0}

    def going_down(kind, body):
        answered["n"] += 1
        if answered["n"] >= clean_calls // 3:
            fault_server.plan.down = True
        return base(kind, body)

    fault_server.responder = going_down
    config = write_config(
        tmp_path / "down.yaml",
        tmp_path / "down",
        fault_server.url,
        tmp_path / "d.sqlite",
        **sections(circuit_breaker=1.0, max_retries=1),
    )
    result = run(config)  # every request fails within the window, so the run may even "finish" (exit 0)
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    fault_server.plan.down = False
    fault_server.responder = base
    resumed = run(config, "--resume")
    assert resumed.exit_code == 0, resumed.output
    record_property("tried", 1)
    after = outputs(tmp_path / "down" / "r")
    assert after["self_qa/records.jsonl"] == reference["self_qa/records.jsonl"]  # Self-QA asks failures again
    assert after == reference
