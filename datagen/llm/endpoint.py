"""Resolve the endpoint a command talks to, starting the embedded model server when asked for.

``--base-url embedded`` (or ``endpoint: embedded`` in a config) means: start ``datagen serve`` on a free
port in a child process for the duration of the command, and stop it afterwards, also on failure and on
Ctrl-C. Any other URL is used as given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from datagen.llm.client import LLMConfig

EMBEDDED = "embedded"


@contextmanager
def endpoint(cfg: LLMConfig, max_batch_size: int = 16) -> Iterator[LLMConfig]:
    """Yield ``cfg`` with ``embedded`` replaced by the URL of a freshly started embedded server."""
    if EMBEDDED not in cfg.base_urls:
        yield cfg
        return
    from datagen.llm.server import ServeConfig, start_server_process

    with start_server_process(ServeConfig(port=0, max_batch_size=max_batch_size)) as url:
        urls = tuple(url if u == EMBEDDED else u for u in cfg.base_urls)
        yield dataclasses.replace(cfg, base_urls=urls)
