"""On-disk cache of LLM answers, so a re-run or a resumed run pays only for what is missing.

One SQLite file (WAL mode, so several processes of a fleet can share it). The key is a hash of everything
that determines an answer: endpoint kind (chat or completion), model, messages or prompt, sampling
parameters and the sample index (the k-th sample of the same request is a different answer). The base URL
is left out on purpose: the same model behind two load-balanced servers gives interchangeable answers. API
keys are never part of a key or a value.

Only successful completions are stored; failures are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

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
        ensure_ascii=False, sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A small key → JSON store over SQLite; safe to use from threads and from several processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses at most the last commit
        self._conn.execute(_SCHEMA)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT response FROM completions WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, model: str, response: dict[str, Any]) -> None:
        blob = json.dumps(response, ensure_ascii=False)
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO completions (key, model, response, created_at) VALUES (?, ?, ?, ?)",
                (key, model, blob, time.time()),
            )

    def keys(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._conn.execute("SELECT key FROM completions")}

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
