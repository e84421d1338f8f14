"""Ctrl-C for synchronous work that runs inside ``asyncio.run``.

``asyncio.run`` replaces Python's SIGINT handler with one that cancels the main task and raises
``KeyboardInterrupt`` only on a *second* Ctrl-C. A cancel takes effect at the task's next ``await``; CPU-bound
code (the filter's heuristics, ROUGE-L, encoding, pair search; training data prep) has none, so one Ctrl-C was
swallowed and the run went on to write every output (issue 24). Inside ``interruptible()`` the default handler
is back: the first Ctrl-C raises ``KeyboardInterrupt`` at the next Python bytecode (long C calls are chunked by
their callers, so that is within a second or so), the CLI turns it into exit status 130, and nothing written at
the end of the stage is written.

    >>> import signal
    >>> with interruptible():
    ...     signal.getsignal(signal.SIGINT) is signal.default_int_handler
    True
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["interruptible"]


@contextmanager
def interruptible() -> Iterator[None]:
    """Let the first SIGINT raise ``KeyboardInterrupt`` here, whatever handler an event loop installed.

    Outside the main thread (where Python delivers signals) it does nothing. The caller's handler is restored
    on the way out, so an ``await`` after the block is cancelled the way asyncio means it to be.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
