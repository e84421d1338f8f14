"""On-disk cache of LLM answers, so a re-run or a resumed run pays only for what is missing.

One SQLite file (WAL mode, so several processes of a fleet can share it). The key is a hash of everything
that determines an answer: endpoint kind (chat or completion), model, messages or prompt, sampling
parameters and the sample index (the k-th sample of the same request is a different answer). The base URL
is left out on purpose: the same model behind two load-balanced servers gives interchangeable answers. API
keys are never part of a key or a value.

Only successful completions are stored; failures are retried on the next run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datagen.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key        TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def cache_key(kind: str, model: str, payload: Any, params: dict[str, Any], sample_index: int) -> str:
    """Hash of (kind, model, messages-or-prompt, sampling params, sample index); stable across runs."""
    blob = json.dumps(
        {"kind": kind, "model": model, "payload": payload, "params": params, "sample": sample_index},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A small key → JSON store over SQLite; safe to use from threads and from several processes.

    Writes go through one writer thread with a connection of its own, and are group-committed: the rows that
    queued up while one transaction was being written go out together in the next. ``aput`` (what the client
    uses) waits for its row's commit without holding the event loop, so a fleet sharing the file can no longer
    stall every request in flight while one process holds the write lock (up to the 60 s busy timeout).
    The writer waits ``linger`` seconds after a wake-up so that answers arriving meanwhile share the commit;
    the wait is spent outside the request semaphore, so it costs no throughput. CPU is about the same as a
    commit per row (bench/bench_client.py: ~0.1 ms per answer either way, of ~1.2 ms in all): what this buys is
    a loop that never waits on SQLite. An answer is on disk before ``aput`` returns, so a run killed at any
    point has cached everything it handed on: the resume contract.
    """

    def __init__(self, path: str | Path, linger: float = 0.005):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = _connect(self.path)
            self._conn.execute(_SCHEMA)
            _probe(self._conn)
            self._writer = _Writer(self.path, linger)
        except (sqlite3.Error, OSError) as exc:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            raise cache_error(self.path, exc, "opening it") from None
        # Stop the thread at garbage collection or interpreter exit without keeping the cache alive (the
        # writer holds no reference back to it).
        self._finalizer = weakref.finalize(self, self._writer.stop)

    def get(self, key: str) -> dict[str, Any] | None:
        rows = self._select("reading an answer", "SELECT response FROM completions WHERE key = ?", key)
        try:
            return json.loads(rows[0][0]) if rows else None
        except ValueError:  # a row someone else wrote by hand: not an answer, ask the endpoint again
            return None

    def _select(self, doing: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """The rows of one query on the reading connection; a SQLite error becomes a CacheError saying ``doing``."""
        try:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise cache_error(self.path, exc, doing) from None

    def _queue(
        self, key: str, model: str, response: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None
    ) -> Any:
        """Hand one answer to the writer; the future its commit settles (an asyncio one of ``loop`` if given)."""
        done = loop.create_future() if loop is not None else concurrent.futures.Future()
        self._writer.submit((key, model, json.dumps(response, ensure_ascii=False), time.time()), (loop, done))
        return done

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        """Store an answer; returns once it is committed."""
        try:
            self._queue(key, model, response).result()
        except sqlite3.Error as exc:
            raise cache_error(self.path, exc, "storing an answer") from None

    def put_many(self, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> int:
        """Store many ``(key, model, response)`` answers (a batch job's output); returns once all are committed.

        Rows queue up together, so the writer commits them in a few large transactions, not one per row
        (a 100k-answer import: bench/bench_batch.py)."""
        waits = [self._queue(key, model, response) for key, model, response in rows]
        for done in waits:
            done.result()
        return len(waits)

    async def aput(self, key: str, model: str, response: dict[str, Any]) -> None:
        """``put`` for the event loop: the commit happens in the writer thread, batched with its neighbours."""
        try:
            await self._queue(key, model, response, asyncio.get_running_loop())
        except sqlite3.Error as exc:
            raise cache_error(self.path, exc, "storing an answer") from None

    def keys(self) -> set[str]:
        return {row[0] for row in self._select("listing its keys", "SELECT key FROM completions")}

    def __len__(self) -> int:
        return self._select("counting its answers", "SELECT COUNT(*) FROM completions")[0][0]

    def close(self) -> None:
        self._finalizer()  # commits what is queued and stops the writer, once
        with self._lock:
            self._conn.close()


class CacheError(ConfigError):
    """The answer cache file cannot be used (corrupt, read-only, not a cache): exit code 2, with what to do."""


def cache_error(path: Path, exc: BaseException, doing: str) -> CacheError:
    """Say which file, what is wrong with it and how to go on; the file itself is never touched, so the answers
    it holds stay there for whoever repairs or moves it."""
    text = str(exc)
    lowered = text.lower()
    if any(word in lowered for word in ("not a database", "malformed", "corrupt", "file is encrypted")):
        what = "is corrupt or not a datagen answer cache"
    elif any(
        word in lowered for word in ("readonly", "read-only", "unable to open", "permission", "disk i/o", "full")
    ):
        what = "cannot be opened for writing (read-only, full, or on a broken disk?)"
    elif "locked" in lowered or "busy" in lowered:
        what = "stayed locked by another process for over a minute"
    else:
        what = "failed"
    return CacheError(
        f"{path}: the LLM answer cache {what}: {type(exc).__name__}: {text} (while {doing}). "
        f"To go on: run without the cache (--no-cache, or endpoint.cache: false in a run config), "
        f"or move the file aside (mv '{path}' '{path}.broken') so a new one is started; "
        "datagen has not changed or deleted it, so the answers it holds are still there"
    )


def _probe(conn: sqlite3.Connection) -> None:
    """Read a page and write (then roll back) a row, so a corrupt or read-only file fails now, naming itself,
    rather than after the endpoint has been paid for the first answer it cannot store."""
    conn.execute("SELECT COUNT(*) FROM completions WHERE key = ''").fetchone()
    conn.execute("BEGIN")
    try:
        conn.execute("INSERT OR REPLACE INTO completions VALUES ('', '', '', 0)")
    finally:
        conn.execute("ROLLBACK")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses at most the last commit
    return conn


_Waiter = tuple[asyncio.AbstractEventLoop | None, Any]  # (loop, asyncio future) or (None, concurrent future)


class _Writer:
    """The queue of rows to write and the thread that group-commits it (WAL lets the reading connection go
    on reading while this one writes)."""

    def __init__(self, path: Path, linger: float):
        self.linger = linger
        self._queue: list[tuple[tuple[str, str, str, float], _Waiter]] = []
        self._queue_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._conn = _connect(path)  # the table exists: ResponseCache created it before starting the writer
        self._thread = threading.Thread(target=self._run, name="datagen-cache-writer", daemon=True)
        self._thread.start()

    def submit(self, row: tuple[str, str, str, float], waiter: _Waiter) -> None:
        with self._queue_lock:
            if self._stopped:
                raise RuntimeError("the response cache is closed")
            self._queue.append((row, waiter))
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.linger)  # let answers arriving meanwhile join this commit (the GIL is free)
            self._wake.clear()
            self._commit_queued()
            if self._stopped:
                self._commit_queued()  # rows submitted just before stop() took the lock
                return

    def _commit_queued(self) -> None:
        with self._queue_lock:
            batch, self._queue = self._queue, []
        if not batch:
            return
        error: BaseException | None = None
        try:
            self._conn.execute("BEGIN")  # one transaction for the whole batch
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO completions (key, model, response, created_at) VALUES (?, ?, ?, ?)",
                    [row for row, _ in batch],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # handed to every waiter of the batch, as a synchronous put would raise it
            error = exc
        by_loop: dict[Any, list] = {}
        for _, (loop, future) in batch:
            by_loop.setdefault(loop, []).append(future)
        for loop, futures in by_loop.items():
            if loop is None:
                _settle(futures, error)
            else:  # one wake-up of the loop per batch, not per row
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting any more
                    loop.call_soon_threadsafe(_settle, futures, error)

    def stop(self) -> None:
        with self._queue_lock:
            self._stopped = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._conn.close()


def _settle(futures: list, error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # the waiting request was cancelled meanwhile
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
