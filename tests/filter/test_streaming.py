"""The filter streams: memory holds the dedup indexes, not the record text (issue 23).

A run reads its inputs twice, scoring and indexing each record as it is read and writing each as it is read
again, so the text of a million records is never held at once.
"""

from __future__ import annotations

import asyncio
import random
import tracemalloc

import pytest

from datagen.filter import pipeline
from datagen.filter.pipeline import FilterConfig, run_filter
from datagen.records import Example, write_jsonl
from tests.filter.test_pipeline import assert_invariant


def test_peak_memory_is_far_below_the_text_filtered(tmp_path):
    rng = random.Random(3)
    words = [f"word{k}" for k in range(500)]
    records = [
        Example(
            instruction=" ".join(rng.sample(words, 8)).capitalize() + ".",
            output=" ".join(rng.choices(words, k=2800)) + ".",
        )
        for k in range(1500)
    ]
    records += [Example(instruction=r.instruction.upper(), output=r.output[:5000] + ".") for r in records[:100]]
    path, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_jsonl(path, records)
    size = path.stat().st_size
    assert size > 30_000_000
    cfg = FilterConfig(inputs=(path,), out=out, heuristics=False, embed_dedup=False, keep="longest_output")
    tracemalloc.start()
    try:
        stats = asyncio.run(run_filter(cfg))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 4, f"peak {peak / 1e6:.1f} MB for {size / 1e6:.1f} MB of records"
    curated, rejects = assert_invariant([path], out, stats)
    assert stats["stages"]["exact_dedup"]["rejected"] == 100  # the short copies go, the full answers stay
    assert sorted(len(e.output) for e in curated) == sorted(len(r.output) for r in records[:1500])
    assert {r.reject["duplicate_of"] for r in rejects} == {r.id for r in records[:100]}


def test_a_stop_while_writing_leaves_the_old_outputs_whole_and_no_marker(tmp_path, monkeypatch):
    path, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_jsonl(
        path,
        [Example(instruction=f"Name {k} rivers of the northern valley.", output=f"River {k}.") for k in range(50)] * 2,
    )
    cfg = FilterConfig(inputs=(path,), out=out, embed_dedup=False, rouge_dedup=False)
    asyncio.run(run_filter(cfg))
    before = {name: (out / name).read_bytes() for name in ("curated.jsonl", "rejects.jsonl")}
    assert before["rejects.jsonl"].count(b"\n") == 50

    def stop(*args, **kwargs):  # Ctrl-C on the second pass's first reject
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "make_reject", stop)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(run_filter(cfg))
    assert sorted(p.name for p in out.iterdir()) == ["curated.jsonl", "rejects.jsonl"]  # no temp file, no stats
    assert {name: (out / name).read_bytes() for name in before} == before


def test_heuristics_in_worker_processes_write_the_same_bytes(tmp_path):
    """Pass 1's heuristics in two worker processes (from the first record here; by default past 16K) give the
    same curated and rejects, byte for byte, as in this process: same scores, same flags, input order."""
    rng = random.Random(5)
    words = [f"word{k}" for k in range(300)]
    records = []
    for k in range(3000):
        answer = " ".join(rng.choices(words, k=rng.randint(6, 30))) + "."
        records.append(
            Example(
                instruction=" ".join(rng.sample(words, 7)).capitalize() + "?",
                output=[answer, "", "As an AI language model, I cannot answer that.", answer + " " + answer][
                    k % 4 if k % 7 == 0 else 0
                ],
            )
        )
    path = tmp_path / "in.jsonl"
    write_jsonl(path, records)
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        runs[workers] = asyncio.run(
            run_filter(
                FilterConfig(
                    inputs=(path,),
                    out=out,
                    embed_dedup=False,
                    rouge_dedup=False,
                    heuristics_workers=workers,
                    heuristics_parallel_above=0,
                )
            )
        )
        assert_invariant([path], out, runs[workers])
    assert runs[1]["stages"]["heuristics"]["reasons"] == runs[2]["stages"]["heuristics"]["reasons"]
    assert runs[2]["stages"]["heuristics"]["rejected"] >= 3000 // 7 // 2  # the empty and refusing answers go
    for name in ("curated.jsonl", "rejects.jsonl"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()
