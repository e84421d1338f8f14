"""Crash/resume: SIGKILL `datagen run` at seeded random points in generation, filter and training; resume each time.

One run folder is killed again and again, each `--resume` picking up what the killed one left: a kill point
is a trigger (the process logs ``<stage>: running``, a state log grows, a checkpoint folder appears) plus a
seeded random delay. After every kill the final files must be whole (state logs may end in a torn line: the
writer cuts it off on reopen); after every resumed run that got past a stage, that stage's output must equal
an uninterrupted run's; at the end every line of every .jsonl parses and the adapter exists.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from datagen.cli import cli
from tests.reliability._support import (
    KG,
    SEEDS,
    assert_no_torn_jsonl,
    datagen_cmd,
    responder,
    subprocess_env,
    write_config,
)

STAGES = ("self_instruct", "self_kg", "filter", "train")
COMPARED = ("self_instruct/records.jsonl", "self_instruct/rejects.jsonl", "self_kg/records.jsonl",
            "self_kg/rejects.jsonl", "filter/curated.jsonl", "filter/rejects.jsonl")
MAX_STEPS = 4


@dataclass
class Point:
    """Kill when ``trigger(run_dir, events)`` holds, after ``delay`` seconds; void once ``stage`` is behind us."""

    name: str
    stage: str
    trigger: object
    delay: float


class Process:
    """A `datagen run` child in its own process group, its stderr lines collected with arrival times."""

    def __init__(self, args, env, cwd):
        self.proc = subprocess.Popen(datagen_cmd(*args), env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
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
    return sorted(int(m.group(1)) for p in folder.glob("checkpoint-*") if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))) \
        if folder.is_dir() else []


def kill_points(rng: random.Random) -> list[Point]:
    """Twelve seeded kill points in pipeline order (each relative to what the run folder holds when it is armed)."""
    si = lambda d: d / "self_instruct" / ".state"  # noqa: E731
    points = [
        Point("startup / self-instruct", "self_instruct", lambda d, p, s: True, rng.uniform(0.3, 1.2)),
        Point("self-instruct bootstrap", "self_instruct",
              lambda d, p, s: p.started("self_instruct") and _state_lines(si(d) / "bootstrap.jsonl") > s["boot"],
              rng.uniform(0, 0.05)),
        Point("self-instruct bootstrap", "self_instruct",
              lambda d, p, s: p.started("self_instruct") and _state_lines(si(d) / "bootstrap.jsonl") > s["boot"],
              rng.uniform(0, 0.05)),
        Point("self-instruct classify", "self_instruct",
              lambda d, p, s: _state_lines(si(d) / "classify.jsonl") > s["clf"], rng.uniform(0, 0.03)),
        Point("self-instruct instances", "self_instruct",
              lambda d, p, s: _state_lines(si(d) / "instances.jsonl") > s["inst"], rng.uniform(0, 0.03)),
        Point("self-kg", "self_kg", lambda d, p, s: p.started("self_kg"), rng.uniform(0, 0.1)),
        Point("filter", "filter", lambda d, p, s: p.started("filter"), rng.uniform(0, 0.03)),
        Point("filter", "filter", lambda d, p, s: p.started("filter"), rng.uniform(0, 0.03)),
        Point("train: loading", "train", lambda d, p, s: p.started("train"), rng.uniform(0.5, 4.0)),
        Point("train: steps/checkpoints", "train",
              lambda d, p, s: p.started("train") and max(_checkpoints(d), default=0) > s["ckpt"],
              rng.uniform(0, 0.15)),
        Point("train: after the last step", "train",
              lambda d, p, s: (d / "train" / "adapter").exists() or (d / "train" / ".done.json").exists(),
              rng.uniform(0, 0.3)),
        Point("manifest/report", "report", lambda d, p, s: (d / "train" / ".done.json").exists()
              and (p.skipped("train") or p.started("train")), rng.uniform(0, 0.4)),
    ]
    return points


def _void(point: Point, proc: Process) -> bool:
    """The point can no longer be reached in this process: its stage was skipped or a later one started."""
    if point.stage == "report":
        return False
    later = STAGES[STAGES.index(point.stage) + 1:]
    return proc.skipped(point.stage) or any(proc.started(s) for s in later)


def _phase(run_dir: Path) -> str:
    for stage in STAGES:
        if not (run_dir / stage / ".done.json").exists():
            return stage
    return "report"


def _incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders a kill interrupted: Trainer writes trainer_state.json last."""
    return [folder for folder in (run_dir / "train" / "checkpoints").glob("checkpoint-*")
            if not (folder / "trainer_state.json").is_file()]


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


