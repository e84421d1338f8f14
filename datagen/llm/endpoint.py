"""Resolve the endpoint a command talks to, starting the embedded model server when asked for.

``--base-url embedded`` (or ``endpoint: embedded`` in a config) means: start ``datagen serve`` on a free
port in a child process for the duration of the command, and stop it afterwards, also on failure and on
Ctrl-C. Any other URL is used as given. Against the embedded server the per-request timeout is raised to
at least 15 minutes and concurrency capped at the server's batch size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

from datagen.llm.client import LLMConfig

EMBEDDED = "embedded"
EMBEDDED_TIMEOUT = 900.0  # seconds per request against the embedded CPU server


@contextmanager
def endpoint(cfg: LLMConfig, max_batch_size: int = 16) -> Iterator[LLMConfig]:
    """Yield ``cfg`` with ``embedded`` replaced by the URL of a freshly started embedded server."""
    if EMBEDDED not in cfg.base_urls:
        yield cfg
        return
    from datagen.llm.server import ServeConfig, start_server_process

    with start_server_process(ServeConfig(port=0, max_batch_size=max_batch_size)) as url:
        urls = tuple(url if u == EMBEDDED else u for u in cfg.base_urls)
        # A CPU model answers a full batch in minutes, and a request that times out is still computed by
        # the server: so wait long, and send no more at once than one batch holds.
        yield dataclasses.replace(
            cfg,
            base_urls=urls,
            timeout=max(cfg.timeout, EMBEDDED_TIMEOUT),
            concurrency=min(cfg.concurrency, max_batch_size),
        )
