"""Causal attention run sample by sample inside a row: no block-diagonal mask, no padding.

transformers gives packed rows (``position_ids`` restarting at 0 per sample) a dense block-diagonal mask,
so SDPA scores every query against every key of the whole row, across samples, and then throws most of it
away; flash-attention's varlen kernels avoid that, but only on CUDA with flash-attn installed. Here each
sample's slice of the row goes to SDPA on its own with ``is_causal=True``, which costs the sum of the samples'
squared lengths (halved by causality) instead of the row's squared length. That also makes padding needless:
the trainer's collator lays a whole batch, packed or not, end to end in one row (``Collator(padding_free=True)``),
as trl's padding-free batches do, so no padding token goes through the model. Per-step losses equal those of
padded batches (tests/train/test_sft.py); tokens/s against trl: docs/BENCHMARKS.md.

Registered under ``SEGMENT_ATTENTION`` for models whose attention layers call ``ALL_ATTENTION_FUNCTIONS``
(every transformers 5 decoder); ``datagen.train.sft`` switches a model to it for training.
"""

from __future__ import annotations

from typing import Any

#: The ``attn_implementation`` name this module registers with transformers.
SEGMENT_ATTENTION = "datagen_segment_sdpa"


def segment_bounds(position_ids: Any) -> list[list[tuple[int, int]]]:
    """Per row, the ``(start, end)`` of each sample: a sample starts wherever the position does not follow on.

    >>> import torch
    >>> segment_bounds(torch.tensor([[0, 1, 2, 0, 1, 0]]))
    [[(0, 3), (3, 5), (5, 6)]]
    """
    import torch

    length = position_ids.shape[-1]
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    bounds = []
    for row in starts:  # every layer asks: nonzero keeps it O(segments) in Python, not O(tokens)
        first = torch.nonzero(row).flatten().tolist()
        bounds.append(list(zip(first, first[1:] + [length])))
    return bounds


def segment_sdpa_forward(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out.

    Without ``position_ids`` each row is one causal sample. A row's trailing padding is then attended to by
    nobody but itself, which is exact for right-padded rows; anything else (a KV cache, a 4D mask) goes to
    transformers' own SDPA path, so generation with this implementation set still works.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    length = query.shape[2]
    if key.shape[2] != length or (attention_mask is not None and attention_mask.ndim == 4):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if key.shape[1] != query.shape[1]:  # grouped-query attention: one K/V head serves several query heads
        repeats = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(repeats, dim=1)
        value = value.repeat_interleave(repeats, dim=1)
    if position_ids is None:
        bounds = [[(0, length)]] * query.shape[0]
    else:
        bounds = segment_bounds(position_ids.expand(query.shape[0], -1))
    rows = []
    for r, row_bounds in enumerate(bounds):
        pieces = [
            torch.nn.functional.scaled_dot_product_attention(
                query[r : r + 1, :, start:end],
                key[r : r + 1, :, start:end],
                value[r : r + 1, :, start:end],
                dropout_p=dropout,
                is_causal=True,
                scale=scaling,
            )
            for start, end in row_bounds
        ]
        rows.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2))
    out = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make ``SEGMENT_ATTENTION`` a valid ``attn_implementation``; returns the name. Idempotent."""
    from transformers import AttentionInterface

    AttentionInterface.register(SEGMENT_ATTENTION, segment_sdpa_forward)
    return SEGMENT_ATTENTION
