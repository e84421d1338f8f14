"""Issue 24: bitsandbytes' "Failed to load CPU gemm_4bit_forward" notice never reaches a filter run's output.

bitsandbytes (imported by peft, imported by the sentence-transformers the filter loads) tries at import to fetch
an optional CPU kernel from the Hugging Face Hub on AVX-512 BF16 machines and warns when it cannot (offline).
The CLI lowers library loggers; library use (``run_filter`` in a notebook) relies on the import guard in
``datagen.embed``, which drops only that notice: another bitsandbytes warning still shows.
"""

from __future__ import annotations

import subprocess
import sys

from tests.reliability._support import REPO, subprocess_env

_SCRIPT = r"""
import logging
from datagen import embed
embed.load_encoder()  # the filter's import path: sentence-transformers -> transformers -> peft -> bitsandbytes
with embed._kernel_notices_dropped():
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("a real bitsandbytes problem")
print("loaded", flush=True)
"""


def test_the_optional_kernel_notice_is_dropped_and_other_warnings_are_not(tmp_path):
    """Loading the encoder as a library prints no gemm_4bit_forward notice; other bitsandbytes warnings show."""
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=subprocess_env(tmp_path / "home"),
    )
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr
    assert "gemm_4bit_forward" not in done.stderr and "Skipping publisher trust check" not in done.stderr, done.stderr
    assert "a real bitsandbytes problem" in done.stderr
