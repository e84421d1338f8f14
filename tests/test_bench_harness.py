"""`make bench`'s harness at tiny sizes: every benchmark script runs, checks its result, and renders."""

from __future__ import annotations

import subprocess
import sys


def test_bench_harness_smoke(tmp_path):
    doc = tmp_path / "BENCHMARKS.md"
    done = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--only", "rouge,client,kg,batch", "--doc", str(doc),
                           "--results", str(tmp_path / "results")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    text = doc.read_text()
    for name in ("## rouge:", "## client:", "## kg:", "## batch:"):
        assert name in text
    assert "Failed:" not in text and "identical_kept | true" in text
    assert "ours_rps" in text and "Smoke run" in text
    assert "ceiling_rps" in text and "ours_share_of_ceiling" in text and "| ceiling: bare aiohttp |" in text
    assert "ours_processes_share_of_ceiling" in text and "processes=4" in text
    assert "| round_trip |" in text and "ms per request" in text