@pytest.mark.xfail(strict=False, reason="known bug: in full-suite runs on 2026-12-06 the kills landed at 8 of the 10 "
                                        "phases the test needs (the Self-Instruct steps were missed); passes alone")
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_result(fault_server, tiny_model_dir, tmp_path,
                                                                            record_property):
    """SIGKILL `datagen run` (self-instruct + self-kg template + filter + train on the tiny model) at ≥ 10
    seeded random points and resume each time: every resumed run's outputs equal an uninterrupted run's, no
    .jsonl line is ever torn in a final file, the adapter exists at the end."""
    fault_server.responder = responder()
    fault_server.plan.latency = 0.03  # a little time per answer, so kills land inside generation
    sections = dict(
        self_instruct={"seeds": SEEDS, "num_instructions": 8, "batch_size": 2, "classifier_eval_seeds": 4},
        self_kg={"graph": KG, "num": 24, "mode": "template"},
        filter={"embed_dedup": False},
    )
    train = {"base": str(tiny_model_dir), "max_steps": MAX_STEPS, "save_steps": 1, "per_device_train_batch_size": 2,
             "max_seq_len": 64, "eval_fraction": 0.0, "logging_steps": 1}

    # The uninterrupted run, in-process. Training is left out: the compared outputs do not depend on it.
    reference = write_config(tmp_path / "ref.yaml", tmp_path / "ref", fault_server.url, tmp_path / "ref.sqlite",
                             **sections)
    done = CliRunner().invoke(cli, ["run", str(reference)])
    assert done.exit_code == 0, done.output
    expected = {name: (tmp_path / "ref" / "r" / name).read_bytes() for name in COMPARED}
    assert expected["filter/curated.jsonl"].count(b"\n") >= 20

    config = write_config(tmp_path / "run.yaml", tmp_path / "out", fault_server.url, tmp_path / "cache.sqlite",
                          train=train, **sections)
    run_dir = tmp_path / "out" / "r"
    # One thread per BLAS pool: with 2 busy cores, torch's default 2 threads make each step ~7x slower.
    env = subprocess_env(tmp_path / "home", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    pending = kill_points(random.Random(1729))
    kills, missed, torn_tails, compared_after, broken_checkpoints = [], [], 0, 0, 0
    first = True
    started = time.monotonic()
    proc = None
    try:
        while True:
            args = ["run", config] + ([] if first else ["--resume"])
            first = False
            armed = {"boot": _state_lines(run_dir / "self_instruct/.state/bootstrap.jsonl"),
                     "clf": _state_lines(run_dir / "self_instruct/.state/classify.jsonl"),
                     "inst": _state_lines(run_dir / "self_instruct/.state/instances.jsonl"),
                     "ckpt": max(_checkpoints(run_dir), default=0)}
            proc = Process(args, env, tmp_path)
            killed = None
            while pending and killed is None:
                point = pending[0]
                deadline = time.monotonic() + 120
                overtaken = False
                while time.monotonic() < deadline and proc.proc.poll() is None and not _void(point, proc) \
                        and not point.trigger(run_dir, proc, armed):
                    if len(pending) > 1 and pending[1].trigger(run_dir, proc, armed):
                        overtaken = True  # the run is already past this point: the next one is due
                        break
                    time.sleep(0.003)
                if proc.proc.poll() is not None:
                    break
                if overtaken or _void(point, proc) or time.monotonic() >= deadline:
                    missed.append(pending.pop(0).name)
                    continue
                time.sleep(point.delay)
                if proc.proc.poll() is not None:
                    missed.append(pending.pop(0).name)
                    break
                phase = _phase(run_dir)
                proc.kill()
                print(f"kill {len(kills) + 1} at {point.name!r} in {phase} after {time.monotonic() - proc.t0:.1f} s")
                killed = pending.pop(0)
                kills.append((killed.name, phase))
            if killed is None:
                code = proc.finish(timeout=240)
                assert code == 0, "\n".join(proc.lines[-30:])
                break
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
        if proc is not None and proc.proc.poll() is None:  # a failed assertion must not leave a child behind
            proc.kill()

    print("kills:", kills, "missed:", missed, "broken checkpoints:", broken_checkpoints,
          f"{time.monotonic() - started:.0f} s")
    assert len(kills) >= 10, (kills, missed)
    phases = {phase for _, phase in kills}
    assert {"self_instruct", "train"} <= phases and phases & {"self_kg", "filter"}, kills
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
    record_property("detail", f"{len(kills)} kills ({', '.join(f'{p} {n}' for p, n in by_phase.items() if n)}), "
                              f"{len(missed)} points passed before they fired; {torn_tails} torn state-log tails "
                              f"repaired; {broken_checkpoints} kill(s) left an incomplete checkpoint "
                              f"(skipped on resume); curated compared after {compared_after} resumed runs; {lines} lines "
                              f"parsed at the end; {time.monotonic() - started:.0f} s")


def test_resume_after_a_kill_during_a_checkpoint_save(tiny_model_dir, tmp_path, monkeypatch, record_property):
    """A kill while Trainer writes checkpoint-N leaves checkpoint-N without trainer_state.json (seen in the SIGKILL
    test above); the next run must resume from the last complete checkpoint instead of failing on it for ever."""
    from datagen.records import Example, write_jsonl
    from datagen.train.config import load_train_config
    from datagen.train.sft import train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "data.jsonl"
    write_jsonl(data, [Example(instruction=f"Name fact number {i} about rivers.", output=f"Rivers carry water {i}.")
                       for i in range(12)])
    cfg = load_train_config(None, ["max_steps=2", "save_steps=1", "per_device_train_batch_size=2", "max_seq_len=48",
                                   "eval_fraction=0"], {"base": str(tiny_model_dir)})
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
