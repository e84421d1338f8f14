"""``train.nproc: N``: run ``datagen train`` on N processes through torchrun, from one process that waits.

    datagen train --data curated.jsonl --out sft/ nproc=2         # 2 processes (gloo on CPU, NCCL on CUDA)
    # configs/seeds-to-sft.yaml:  train: {nproc: 2}               # the same from `datagen run`

The children are ``python -m torch.distributed.run --standalone --nproc_per_node N -m datagen.train.launch``
with the resolved config (what ``torchrun ... datagen train`` does, minus the summary line: the parent
prints that once); ``train()`` in each of them sees ``WORLD_SIZE`` and does not relaunch. Rank 0 writes
the outputs, and the parent returns its ``train_summary.json``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from datagen.errors import DatagenError
from datagen.records import write_json
from datagen.train.config import TrainConfig

log = logging.getLogger("datagen.train")


def torchrun_command(data: str | Path, out: Path, config: Path, nproc: int, debug_labels: int = 0) -> list[str]:
    """The command line that trains on ``nproc`` local processes.

    >>> torchrun_command("d.jsonl", Path("o"), Path("o/c.json"), 2)[1:8]
    ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m', 'datagen.train']
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "datagen.train",
        str(data),
        str(out),
        str(config),
        str(debug_labels),
    ]


def launch(data: str | Path, out: str | Path, cfg: TrainConfig, debug_labels: int = 0) -> dict[str, Any]:
    """Train under torchrun on ``cfg.nproc`` processes; returns rank 0's ``train_summary.json``."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = out / ".launch_config.json"
    write_json(config, cfg.to_dict())
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:  # share the cores rather than oversubscribe them N times
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // cfg.nproc))
    command = torchrun_command(data, out, config, cfg.nproc, debug_labels)
    log.info("training on %d processes: %s", cfg.nproc, " ".join(command[1:]))
    try:
        code = subprocess.call(command, env=env)
    finally:
        config.unlink(missing_ok=True)
    if code != 0:
        raise DatagenError(
            f"training on {cfg.nproc} processes failed (torchrun exit code {code}); its ranks' errors are above"
        )
    return json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
