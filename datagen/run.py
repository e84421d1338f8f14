"""``datagen run CONFIG.yaml``: every stage in order, each skipped when already done, then manifest and report.

Run it:  datagen run configs/seeds-to-sft.yaml --resume

A plain loop over stages, no framework. The whole config is validated before any work starts (an unknown
key or a wrong type is an error naming it). Each stage writes into ``outputs/<run>/<stage>/`` and, when it
finishes, a ``.done.json`` holding a fingerprint of its config and inputs plus hashes of its outputs. A
stage whose fingerprint and outputs are unchanged is skipped; any other stage runs, and resumes from its own
``.state`` logs and the LLM cache. The embedded model server is started only if a stage that needs an LLM
actually has to run, so a finished run re-run with ``--resume`` starts nothing and calls nothing.

``manifest.json`` (config with secrets redacted, versions, git commit, per stage inputs/outputs with hashes
and counts, rejects by reason, LLM calls and tokens, wall time) is rewritten after every stage, and marked
``complete`` at the end; ``report.html`` is written last.
"""

from __future__ import annotations

import asyncio
import dataclasses
import glob
import hashlib
import itertools
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen.config import (
    apply_overrides,
    build,
    check_keys,
    check_plain,
    load_yaml,
    redact,
    to_plain,
)
from datagen.errors import ConfigError, UserError
from datagen.llm.client import LLMConfig
from datagen.records import make_dirs, write_atomic, write_json
from datagen.runlock import run_lock
from datagen.stages import STAGE, STAGES, Stage

log = logging.getLogger("datagen.run")

TOP_KEYS = ("name", "out_dir", "endpoint", "prices", *(stage.name for stage in STAGES))
VERSIONED_PACKAGES = (
    "datagen",
    "openai",
    "torch",
    "transformers",
    "peft",
    "sentence-transformers",
    "faiss-cpu",
    "rapidfuzz",
    "networkx",
    "datasets",
    "bitsandbytes",
    "accelerate",
)


def _call(stage: Stage, *args: Any) -> dict[str, Any]:
    result = stage.load("run")(*args)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


def _generated(run_dir: Path) -> dict[str, Path]:
    return {
        s.name: run_dir / s.name / "records.jsonl"
        for s in STAGES
        if s.generator and (run_dir / s.name / "records.jsonl").exists()
    }


def _training_data(run_dir: Path) -> dict[str, Path]:
    curated = run_dir / "filter" / "curated.jsonl"
    return {"data": curated} if curated.exists() else _generated(run_dir)


def _training_file(run_dir: Path, folder: Path) -> Path | None:
    """What train (or eval without a held-out split) reads: the curated set, else every generator's records
    (joined in stage order into ``folder/generated.jsonl`` when there are several); None without either."""
    data = _training_data(run_dir)
    if len(data) <= 1:
        return next(iter(data.values()), None)
    blocks = [path.read_bytes() for path in data.values()]
    write_atomic(folder / "generated.jsonl", b"".join(b if b.endswith(b"\n") or not b else b + b"\n" for b in blocks))
    return folder / "generated.jsonl"


def _train(cfg: Any, run_dir: Path) -> dict[str, Any]:
    data = _training_file(run_dir, make_dirs(run_dir / "train"))
    if data is None:
        raise ConfigError("train: no data; enable the filter stage or a generator before it")
    summary = _call(STAGE["train"], data, run_dir / "train", cfg)
    return {**summary, "kept": summary.get("train_records"), "rejected": summary.get("dropped_rows")}


def _eval(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Score base vs tuned on the split the trainer held out (or, without one, the training data)."""
    held_out = run_dir / "train" / "eval.jsonl"
    data = (
        held_out
        if held_out.exists() and held_out.stat().st_size
        else _training_file(run_dir, make_dirs(run_dir / "eval"))
    )
    if data is None:
        raise ConfigError("eval: no data; enable train (its held-out split) or a generator before it")
    adapter = run_dir / "train" / "adapter"
    if adapter.exists():
        cfg = dataclasses.replace(cfg, adapter=adapter)
    return _call(STAGE["eval"], data, run_dir / "eval", cfg)


def _filter(cfg: Any, run_dir: Path) -> dict[str, Any]:
    inputs = tuple(_generated(run_dir).values())
    if not inputs:
        raise ConfigError("filter: no generated records; enable at least one generator")
    return _call(STAGE["filter"], dataclasses.replace(cfg, inputs=inputs))


#: How the runner drives the stages that read other stages' files (the generators: ``run(cfg)``): the call,
#: which earlier files it reads (they are part of its fingerprint), and the config fields the runner sets.
_DRIVE: dict[str, tuple[Callable[..., dict[str, Any]], Callable[[Path], dict[str, Path]], tuple[str, ...]]] = {
    "filter": (_filter, _generated, ("out",)),
    "train": (_train, _training_data, ()),
    "eval": (
        _eval,
        lambda d: {"adapter": d / "train" / "adapter", "held_out": d / "train" / "eval.jsonl"},
        ("adapter",),
    ),
}


def _fixed(stage: Stage, run_dir: Path) -> dict[str, Any]:
    """Config fields the runner decides: a generator's (and the filter's) ``out`` folder, eval's adapter."""
    names = _DRIVE[stage.name][2] if stage.name in _DRIVE else ("out",)
    return {name: run_dir / stage.name if name == "out" else None for name in names}


