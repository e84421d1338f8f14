"""Which process this is, and the few collectives training needs, the same under torchrun, accelerate or alone.

    if is_main_process(): write_json(...)        # one set of output files, whatever the world size
    barrier()                                   # the others wait until it is written
    total, count = all_reduce_sums([nll, tokens])   # token-weighted metrics over every rank

``torchrun`` and ``accelerate launch`` both set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment;
``init()`` joins the process group through accelerate's ``PartialState`` (gloo on CPU, NCCL on CUDA), the
same object ``TrainingArguments`` joins later, so the group is made once. Run alone, every function here
is a no-op on one process: rank 0 of 1.

>>> world_size(), is_main_process()
(1, True)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def world_size() -> int:
    """Processes in this job (1 when not launched by torchrun / accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 when alone)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Whether this process writes files and prints: global rank 0."""
    return rank() == 0


def init(cpu: bool) -> None:
    """Join the process group (when launched on several processes); a no-op when alone or already joined."""
    if world_size() <= 1:
        return
    from accelerate import PartialState

    PartialState(cpu=cpu)


def _group() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for when alone)."""
    if _group():
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sums(values: Sequence[float], device: Any = "cpu") -> list[float]:
    """Sums of ``values`` over every rank, in float64 (the order of two additions is all that differs by world size).

    >>> all_reduce_sums([1.5, 2])
    [1.5, 2.0]
    """
    if not _group():
        return [float(v) for v in values]
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def shard_batches(n_rows: int, batch_size: int, ranks: int, this_rank: int) -> list[range | None]:
    """The eval batches this rank computes: batch i of the whole set goes to rank i % ranks.

    Every rank gets the same number of entries (None: run a forward on nothing to train, so sharded models'
    collectives stay in step), and batch i holds the same rows at any world size, so summed per-token losses
    do not depend on how many processes share them.

    >>> shard_batches(5, 2, 2, 0), shard_batches(5, 2, 2, 1)
    ([range(0, 2), range(4, 5)], [range(2, 4), None])
    """
    starts = list(range(0, n_rows, batch_size))
    mine: list[range | None] = [range(s, min(s + batch_size, n_rows)) for s in starts[this_rank::ranks]]
    per_rank = -(-len(starts) // ranks) if starts else 0
    return mine + [None] * (per_rank - len(mine))
