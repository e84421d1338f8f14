"""Per-sample attention inside packed rows equals transformers' SDPA under a block-diagonal causal mask."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from datagen.train.attention import SEGMENT_ATTENTION, register, segment_bounds, segment_sdpa_forward  # noqa: E402


def _block_causal_mask(position_ids):
    """The dense (batch, 1, seq, seq) boolean mask transformers builds for packed rows, spelled out."""
    bounds = segment_bounds(position_ids)
    length = position_ids.shape[1]
    mask = torch.zeros(len(bounds), 1, length, length, dtype=torch.bool)
    for row, row_bounds in enumerate(bounds):
        for start, end in row_bounds:
            mask[row, 0, start:end, start:end] = torch.ones(end - start, end - start).tril().bool()
    return mask


def _reference(query, key, value, mask, scaling):
    repeats = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(repeats, dim=1), value.repeat_interleave(repeats, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2)


def _qkv(batch, length, heads=6, kv_heads=2, dim=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    make = lambda h: torch.randn(batch, h, length, dim, generator=generator, requires_grad=True)  # noqa: E731
    return make(heads), make(kv_heads), make(kv_heads)


def test_segment_bounds_start_wherever_positions_restart_or_jump():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 0, 1]])
    assert segment_bounds(position_ids) == [[(0, 3), (3, 5), (5, 9)], [(0, 6), (6, 7), (7, 9)]]
    assert segment_bounds(torch.tensor([[5, 6, 7, 0, 1]])) == [[(0, 3), (3, 5)]]  # a row may start mid-sample


@pytest.mark.parametrize(
    "position_ids",
    [
        [[0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]],  # one padding-free row, 3 samples
        [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3], [0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]],  # two packed rows
        [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]],  # a single sample
    ],
)
def test_outputs_and_gradients_equal_sdpa_with_the_block_diagonal_mask(position_ids):
    position_ids = torch.tensor(position_ids)
    batch, length = position_ids.shape
    scaling = 0.3
    q, k, v = _qkv(batch, length)
    ours, weights = segment_sdpa_forward(None, q, k, v, None, scaling=scaling, position_ids=position_ids)
    assert weights is None and ours.shape == (batch, length, 6, 8)
    grads_ours = torch.autograd.grad((ours * torch.linspace(-1, 1, ours.numel()).view_as(ours)).sum(), (q, k, v))
    q2, k2, v2 = _qkv(batch, length)
    theirs = _reference(q2, k2, v2, _block_causal_mask(position_ids), scaling)
    grads_theirs = torch.autograd.grad(
        (theirs * torch.linspace(-1, 1, theirs.numel()).view_as(theirs)).sum(), (q2, k2, v2)
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for mine, reference in zip(grads_ours, grads_theirs):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)


def test_samples_do_not_see_each_other():
    """Changing the first sample's keys and values leaves the second sample's outputs exactly as they were."""
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3]])
    q, k, v = (t.detach() for t in _qkv(1, 7))
    before, _ = segment_sdpa_forward(None, q, k, v, None, position_ids=position_ids)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :3] += 5.0
    v2[:, :, :3] -= 3.0
    after, _ = segment_sdpa_forward(None, q, k2, v2, None, position_ids=position_ids)
    assert torch.equal(before[:, 3:], after[:, 3:]) and not torch.allclose(before[:, :3], after[:, :3])


def test_without_position_ids_each_row_is_one_causal_sample():
    q, k, v = (t.detach() for t in _qkv(2, 5))
    ours, _ = segment_sdpa_forward(None, q, k, v, None)
    causal = torch.ones(5, 5).tril().bool()
    torch.testing.assert_close(ours, _reference(q, k, v, causal, None), atol=1e-6, rtol=1e-6)


def test_a_kv_cache_or_a_4d_mask_falls_back_to_transformers_sdpa():
    """Generation (keys longer than queries) and explicit masks take transformers' own path, unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 3
    q, _, _ = (t.detach() for t in _qkv(1, 1))
    _, k, v = (t.detach() for t in _qkv(1, 4, seed=1))
    ours, _ = segment_sdpa_forward(module, q, k, v, None)
    theirs, _ = sdpa_attention_forward(module, q, k, v, None)
    torch.testing.assert_close(ours, theirs)
    q, k, v = (t.detach() for t in _qkv(1, 4))
    mask = torch.tensor(
        [
            [
                [
                    [True, False, False, False],
                    [True, True, False, False],
                    [False, False, True, False],
                    [False, False, True, True],
                ]
            ]
        ]
    )
    ours, _ = segment_sdpa_forward(module, q, k, v, mask)
    torch.testing.assert_close(ours, _reference(q, k, v, mask, None), atol=1e-6, rtol=1e-6)


def test_a_registered_model_gives_the_same_per_token_loss_as_the_dense_mask(tiny_model_dir):
    """The tiny Llama on one padding-free row of 3 samples: the same logits as transformers' packed-sequence mask."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(5, 200, (1, 30), generator=generator)
    position_ids = torch.tensor([list(range(12)) + list(range(7)) + list(range(11))])
    with torch.no_grad():
        dense = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        model.set_attn_implementation(register())
        assert model.config._attn_implementation == SEGMENT_ATTENTION
        ours = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits
        separate = torch.cat(
            [model(input_ids=input_ids[:, s:e], use_cache=False).logits for s, e in ((0, 12), (12, 19), (19, 30))],
            dim=1,
        )
    torch.testing.assert_close(ours, dense, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours, separate, atol=1e-4, rtol=1e-4)
