"""Progress bars for anything longer than a few seconds (tqdm on stderr, silent when not a terminal)."""

from __future__ import annotations

import logging
import sys
from typing import Any


def progress(total: int | None, desc: str, initial: int = 0) -> Any:
    """A tqdm bar on stderr; disabled when stderr is not a terminal or logging is quieted with -q."""
    from tqdm.auto import tqdm

    quiet = logging.getLogger("datagen").getEffectiveLevel() > logging.INFO
    return tqdm(total=total, desc=desc, initial=initial, unit="it", dynamic_ncols=True, leave=False,
                disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
