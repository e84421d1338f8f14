"""One rank of ``train.nproc: N``: ``launch.py`` (which ``sft.train`` calls) starts N of these, which call it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from datagen.errors import DatagenError
from datagen.train.config import load_train_config
from datagen.train.distributed import is_main_process
from datagen.train.sft import train


def _child(argv: list[str]) -> int:
    """One rank of a launch: ``DATA OUT CONFIG DEBUG_LABELS``; a user error prints once (rank 0) and exits 2."""
    logging.basicConfig(level=logging.INFO if is_main_process() else logging.ERROR, format="%(message)s")
    data, out, config, debug_labels = argv
    try:
        train(data, out, load_train_config(Path(config)), debug_labels=int(debug_labels), echo=click.echo)
    except DatagenError as exc:
        if is_main_process():
            click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
