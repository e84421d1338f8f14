"""The answer cache commits through a writer thread, in groups: an answer must be on disk when ``put``/``aput``
returns (a killed run has cached everything it handed on), and the event loop must not wait on SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from datagen.llm.cache import ResponseCache, cache_key

ANSWER = {"text": "7", "finish_reason": "stop", "model": "m", "prompt_tokens": 3, "completion_tokens": 1}


def rows_on_disk(path) -> int:
    with sqlite3.connect(path) as conn:  # a separate connection: sees committed rows only
        return conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]


def test_put_is_on_disk_when_it_returns(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    key = cache_key("chat", "m", [{"role": "user", "content": "a prime?"}], {"max_tokens": 8}, 0)
    cache.put(key, "m", ANSWER)
    assert rows_on_disk(tmp_path / "c.sqlite") == 1
    assert cache.get(key) == ANSWER and cache.get("other") is None
    cache.put(key, "m", {**ANSWER, "text": "11"})  # a re-put replaces
    assert cache.get(key)["text"] == "11" and len(cache) == 1 and cache.keys() == {key}
    cache.close()
    again = ResponseCache(tmp_path / "c.sqlite")
    assert again.get(key)["text"] == "11"
    again.close()
    with pytest.raises(RuntimeError, match="closed"):
        cache.put(key, "m", ANSWER)


def test_aput_from_many_tasks_is_group_committed_and_durable(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    commits = []
    original = cache._writer._commit_queued

    def counting():
        commits.append(1)
        original()

    cache._writer._commit_queued = counting  # the thread looks the method up on each round

    async def go():
        async def one(i):
            await asyncio.sleep(0)
            await cache.aput(f"k{i}", "m", {**ANSWER, "text": str(i)})
            return rows_on_disk(tmp_path / "c.sqlite") >= 1  # durable by the time aput returns

        return await asyncio.gather(*(one(i) for i in range(300)))

    assert all(asyncio.run(go()))
    assert rows_on_disk(tmp_path / "c.sqlite") == 300 and cache.get("k299")["text"] == "299"
    assert len(commits) < 300  # batched, not one commit per row
    cache.close()


def test_a_cancelled_aput_still_commits(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def go():
        task = asyncio.ensure_future(cache.aput("k", "m", ANSWER))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await cache.aput("k2", "m", ANSWER)  # committed after (or with) the cancelled one

    asyncio.run(go())
    assert cache.keys() == {"k", "k2"}
    cache.close()


def test_interpreter_exit_with_an_unclosed_cache_does_not_hang(tmp_path):
    path = tmp_path / "c.sqlite"
    script = (
        "import asyncio\nfrom datagen.llm.cache import ResponseCache\n"
        f"c = ResponseCache({str(path)!r})\n"
        "asyncio.run(c.aput('a', 'm', {'text': 'x'}))\n"
        "c.put('b', 'm', {'text': 'y'})\n"
    )  # no close(): the exit hook stops the writer
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert rows_on_disk(path) == 2
