"""Where datagen keeps state that outlives a run: the LLM cache and converted models.

``DATAGEN_HOME`` (default ``~/.cache/datagen``) holds everything; ``DATAGEN_MODEL_CACHE`` may point the
converted-model folder elsewhere, so test sessions that isolate ``DATAGEN_HOME`` can still reuse one
conversion of the embedded model (it takes ~36 s).
"""

from __future__ import annotations

import os
from pathlib import Path


def datagen_home() -> Path:
    """The state folder, created on first use."""
    home = Path(os.environ.get("DATAGEN_HOME") or Path.home() / ".cache" / "datagen")
    home.mkdir(parents=True, exist_ok=True)
    return home


def model_cache_dir() -> Path:
    """The folder of converted (GGUF → safetensors) models, created on first use."""
    configured = os.environ.get("DATAGEN_MODEL_CACHE")
    path = Path(configured) if configured else datagen_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path
