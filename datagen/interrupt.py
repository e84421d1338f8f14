"""Ctrl-C for synchronous work that runs inside ``asyncio.run``.

``asyncio.run`` replaces Python's SIGINT handler with one that cancels the main task and raises
``KeyboardInterrupt`` only on a *second* Ctrl-C. A cancel takes effect at the task's next ``await``; CPU-bound
code (the filter's heuristics, ROUGE-L, encoding, pair search; training data prep) has none, so one Ctrl-C was
swallowed and the run went on to write every output (issue 24). Inside ``interruptible()`` the default handler
is back: the first Ctrl-C raises ``KeyboardInterrupt`` at the next Python bytecode (long C calls are chunked by
their callers, so that is within a second or so), the CLI turns it into exit status 130, and nothing written at
the end of the stage is written.

Acting on the Ctrl-C is the quick part (measured in the encoder stage: 0.01-0.2 s, once 1.0 s at load 5). What
used to take seconds came after it: the interpreter's exit, which clears every module and runs full garbage
collections over the ~580K objects torch, transformers and sentence-transformers create at import (2.6-3.7 s
at load 7, up to 13 s; issue 24's "did not stop within 3 s"). ``skip_exit_collection()`` freezes them first:
0.2-0.9 s from the signal to the exit at load 2.5-5.

    >>> import signal
    >>> with interruptible():
    ...     signal.getsignal(signal.SIGINT) is signal.default_int_handler
    True
"""

from __future__ import annotations

import gc
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["interruptible", "skip_exit_collection"]


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


def skip_exit_collection() -> None:
    """Spare a process that is about to exit the collector passes of interpreter shutdown (the console script
    calls it last, after a Ctrl-C, an error or a normal end).

    At exit CPython clears module after module and runs a full collection between them; with torch and
    transformers loaded each pass walks ~580K objects, and a busy machine made the exit after a Ctrl-C take
    2.6-13 s. ``gc.freeze()`` moves every live object to the permanent generation, which no collection scans:
    measured 1.5-2.5 s -> 0.3 s at load 2-3. Unlike ``os._exit`` it skips nothing else: atexit handlers,
    finally blocks and stream flushes still run, and objects are still freed by reference counting. Only
    reference cycles alive at exit stay unreclaimed, which the operating system does anyway. Never for a
    process that goes on working (a frozen object is not collected again).

        >>> skip_exit_collection(); import gc; gc.get_freeze_count() > 0; gc.unfreeze()
        True
    """
    gc.freeze()
