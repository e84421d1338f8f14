"""What requests cost: a price table per model, the batch discount, and a spending limit checked before paying.

Prices are USD per million tokens, input and output, from the run config's ``prices:`` table (or
``--prices FILE``); ``"*"`` prices every model the table does not name. Batch jobs cost ``1 - batch_discount``
of that (OpenAI's Batch API: half). Cached answers cost nothing.

    prices:
      gpt-4o-mini: {input: 0.15, output: 0.60}

``--max-cost USD`` (``endpoint.max_cost``) stops a command before a request or a batch job would take its
spending past the limit: the request is priced at its upper bound (prompt ≈ 4 characters a token,
``max_tokens`` in full), so the limit is never crossed. Everything already answered stays in the cache, so
the same command with a higher limit goes on from there and pays only for the rest.

    >>> table = {"m": {"input": 1.0, "output": 2.0}}
    >>> price_of(table, "m"), price_of(table, "other")
    ((1.0, 2.0), None)
    >>> cost((1.0, 2.0), 1_000_000, 500_000), cost((1.0, 2.0), 1_000_000, 500_000, discount=0.5)
    (2.0, 1.0)
"""

from __future__ import annotations

import json
from typing import Any

from datagen.errors import ConfigError, DatagenError

Price = tuple[float, float]


class CostLimitReached(DatagenError):
    """The next request would take spending past ``max_cost``: stopped before paying for it."""


def check_prices(prices: Any, where: str = "prices") -> dict[str, Price]:
    """``{model: (input, output)}`` from a ``{model: {input, output}}`` mapping, or a ConfigError naming the entry."""
    if not isinstance(prices, dict):
        raise ConfigError(f"{where} must be a mapping of model → {{input, output}} (USD per million tokens)")
    out: dict[str, Price] = {}
    for model, entry in prices.items():
        if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
            raise ConfigError(f"{where}.{model} must be {{input: USD, output: USD}} per million tokens, got {entry!r}")
        values = []
        for name in ("input", "output"):
            value = entry[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ConfigError(f"{where}.{model}.{name} must be a price ≥ 0, got {value!r}")
            values.append(float(value))
        out[str(model)] = (values[0], values[1])
    return out


def price_of(prices: dict[str, Any], model: str) -> Price | None:
    """The (input, output) price of ``model``, the ``"*"`` entry's, or None when the table names neither."""
    entry = prices.get(model, prices.get("*"))
    if entry is None:
        return None
    return (float(entry["input"]), float(entry["output"])) if isinstance(entry, dict) else tuple(entry)


def cost(price: Price, prompt_tokens: int, completion_tokens: int, discount: float = 0.0) -> float:
    """USD for the tokens at ``price`` (per million), less ``discount``."""
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6 * (1.0 - discount)


def estimate_tokens(payload: Any, request: dict[str, Any]) -> tuple[int, int]:
    """Upper-bound tokens of one request: prompt at ~4 characters a token, the whole ``max_tokens`` budget."""
    prompt = len(json.dumps(payload, ensure_ascii=False)) // 4 + 1
    return prompt, int(request.get("max_tokens") or 0)
