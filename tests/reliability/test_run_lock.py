"""Issue 18, item 5: one run at a time per run folder.

A second ``datagen run`` on a run folder that a live process holds is refused (exit 2) with a message naming
the holder (pid, host, start time) and sends no request; a lock left by a process that died (SIGKILL) is
reclaimed by the next run, which says whose it was; a finished run leaves no lock file behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml
from click.testing import CliRunner

from datagen.cli import cli
from datagen.runlock import lock_path
from tests.plugins.faults import MODEL_ID
from tests.reliability._support import REPO, SEEDS, responder

_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from datagen.runlock import run_lock
    with run_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(60)
""")


def _config(tmp: Path, url: str) -> Path:
    config = {
        "name": "r",
        "out_dir": str(tmp / "out"),
        "endpoint": {"base_url": url, "model": MODEL_ID, "cache_path": str(tmp / "cache.sqlite"), "max_retries": 0},
        "self_instruct": {"seeds": SEEDS, "num_instructions": 2, "batch_size": 1, "classifier_eval_seeds": 1},
    }
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _holder(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_on_a_locked_run_folder_is_refused_naming_the_holder(tmp_path, fault_server, record_property):
    """#5: While another process holds the run folder, `datagen run` (with and without `--resume`) exits 2 naming
    that process's pid, host and start time, and sends no request; once it is gone the same command runs."""
    fault_server.responder = responder()
    config = _config(tmp_path, fault_server.url)
    run_dir = tmp_path / "out" / "r"
    run_dir.parent.mkdir(parents=True)
    holder = _holder(run_dir)
    try:
        for extra in ([], ["--resume"]):
            result = CliRunner().invoke(cli, ["run", str(config), *extra])
            assert result.exit_code == 2, result.output
            assert f"pid {holder.pid}" in result.output and socket.gethostname() in result.output, result.output
            assert "started 20" in result.output and "in use by another run" in result.output, result.output
        assert fault_server.log == []
        assert not run_dir.exists() or not any(run_dir.iterdir())
    finally:
        holder.kill()
        holder.wait()
    result = CliRunner().invoke(cli, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert "reclaimed a stale lock" in result.output and f"pid {holder.pid}" in result.output, result.output
    assert not lock_path(run_dir).exists(), "a finished run left its lock file"
    record_property("detail", "refused: pid/host/start named; after SIGKILL of the holder: reclaimed, exit 0")


def test_stale_lock_file_from_a_dead_process_is_reclaimed(tmp_path, fault_server):
    """#5: A lock file naming a pid that no longer runs (left by a killed run, no process holds it): the next
    `datagen run --resume` takes it over with a warning naming the old holder and finishes."""
    fault_server.responder = responder()
    config = _config(tmp_path, fault_server.url)
    run_dir = tmp_path / "out" / "r"
    run_dir.parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(run_dir).write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    )
    result = CliRunner().invoke(cli, ["run", str(config), "--resume"])
    assert result.exit_code == 0, result.output
    assert f"reclaimed a stale lock left by pid {dead.pid}" in result.output, result.output
    assert not lock_path(run_dir).exists()
