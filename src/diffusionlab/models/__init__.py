"""Denoising networks (SPEC.md section 8)."""

from __future__ import annotations

from torch import nn

from .unet import UNet, UNetConfig


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of `model` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["UNet", "UNetConfig", "count_parameters"]
