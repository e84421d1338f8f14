"""One run at a time per run folder: a lock file that says who holds it, reclaimed when its holder is dead.

Two ``datagen run`` processes on the same run folder would both send every request (paying twice) and race
on the same output files. The lock is ``<out_dir>/.<name>.lock``, beside the run folder rather than inside it
(so an empty run folder stays empty). It is held with ``flock``, which the kernel releases when the holder dies
however it dies (SIGKILL, power loss of a container), so a stale lock never needs a human: the next run takes
it and says whose it was. The file's content (pid, host, start time, command) is only for the message that
names the holder.

    with run_lock(Path("outputs/demo")):
        ...  # a second process here gets UserError("... is in use by pid 4242 on host-a since ...")
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datagen.errors import UserError
from datagen.redaction import redact_text

log = logging.getLogger("datagen.run")


class RunLocked(UserError):
    """Another live process holds the run folder's lock (exit code 2: wait for it, or pick another name)."""


def lock_path(run_dir: Path) -> Path:
    """Where the lock of ``run_dir`` lives: a hidden file beside it."""
    return run_dir.parent / f".{run_dir.name}.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold the lock of ``run_dir`` for the block; raise ``RunLocked`` naming the holder if a live process has it."""
    path = lock_path(Path(run_dir))
    handle = _acquire(path, run_dir)
    try:
        yield path
    finally:
        # Unlink while still holding the lock: a process that opened the old file finds it gone (inode check).
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()


def _acquire(path: Path, run_dir: Path) -> Any:
    for _ in range(20):  # only a lock released and re-taken between our open and our flock loops here
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            handle.close()
            raise RunLocked(
                f"{run_dir} is in use by another run: {_describe(holder)}; wait for it to finish "
                f"(or stop it), or give this run another name. Lock file: {path}"
            ) from None
        except OSError as exc:  # a file system without flock: say so rather than run unprotected in silence
            handle.close()
            raise UserError(f"{path}: cannot lock the run folder ({exc.strerror or exc})") from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder removed it after we opened it: take the new one
            handle.close()
            continue
        previous = _read_holder(handle)
        if previous:
            log.warning("%s: reclaimed a stale lock left by %s (that process is gone)", run_dir, _describe(previous))
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": redact_text(" ".join(sys.argv))[:500],
                }
            )
            + "\n"
        )
        handle.flush()
        return handle
    raise RunLocked(f"{run_dir}: the lock file {path} keeps changing hands; is another run starting right now?")


def _read_holder(handle: Any) -> dict[str, Any]:
    try:
        handle.seek(0)
        holder = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that left no details"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}" + (
        f" ({holder['command']})" if holder.get("command") else ""
    )
