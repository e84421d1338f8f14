"""Crash/resume: SIGKILL `datagen run` at twelve points in generation, filter and training; resume each time.

One run folder is killed again and again, each `--resume` picking up what the killed one left. The kills must
land in their phase whatever the machine's load (issue 18 follow-up: a timed trigger plus a random delay let a
busy machine run past the Self-Instruct points, 8 kills of the 10 needed), so the run is frozen where it is to
die before the SIGKILL:
- in generation, the fault server holds the k-th request the process sends (k spreads the kills over the
  requests still to come) until the kill: the process is waiting inside its generation step;
- at a stage boundary, the child (a thin wrapper around the CLI) stops right after it writes the stage's log
  line (``filter: running``) to stderr;
- inside training (checkpoints, the adapter) the kill follows the file's appearance: training is the slow
  phase, and those two are beyond the ten kills required.
After every kill the final files must be whole (state logs may end in a torn line: the writer cuts it off on
reopen); after every resumed run that got past a stage, that stage's output must equal an uninterrupted run's;
at the end every line of every .jsonl parses and the adapter exists.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from datagen.cli import cli
from tests.reliability._support import (
    KG,
    SEEDS,
    assert_no_torn_jsonl,
    responder,
    subprocess_env,
    write_config,
)

STAGES = ("self_instruct", "self_kg", "filter", "train")
COMPARED = (
    "self_instruct/records.jsonl",
    "self_instruct/rejects.jsonl",
    "self_kg/records.jsonl",
    "self_kg/rejects.jsonl",
    "filter/curated.jsonl",
    "filter/rejects.jsonl",
)
MAX_STEPS = 4


@dataclass
class Point:
    """Kill in ``stage`` at one of: the ``hold``-th request the process sends (generation), the first stderr
    line matching ``pause_at`` (a stage boundary), or ``trigger(run_dir, process, armed)`` + ``delay`` s."""

    name: str
    stage: str
    hold: int | None = None
    pause_at: str | None = None
    trigger: object = None
    delay: float = 0.0


#: The child: datagen's CLI with stderr watched; on the first whole line matching the pattern in $PAUSE_AT (a
#: file, so the test can arm it while the run goes on) it creates $PAUSED_FLAG and sleeps inside that write: the
#: process is frozen right after announcing the line.
_CHILD = r"""
import os, re, sys, time
pattern_file, flag = os.environ["PAUSE_AT"], os.environ["PAUSED_FLAG"]

class Watched:
    def __init__(self, stream):
        self.stream, self.line = stream, ""

    def write(self, text):
        written = self.stream.write(text)
        *whole, self.line = (self.line + text).split("\n")
        if whole and os.path.exists(pattern_file):
            pattern = open(pattern_file).read()
            if pattern and any(re.fullmatch(pattern, line) for line in whole):
                self.stream.flush()
                open(flag, "w").close()
                while True:
                    time.sleep(60)
        return written

    def __getattr__(self, name):
        return getattr(self.stream, name)