@dataclass
class Plan:
    """A validated run: its folder, endpoint and the configured stages in order."""

    name: str
    run_dir: Path
    llm: LLMConfig
    raw: dict[str, Any]
    stages: list[tuple[Stage, Any]]


def load_plan(path: str | Path, overrides: tuple[str, ...] = ()) -> Plan:
    """Read and validate the whole config (every section) before anything runs."""
    raw = apply_overrides(load_yaml(path), overrides)
    where = str(path)
    check_plain(raw, where)
    check_keys(raw, TOP_KEYS, where)
    name = raw.get("name") or Path(path).stem
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}: name must be letters, digits, '-' or '_', got {name!r}")
    if not isinstance(raw.get("out_dir") or "", str):
        raise ConfigError(f"{where}: out_dir must be a folder path, got {raw['out_dir']!r}")
    run_dir = Path(raw.get("out_dir") or "outputs") / name
    endpoint = raw.get("endpoint") or {}
    if isinstance(endpoint, str):
        endpoint = {"base_urls": [endpoint]}
    if isinstance(endpoint, dict) and "base_url" in endpoint:  # the singular spelling reads better in YAML
        endpoint = dict(endpoint)
        endpoint["base_urls"] = endpoint.pop("base_url")
    if raw.get("prices") is not None and isinstance(endpoint, dict):  # the cost ledger's price table
        endpoint = {**endpoint, "prices": raw["prices"]}
    llm = build(LLMConfig, endpoint, f"{where}: endpoint")
    stages = []
    for spec in STAGES:
        section = raw.get(spec.name)
        if section is None or (isinstance(section, dict) and section.get("enabled") is False):
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: {spec.name} must be a mapping of settings (or enabled: false)")
        section = {k: v for k, v in section.items() if k != "enabled"}
        cls = spec.load("config")
        fixed = _fixed(spec, run_dir)
        if "llm" in {f.name for f in dataclasses.fields(cls)}:
            fixed["llm"] = llm
        stages.append((spec, build(cls, section, f"{where}: {spec.name}", **fixed)))
    if not stages:
        raise ConfigError(f"{where}: no stage is configured; add at least one of {', '.join(s.name for s in STAGES)}")
    _check_inputs(run_dir, stages, where)
    return Plan(name=name, run_dir=run_dir, llm=llm, raw=raw, stages=stages)


# ---------------------------------------------------------------------------------------------- hashing


def hash_path(path: Path) -> str | None:
    """sha256 of a file, or of a folder's files (names and contents, sorted); None if absent."""
    path = Path(path)
    if not path.exists():
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and ".state" not in p.parts)
    for file in files:
        digest.update(os.fsencode(file.relative_to(path) if file != path else file.name))  # any bytes a name holds
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _count_lines(path: Path) -> int | None:
    if path.suffix != ".jsonl" or not path.exists():
        return None
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def stage_inputs(cfg: Any) -> dict[str, str | None]:
    """Hashes of every input path in a stage config (outputs and caches excluded)."""
    inputs = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(values):
            if f.name == "out" or not isinstance(item, (str, Path)) or not item or len(str(item)) > 4096:
                continue
            if glob.has_magic(str(item)) and (isinstance(item, Path) or f.name == "docs"):
                # a glob's inputs are the files it matches now, not its text (a prompt's "?" is no glob)
                inputs[f"{f.name}[{i}]" if len(values) > 1 else f.name] = hash_glob(str(item))
            elif isinstance(item, Path) or _exists(item):  # a str field naming a file is an input too
                inputs[f"{f.name}[{i}]" if len(values) > 1 else f.name] = hash_path(Path(item))
    return inputs


