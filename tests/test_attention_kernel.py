"""`layers.attention`: softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, eq. 1) by the faster CPU kernel for its size.

Short sequences (at most EXPLICIT_ATTENTION_MAX_PAIRS query-key pairs per head) take the explicit product, longer
ones PyTorch's fused kernel; bf16 inputs are computed in float32 up to FLOAT32_ATTENTION_MAX_PAIRS. Both kernels
must give the definition's value: the reference here is the formula in float64, and float32 results must match it
to 1e-5 (values of order 1; float32 rounding over head dims <= 64 stays below 1e-6). The dispatch itself is asserted
bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffusionlab.models.layers import (EXPLICIT_ATTENTION_MAX_PAIRS, FLOAT32_ATTENTION_MAX_PAIRS, AttentionBlock,
                                        CrossAttentionBlock, attention)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The definition in float64."""
    q, k, v = q.double(), k.double(), v.double()
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def qkv(lq: int, lk: int, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(3, 2, n, d, generator=g) for n in (lq, lk, lk))


# 49 tokens (a 7x7 grid: the explicit kernel), 196 (14x14: the fused kernel), and a query/key split on either side
@pytest.mark.parametrize("lq,lk", [(49, 49), (196, 196), (64, 64), (65, 64), (784, 16)])
def test_attention_matches_the_definition_on_both_kernels(lq: int, lk: int) -> None:
    q, k, v = qkv(lq, lk)
    assert torch.allclose(attention(q, k, v).double(), reference(q, k, v), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lq,lk", [(49, 12), (196, 40)])
def test_masked_keys_get_no_weight(lq: int, lk: int) -> None:
    q, k, v = qkv(lq, lk, seed=1)
    mask = torch.ones(3, 1, 1, lk, dtype=torch.bool)
    mask[0, ..., 5:] = False  # the first example keeps 5 keys: padding
    mask[1, ..., lk // 2:] = False
    out = attention(q, k, v, mask)
    assert torch.allclose(out.double(), reference(q, k, v, mask), atol=1e-5, rtol=0)
    # Padding is invisible: the same result with the masked keys cut off
    assert torch.allclose(out[0], attention(q[:1], k[:1, ..., :5, :], v[:1, ..., :5, :])[0], atol=1e-6, rtol=0)


def test_dispatch_by_size_is_the_measured_rule() -> None:
    """At most EXPLICIT_ATTENTION_MAX_PAIRS pairs: the explicit product, bit for bit; above: the fused kernel."""
    side = int(EXPLICIT_ATTENTION_MAX_PAIRS ** 0.5)
    q, k, v = qkv(side, side)
    explicit = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1) @ v
    assert torch.equal(attention(q, k, v), explicit)
    q, k, v = qkv(side + 1, side)
    assert torch.equal(attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("lq", [49, 196])
def test_gradients_match_the_definition(lq: int) -> None:
    q, k, v = (t.requires_grad_() for t in qkv(lq, lq, seed=2))
    weights = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    (attention(q, k, v) * weights).sum().backward()
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    (reference(q64, k64, v64) * weights.double()).sum().backward()
    for ours, exact in ((q.grad, q64.grad), (k.grad, k64.grad), (v.grad, v64.grad)):
        assert torch.allclose(ours.double(), exact, atol=1e-5, rtol=0)


@pytest.mark.parametrize("lq", [49, 196, 256])
def test_bf16_attention_is_computed_in_float32_up_to_256_tokens(lq: int) -> None:
    """bf16 inputs (as under autocast): the float32 result of the same (rounded) inputs, rounded once to bf16."""
    assert lq * lq <= FLOAT32_ATTENTION_MAX_PAIRS
    q, k, v = (t.bfloat16() for t in qkv(lq, lq, seed=4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, attention(q.float(), k.float(), v.float()).bfloat16())


def test_bf16_attention_stays_bf16_on_long_sequences() -> None:
    """Above FLOAT32_ATTENTION_MAX_PAIRS (1024 tokens), where the bf16 kernel was measured faster, it stays in bf16."""
    q, k, v = (t.bfloat16() for t in qkv(1024, 1024, seed=5))
    assert 1024 * 1024 > FLOAT32_ATTENTION_MAX_PAIRS
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    assert torch.allclose(out.double(), reference(q, k, v), atol=3e-2, rtol=0)  # bf16: 8 bits of mantissa


def test_blocks_route_through_attention(monkeypatch: pytest.MonkeyPatch) -> None:
    """The UNet's self- and cross-attention blocks call the one kernel choice (and keep their output)."""
    from diffusionlab.models import layers

    torch.manual_seed(0)
    self_attn, cross = AttentionBlock(16, 4, 4), CrossAttentionBlock(16, 6, 2, 4)
    for block in (self_attn, cross):
        torch.nn.init.normal_(block.proj.weight)  # the zero-initialised projection would hide the attention
    x, ctx, mask = torch.randn(2, 16, 7, 7), torch.randn(2, 5, 6), torch.tensor([[1, 1, 1, 0, 0], [1] * 5]).bool()
    before = self_attn(x), cross(x, ctx, mask)
    calls = []
    monkeypatch.setattr(layers, "attention", lambda *a: calls.append(a) or F.scaled_dot_product_attention(*a))
    after = self_attn(x), cross(x, ctx, mask)
    assert len(calls) == 2
    for b, a in zip(before, after):
        assert torch.allclose(b, a, atol=1e-5, rtol=0)