sys.stderr = Watched(sys.stderr)
sys.argv = ["datagen", *sys.argv[1:]]
from datagen.cli import main
main()
"""


class Gate:
    """The fault server's responder, able to hold requests: once ``hold_from`` requests have come in (counted
    over the whole test), each further one waits until ``release()``, so the sending process is stopped inside
    its generation step until it is killed."""

    def __init__(self, respond):
        self.respond = respond
        self.count = 0
        self.hold_from: int | None = None
        self.held = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, kind, body):
        with self._lock:  # one lock with release(): a request of a killed process cannot mark the next one held
            self.count += 1
            hold = self.hold_from is not None and self.count >= self.hold_from
            if hold:
                self.held.set()
            release = self._release
        if hold:
            release.wait(120)
        return self.respond(kind, body)

    def arm(self, k: int) -> None:
        with self._lock:
            self.hold_from = self.count + k

    def release(self) -> None:
        with self._lock:
            self.hold_from = None
            self._release.set()
            self._release, self.held = threading.Event(), threading.Event()


class Process:
    """A `datagen run` child in its own process group, its stderr lines collected with arrival times."""

    def __init__(self, args, env, cwd, pause_file: Path, flag: Path):
        flag.unlink(missing_ok=True)
        self.flag = flag
        env = {**env, "PAUSE_AT": str(pause_file), "PAUSED_FLAG": str(flag)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, *map(str, args)],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.t0 = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in iter(self.proc.stderr.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def started(self, stage):
        return any(line == f"{stage}: running" for line in list(self.lines))

    def skipped(self, stage):
        return any(line == f"{stage}: done already, skipped" for line in list(self.lines))

    def paused(self):
        return self.flag.exists()

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's group only
        self.proc.wait(timeout=30)
        self.reader.join(timeout=5)

    def finish(self, timeout):
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return self.proc.returncode


def _state_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _checkpoints(run_dir: Path) -> list[int]:
    folder = run_dir / "train" / "checkpoints"
    return (
        sorted(
            int(m.group(1)) for p in folder.glob("checkpoint-*") if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
        )
        if folder.is_dir()
        else []
    )


def kill_points(rng: random.Random) -> list[Point]:
    """Twelve kill points in pipeline order. The request numbers of the generation points are filled in when
    each is armed (``hold=0``: spread over the requests still to come); the first holds the very first request."""
    return [
        Point("startup / first request", "self_instruct", hold=1),
        *(Point(f"self-instruct request {k}", "self_instruct", hold=0) for k in range(2, 6)),
        Point("self-kg", "self_kg", pause_at="self_kg: running"),
        Point("filter", "filter", pause_at="filter: running"),
        Point("filter", "filter", pause_at="filter: running"),
        Point("train: loading", "train", pause_at="train: running"),
        Point(
            "train: steps/checkpoints",
            "train",
            trigger=lambda d, p, s: p.started("train") and max(_checkpoints(d), default=0) > s["ckpt"],
            delay=rng.uniform(0, 0.15),
        ),
        Point(
            "train: after the last step",
            "train",
            trigger=lambda d, p, s: (d / "train" / "adapter").exists() or (d / "train" / ".done.json").exists(),
            delay=rng.uniform(0, 0.3),
        ),
        Point("manifest/report", "report", pause_at=r"train: done.*"),  # train's summary line, or "skipped"
    ]


def _hold_at(point: Point, pending: list[Point], total: int, sent: int) -> int:
    """The request (counted from now) to hold: the requests a whole run sends, less those sent so far, shared
    evenly among the generation points left, so each kill lands deeper in generation."""
    if point.hold:
        return point.hold
    left = sum(1 for p in pending if p.hold is not None)
    return max(1, (total - sent) // (left + 1))


def _reached(point: Point, proc: Process, gate: Gate, run_dir: Path, armed: dict) -> bool:
    """Wait until the process is frozen at ``point`` (or its trigger fired); False once it cannot get there."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.proc.poll() is None:
        if point.hold is not None and gate.held.is_set():
            return True
        if point.pause_at is not None and proc.paused():
            return True
        if point.trigger is not None and point.trigger(run_dir, proc, armed):
            time.sleep(point.delay)
            return proc.proc.poll() is None
        if _void(point, proc):
            return False
        time.sleep(0.005)
    return False


def _void(point: Point, proc: Process) -> bool:
    """The point can no longer be reached in this process: its stage was skipped or a later one started."""
    if point.stage == "report":
        return False
    later = STAGES[STAGES.index(point.stage) + 1 :]
    return proc.skipped(point.stage) or any(proc.started(s) for s in later)


def _phase(run_dir: Path) -> str:
    for stage in STAGES:
        if not (run_dir / stage / ".done.json").exists():
            return stage
    return "report"


