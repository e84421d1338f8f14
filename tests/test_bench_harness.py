"""`make bench`'s harness at tiny sizes: every benchmark script runs, checks its result, and renders."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_harness_smoke(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--smoke",
            "--only",
            "rouge,client,kg,batch",
            "--doc",
            str(doc),
            "--results",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = doc.read_text()
    for name in ("## rouge:", "## client:", "## kg:", "## batch:"):
        assert name in text
    assert "Failed:" not in text and "identical_kept | true" in text
    assert "ours_rps" in text and "Smoke run" in text
    assert "ceiling_rps" in text and "ours_share_of_ceiling" in text and "| ceiling: bare aiohttp |" in text
    assert "ours_processes_share_of_ceiling" in text and "processes=4" in text
    assert "| round_trip |" in text and "ms per request" in text


def test_bench_filter_runs_the_filter_at_a_small_size(tmp_path):
    """bench_filter drives the filter's own stage functions (pass 1, exact dedup, LSH and exact ROUGE-L, pair
    search) and `run_filter` end to end: both run, find the planted copies and keep every record accounted for."""
    out = tmp_path / "stages.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/bench_filter.py",
            "--sizes",
            "600,1200",
            "--encoder-sample",
            "0",
            "--peer-max",
            "1200",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["sizes"]
    assert [r["records"] for r in rows] == [600, 1200]
    for r in rows:
        assert r["planted_recall"] >= 0.95 and r["lsh_drops_below_threshold_or_to_dropped"] == 0
        assert r["kept_only_by_exact"] == 0 and r["lsh_pair_recall"] >= 0.95
    done = subprocess.run(
        [
            sys.executable,
            "bench/bench_filter.py",
            "--pipeline",
            "--sizes",
            "800",
            "--out",
            str(tmp_path / "pipe.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads((tmp_path / "pipe.json").read_text())["pipeline"]
    assert row["records"] == 800 == row["curated"] + row["rejected"] and row["rejected"] >= 800 * 0.1
    assert row["peak_rss_mb"] > 0 and row["rouge_method"] == "exact"
