"""The building blocks of the UNet (docs/maths.md section 8): time embedding, ResNet block, attention, resampling.

References: Ho et al. 2020 (DDPM), Appendix B; Nichol & Dhariwal 2021 (improved DDPM, "iDDPM");
Vaswani et al. 2017 for the sinusoidal embedding.

Every block works on NCHW tensors in either memory format; the UNet keeps activations in the layout that
`unet.preferred_memory_format` picks for the CPU (channels_last where the oneDNN convolutions were measured faster
in it), and the attention block is written so that channels_last costs it no copies. Two CPU kernels are slow in
reduced precision (bf16 autocast), so the blocks route around them: `GroupNorm` normalises a bf16 channels_last
tensor in the standard layout (PyTorch's bf16 channels_last GroupNorm is 10-40x slower than the standard-layout
one), and `attention` computes in float32 on CPU up to 256 tokens (the bf16 flash-attention backward is 1.1-4x
slower than the float32 one there). `attention` also picks the faster CPU kernel for its size: the explicit
softmax(QK^T)V for short sequences, the fused flash kernel for long ones. Neither changes float32 numerics beyond
rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of shape (B, dim): [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ...], w_i = max_period^(-i/h)."""
    # Vaswani et al. 2017, section 3.5, as used for the diffusion time by Ho et al. 2020 (App. B):
    # h = dim // 2 geometric frequencies from 1 down to 1/max_period (exclusive). An odd dim gets a zero pad.
    half = dim // 2
    if not t.is_floating_point():
        t = t.float()
    exponent = torch.arange(half, device=t.device, dtype=torch.float64) / half
    freqs = torch.exp(-math.log(max_period) * exponent).to(t.dtype)
    args = t[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def group_count(channels: int, groups: int) -> int:
    """The largest divisor of `channels` that is <= `groups` (so GroupNorm always applies)."""
    for g in range(min(groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


_REDUCED = (torch.bfloat16, torch.float16)


class _GroupNormViaStandardLayout(torch.autograd.Function):
    """GroupNorm of a channels_last tensor computed in the standard layout; output and input gradient in channels_last.

    One autograd node, so the input gradient comes back in the layout of the input (a plain
    `x.contiguous()` would hand back a standard-layout gradient, and adding that to the channels_last
    gradient of the skip path is itself a slow mixed-layout add).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, groups: int, eps: float) -> Tensor:
        xc = x.contiguous()
        n, c, h, w = xc.shape
        y, mean, rstd = torch.ops.aten.native_group_norm(xc, weight, bias, n, c, h * w, groups, eps)
        ctx.save_for_backward(xc, weight, mean, rstd)
        ctx.groups = groups
        return y.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        xc, weight, mean, rstd = ctx.saved_tensors
        n, c, h, w = xc.shape
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        dx, dw, db = torch.ops.aten.native_group_norm_backward(
            dy.contiguous(), xc, mean, rstd, weight, n, c, h * w, ctx.groups, mask)
        if dx is not None:
            dx = dx.contiguous(memory_format=torch.channels_last)
        return dx, dw, db, None, None


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters and state-dict keys) with a fast path for reduced-precision channels_last input.

    On CPU, PyTorch's GroupNorm kernel for bf16 channels_last tensors is 10-40x slower than the one for
    the standard layout (measured in benchmarks/profile_unet.py), so such input is normalised in the
    standard layout and handed back in channels_last. Float32 input takes the stock kernel unchanged
    (its channels_last kernel is slower too, but there the layout copies cost as much as they save).
    """

    def forward(self, x: Tensor) -> Tensor:
        """Group-normalise x; the output has the memory format of x."""
        if (x.dtype in _REDUCED and x.device.type == "cpu" and x.ndim == 4 and self.affine
                and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
            return _GroupNormViaStandardLayout.apply(x, self.weight, self.bias, self.num_groups, self.eps)
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def group_norm(channels: int, groups: int) -> GroupNorm:
    """GroupNorm with the largest valid group count <= `groups` (Wu & He 2018, as in Ho et al. 2020)."""
    return GroupNorm(group_count(channels, groups), channels)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a module's parameters in place and return it."""
    # iDDPM (Nichol & Dhariwal 2021) zero-initialises the last layer of every residual branch and the
    # output layer, so each block starts as the identity and the initial prediction is 0.
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Pre-activated ResNet block with the time embedding added after the first conv (Ho et al. 2020, App. B).

    With `emb_dim=None` it has no embedding (the autoencoder's blocks, Rombach et al. 2022, appendix G).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        # Projects SiLU(embedding) (computed once by the UNet for all blocks) to one bias per channel.
        self.emb_proj = nn.Linear(emb_dim, out_ch) if emb_dim is not None else None
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        # A 1x1 conv on the skip path only when the channel count changes (identity otherwise).
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        """x: (B, in_ch, H, W); emb: (B, emb_dim), already passed through SiLU (None without an embedding)."""
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb_proj is not None:
            h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class CrossAttentionBlock(nn.Module):
    """Cross-attention from the image to a text (Rombach et al. 2022, eq. 3): Q from the H*W image tokens,
    K and V from the context tokens (padding masked out), softmax(Q K^T / sqrt(d)) V, with a residual connection.
    The output projection starts at zero (as LDM's proj_out), so a new block is the identity."""

    def __init__(self, channels: int, context_dim: int, num_heads: int, groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        """x: (B, C, H, W); context: (B, L, context_dim); mask: (B, L) True at real tokens -> (B, C, H, W)."""
        b, c, h, w = x.shape
        heads, length = self.num_heads, context.shape[1]
        q = self.q(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)).reshape(b, h * w, heads, c // heads)
        k, v = self.kv(context.to(q.dtype)).reshape(b, length, 2, heads, c // heads).permute(2, 0, 3, 1, 4)
        attn_mask = mask.to(q.device).view(b, 1, 1, length)  # True = attend; [PAD] keys get no weight
        out = attention(q.transpose(1, 2), k, v, attn_mask)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.reshape(b, h, w, c).permute(0, 3, 1, 2)


# At most this many (query, key) pairs per head, the explicit softmax(QK^T / sqrt(d)) V is faster on CPU than PyTorch's
# fused (flash) kernel. Two runs of benchmarks/bench_attention.py (float32, 2 threads, 16-64 tokens, head dims 8-64):
# 0.93-2.2x for a training call of the kernel, 1.07-1.86x at the UNet's 49 tokens, and up to 2.8x in inference. From
# 196 tokens on the fused kernel wins (0.3-0.9x), and it never materialises the (L_q, L_k) matrix (BENCHMARKS.md,
# "Attention kernels by size").
EXPLICIT_ATTENTION_MAX_PAIRS = 64 * 64
# Under bf16 autocast, up to this many pairs the float32 fused kernel trains 1.09-4x faster than the bf16 one (whose
# backward is slow on CPU); at 1024 tokens bf16 is as fast or up to 1.5x faster, and stays in bf16 (same benchmark).
FLOAT32_ATTENTION_MAX_PAIRS = 256 * 256


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(Q K^T / sqrt(d)) V over (..., L, d) heads (Vaswani et al. 2017, eq. 1); mask: True = attend."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    pairs = q.shape[-2] * k.shape[-2]
    if q.dtype in _REDUCED and pairs <= FLOAT32_ATTENTION_MAX_PAIRS:
        # Short and medium sequences compute in float32 under bf16 autocast, and return the autocast dtype.
        with torch.autocast("cpu", enabled=False):
            return attention(q.float(), k.float(), v.float(), mask).to(q.dtype)
    if pairs > EXPLICIT_ATTENTION_MAX_PAIRS or q.dtype in _REDUCED:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W grid with a residual connection (Ho et al. 2020, App. B)."""

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        # A Linear over the channel axis of the (B, H*W, C) token view is the 1x1 conv of DDPM; with
        # channels_last activations that view is free, so the block makes no layout copies.
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_(nn.Linear(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> same shape."""
        b, c, h, w = x.shape
        heads = self.num_heads
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)
        q, k, v = self.qkv(tokens).reshape(b, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = self.proj(attention(q, k, v).transpose(1, 2).reshape(b, h * w, c))
        return x + out.reshape(b, h, w, c).permute(0, 3, 1, 2)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (Ho et al. 2020, App. B)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling then a 3x3 conv (Ho et al. 2020, App. B)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