def _incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders a kill interrupted: Trainer writes trainer_state.json last."""
    return [
        folder
        for folder in (run_dir / "train" / "checkpoints").glob("checkpoint-*")
        if not (folder / "trainer_state.json").is_file()
    ]


def _check_after_kill(run_dir: Path) -> int:
    """Final files whole; state logs whole but for at most a torn last line. Returns the torn tails seen."""
    torn = 0
    for path in run_dir.rglob("*.jsonl"):
        data = path.read_bytes()
        lines = data.split(b"\n")
        if ".state" in path.parts and not data.endswith(b"\n") and data:
            torn += 1
            lines = lines[:-1]
        elif data:
            assert data.endswith(b"\n"), f"{path}: torn final file"
        for number, raw in enumerate(lines, 1):
            if raw.strip():
                json.loads(raw)  # raises with the path in the traceback
    return torn


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_result(
    fault_server, tiny_model_dir, tmp_path, record_property
):
    """SIGKILL `datagen run` (self-instruct + self-kg template + filter + train on the tiny model) at 12 points
    (10 of them frozen in place first, so they land under any load) and resume each time: every resumed run's
    outputs equal an uninterrupted run's, no .jsonl line is ever torn in a final file, the adapter exists."""
    gate = Gate(responder())
    fault_server.responder = gate
    fault_server.plan.latency = 0.03  # a little time per answer, so several requests are in flight at a kill
    sections = dict(
        self_instruct={"seeds": SEEDS, "num_instructions": 8, "batch_size": 2, "classifier_eval_seeds": 4},
        self_kg={"graph": KG, "num": 24, "mode": "template"},
        filter={"embed_dedup": False},
    )
    train = {
        "base": str(tiny_model_dir),
        "max_steps": MAX_STEPS,
        "save_steps": 1,
        "per_device_train_batch_size": 2,
        "max_seq_len": 64,
        "eval_fraction": 0.0,
        "logging_steps": 1,
    }

    # The uninterrupted run, in-process. Training is left out: the compared outputs do not depend on it.
    reference = write_config(
        tmp_path / "ref.yaml", tmp_path / "ref", fault_server.url, tmp_path / "ref.sqlite", **sections
    )
    done = CliRunner().invoke(cli, ["run", str(reference)])
    assert done.exit_code == 0, done.output
    expected = {name: (tmp_path / "ref" / "r" / name).read_bytes() for name in COMPARED}
    assert expected["filter/curated.jsonl"].count(b"\n") >= 20
    total_requests, counted_from = gate.count, gate.count  # what one whole run sends (its own cache is empty)
    assert total_requests >= 10

    config = write_config(
        tmp_path / "run.yaml", tmp_path / "out", fault_server.url, tmp_path / "cache.sqlite", train=train, **sections
    )
    run_dir = tmp_path / "out" / "r"
    # One thread per BLAS pool: with 2 busy cores, torch's default 2 threads make each step ~7x slower.
    env = subprocess_env(tmp_path / "home", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pending = kill_points(random.Random(1729))
    pause_file = tmp_path / "pause-at"

    def arm(point: Point | None) -> None:
        gate.release()
        pause_file.write_text((point.pause_at or "") if point else "")
        if point is not None and point.hold is not None:
            gate.arm(_hold_at(point, pending, total_requests, gate.count - counted_from))

    kills, missed, torn_tails, compared_after, broken_checkpoints = [], [], 0, 0, 0
    first = True
    started = time.monotonic()
    proc = None
    try:
        while True:
            args = ["run", config] + ([] if first else ["--resume"])
            first = False
            armed = {"ckpt": max(_checkpoints(run_dir), default=0)}
            arm(pending[0] if pending else None)
            proc = Process(args, env, tmp_path, pause_file, tmp_path / "paused")
            killed = None
            while pending and killed is None:
                point = pending[0]
                if not _reached(point, proc, gate, run_dir, armed):
                    missed.append(pending.pop(0).name)
                    arm(pending[0] if pending else None)
                    if proc.proc.poll() is not None:
                        break
                    continue
                phase = _phase(run_dir)
                proc.kill()
                gate.release()
                print(f"kill {len(kills) + 1} at {point.name!r} in {phase} after {time.monotonic() - proc.t0:.1f} s")
                killed = pending.pop(0)
                kills.append((killed.name, phase))
            if killed is None:
                code = proc.finish(timeout=240)
                assert code == 0, "\n".join(proc.lines[-30:])
                if not pending:
                    break
                continue  # points missed by a run that then finished: resume for the rest
            torn_tails += _check_after_kill(run_dir)
            # A kill during a Trainer checkpoint save leaves checkpoint-N half-written; the resume must skip it.
            broken_checkpoints += bool(_incomplete_checkpoints(run_dir))
            for name in COMPARED:  # every output the killed run had finished equals the uninterrupted run's
                stage = name.split("/")[0]
                if (run_dir / stage / ".done.json").exists():
                    assert (run_dir / name).read_bytes() == expected[name], f"{name} differs after kill {len(kills)}"
                    compared_after += name == "filter/curated.jsonl"
            assert len(kills) < 30
    finally:
        gate.release()
        if proc is not None and proc.proc.poll() is None:  # a failed assertion must not leave a child behind
            proc.kill()

    print(
        "kills:",
        kills,
        "missed:",
        missed,
        "broken checkpoints:",
        broken_checkpoints,
        f"{time.monotonic() - started:.0f} s",
    )
    assert len(kills) >= 10, (kills, missed)
    frozen = [name for name, phase in kills if not name.startswith("train: ") or name == "train: loading"]
    assert len(frozen) == 10, (kills, missed)  # every frozen point was reached, whatever the load
    phases = {phase for _, phase in kills}
    assert {"self_instruct", "self_kg", "filter", "train", "report"} <= phases, kills
    for name in COMPARED:
        assert (run_dir / name).read_bytes() == expected[name], name
    adapter = run_dir / "train" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    summary = json.loads((run_dir / "train" / "train_summary.json").read_text())
    assert summary["global_step"] == MAX_STEPS
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["complete"] and (run_dir / "report.html").is_file()
    lines = assert_no_torn_jsonl(run_dir)
    by_phase = {p: sum(1 for _, q in kills if q == p) for p in (*STAGES, "report")}
    record_property("tried", len(kills))
    record_property(
        "detail",
        f"{len(kills)} kills ({', '.join(f'{p} {n}' for p, n in by_phase.items() if n)}), "
        f"{len(missed)} points passed before they fired; {torn_tails} torn state-log tails "
        f"repaired; {broken_checkpoints} kill(s) left an incomplete checkpoint "
        f"(skipped on resume); curated compared after {compared_after} resumed runs; {lines} lines "
        f"parsed at the end; {time.monotonic() - started:.0f} s",
    )


def test_resume_after_a_kill_during_a_checkpoint_save(tiny_model_dir, tmp_path, monkeypatch, record_property):
    """A kill while Trainer writes checkpoint-N leaves checkpoint-N without trainer_state.json (seen in the SIGKILL
    test above); the next run must resume from the last complete checkpoint instead of failing on it for ever."""
    from datagen.records import Example, write_jsonl
    from datagen.train.config import load_train_config
    from datagen.train.sft import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "data.jsonl"
    write_jsonl(
        data,
        [
            Example(instruction=f"Name fact number {i} about rivers.", output=f"Rivers carry water {i}.")
            for i in range(12)
        ],
    )
    cfg = load_train_config(
        None,
        ["max_steps=2", "save_steps=1", "per_device_train_batch_size=2", "max_seq_len=48", "eval_fraction=0"],
        {"base": str(tiny_model_dir)},
    )
    out = tmp_path / "sft"
    train(data, out, cfg, echo=lambda *_: None)
    # What SIGKILL left behind: the newest checkpoint without its trainer state, and no adapter yet.
    (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").unlink()
    shutil.rmtree(out / "adapter")
    record_property("tried", 1)
    summary = train(data, out, cfg, echo=lambda *_: None)
    assert summary["global_step"] == 2 and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert summary["resumed_from"].endswith("checkpoint-1")
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()  # saved again, whole