def all_inputs(spec: Stage, cfg: Any, run_dir: Path) -> dict[str, str | None]:
    """Hashes of a stage's inputs: paths in its config plus the files of earlier stages it reads."""
    reads = _DRIVE[spec.name][1](run_dir) if spec.name in _DRIVE else {}
    return {**stage_inputs(cfg), **{name: hash_path(path) for name, path in reads.items()}}


def fingerprint(spec: Stage, cfg: Any, run_dir: Path) -> str:
    """What decides a stage's result: its config (minus where the endpoint lives) and its inputs' contents."""
    plain = to_plain(cfg)
    if "llm" in plain:
        plain["llm"] = {"model": plain["llm"].get("model")}  # the URL (a fresh port each run) is not content
    blob = json.dumps(
        {"stage": spec.name, "config": plain, "inputs": all_inputs(spec, cfg, run_dir)}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _done_marker(run_dir: Path, spec: Stage) -> Path:
    return run_dir / spec.name / ".done.json"


def finished(run_dir: Path, spec: Stage, print_: str) -> dict[str, Any] | None:
    """The done marker of ``spec`` when the stage is finished with fingerprint ``print_`` and its outputs are
    unchanged, else None (the stage runs)."""
    marker = _done_marker(run_dir, spec)
    if not marker.exists():
        return None
    try:
        done = json.loads(marker.read_text())
    except ValueError:
        return None
    if done.get("fingerprint") != print_:
        return None
    if (done.get("manifest") or {}).get("llm_failures"):
        # Requests that failed for good are not a result: a resumed run asks them again (the stage's own
        # state replays everything else, so this costs only the missing calls).
        log.info(
            "%s: %d request(s) failed for good last time; running it again",
            spec.name,
            len(done["manifest"]["llm_failures"]),
        )
        return None
    unchanged = all(hash_path(run_dir / spec.name / name) == h for name, h in done.get("outputs", {}).items())
    return done if unchanged else None


# ---------------------------------------------------------------------------------------------- running


def run_pipeline(config_path: str | Path, overrides: tuple[str, ...] = (), resume: bool = False) -> dict[str, Any]:
    """Run every configured stage; returns the manifest (also written to ``<run>/manifest.json``)."""
    started = time.monotonic()
    plan = load_plan(config_path, overrides)
    run_dir = plan.run_dir
    created = next((p for p in reversed((run_dir, *run_dir.parents)) if not p.exists()), None)
    make_dirs(run_dir.parent)
    try:
        with run_lock(run_dir):  # a second run on this folder is refused, naming the holder; a dead one's is reclaimed
            if run_dir.exists() and any(run_dir.iterdir()) and not resume:
                raise ConfigError(
                    f"{run_dir} already holds a run: pass --resume to continue it (finished stages "
                    "are skipped), or choose another name"
                )
            make_dirs(run_dir)
            return _run_stages(plan, config_path, overrides, started)
    except UserError:
        # A bad input found by a stage leaves no empty run folder behind (which would demand --resume).
        if created is not None and not any(p.is_file() for p in created.rglob("*")):
            shutil.rmtree(created, ignore_errors=True)
        raise


def _run_stages(plan: Plan, config_path: str | Path, overrides: tuple[str, ...], started: float) -> dict[str, Any]:
    run_dir = plan.run_dir
    manifest: dict[str, Any] = {
        "name": plan.name,
        "complete": False,
        "config": redact(plan.raw),
        "config_file": str(config_path),
        "overrides": list(overrides),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "stages": {},
    }
    with ExitStack() as stack:
        live_llm: LLMConfig | None = None  # the endpoint, started (the embedded server if asked for) when first needed
        last_llm = max((i for i, (spec, cfg) in enumerate(plan.stages) if spec.uses_llm(cfg)), default=-1)
        for index, (spec, cfg) in enumerate(plan.stages):
            if live_llm is not None and index > last_llm:
                stack.close()  # no later stage calls the LLM: free the embedded server's core and memory now
                live_llm = None
            print_ = fingerprint(spec, cfg, run_dir)
            previous = finished(run_dir, spec, print_)
            if previous is not None:
                log.info("%s: done already, skipped", spec.name)
                manifest["stages"][spec.name] = {**previous.get("manifest", {}), "skipped": True}
                continue
            log.info("%s: running", spec.name)
            stage_started = time.monotonic()
            if hasattr(cfg, "llm") and spec.uses_llm(cfg):
                if live_llm is None:
                    from datagen.llm.endpoint import endpoint

                    live_llm = stack.enter_context(endpoint(plan.llm))
                cfg = dataclasses.replace(cfg, llm=live_llm)
            stats = _DRIVE[spec.name][0](cfg, run_dir) if spec.name in _DRIVE else _call(spec, cfg)
            entry = _stage_manifest(run_dir, spec, cfg, stats, time.monotonic() - stage_started)
            write_json(
                _done_marker(run_dir, spec),
                {
                    "fingerprint": print_,
                    "manifest": entry,
                    "outputs": {n: o["sha256"] for n, o in entry["outputs"].items()},
                },
            )
            manifest["stages"][spec.name] = entry
            write_json(run_dir / "manifest.json", manifest)
            from datagen.progress import stage_line  # the line that says what the stage did, even with 0 records

            log.info("%s", stage_line(spec.name, entry, run_dir / spec.name, stats))
    manifest["complete"] = True
    manifest["seconds"] = round(time.monotonic() - started, 3)
    write_json(run_dir / "manifest.json", manifest)
    from datagen.report import write_report

    write_report(run_dir)
    return manifest


def _stage_manifest(run_dir: Path, spec: Stage, cfg: Any, stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    folder = run_dir / spec.name
    outputs = {
        name: {"sha256": hash_path(folder / name), "records": _count_lines(folder / name)} for name in spec.outputs
    }
    llm = stats.get("llm") or {}
    return {
        "inputs": all_inputs(spec, cfg, run_dir),
        "outputs": outputs,
        "kept": stats.get("kept"),
        "rejected": stats.get("rejected"),
        "rejects_by_reason": stats.get("rejects_by_reason", {}),
        "llm": {
            k: llm.get(k)
            for k in (
                "requests",
                "succeeded",
                "cached",
                "failed",
                "retries",
                "prompt_tokens",
                "completion_tokens",
                "batch_requests",
                "batch_succeeded",
                "batch_failed",
                "batch_prompt_tokens",
                "batch_completion_tokens",
                "batches",
                "cost_usd",
                "batch_cost_usd",
            )
        }
        if llm
        else None,
        "llm_failures": llm.get("failures", []),
        "seconds": round(seconds, 3),
        "stats_file": str(folder / spec.stats) if (folder / spec.stats).exists() else None,
    }


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent.parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


# ---------------------------------------------------------------------------------------------- inputs (issue 18)


def hash_glob(pattern: str) -> str:
    """sha256 over what a glob matches now: each match's path, size and content hash, in sorted order, so adding,
    removing or editing a matched document changes a stage's fingerprint (``--resume`` then re-runs it)."""
    digest = hashlib.sha256()
    for match in sorted(glob.glob(os.path.expanduser(pattern), recursive=True)):
        path = Path(match)
        size = path.stat().st_size if path.is_file() else 0
        digest.update(os.fsencode(match) + b"\0" + str(size).encode() + b"\0" + (hash_path(path) or "").encode())
    return digest.hexdigest()


def _check_inputs(run_dir: Path, stages: list[tuple[Stage, Any]], where: str) -> None:
    """Refuse a missing input path (a glob is matched by the stage itself), and a run folder inside a folder (or
    glob) a stage reads: the run would read its own report, records and state as input documents, and every
    resume would see different inputs. Refused rather than silently excluded: which files a run reads should be
    what its config says."""
    target = run_dir.expanduser().resolve()
    for spec, cfg in stages:
        for name in spec.reads:
            value = getattr(cfg, name, None)
            if value is None or str(value) == "embedded":
                continue  # the embedded model needs no path
            root = Path(str(value)).expanduser()
            if glob.has_magic(str(value)):
                root = Path(*[p for p in itertools.takewhile(lambda p: not glob.has_magic(p), root.parts)] or ["."])
            elif not root.exists():
                raise ConfigError(f"{where}: {spec.name}.{name}: no such file or folder: {value}")
            elif not root.is_dir():
                continue
            if target.is_relative_to(root.resolve()):
                raise ConfigError(
                    f"{where}: out_dir puts the run folder {run_dir} inside {spec.name}.{name} "
                    f"({value}): the run would read its own outputs as input; choose an out_dir "
                    "outside it"
                )


def _exists(text: str) -> bool:
    """Whether a string names an existing path; text no path can be (a NUL byte, too long) is simply not one."""
    try:
        return Path(text).exists()
    except (OSError, ValueError):
        return False
