"""A perceptual distance from a network of our own: LPIPS without its learned layer weights.

Zhang et al. (2018) compare unit-normalised activations of a classifier, layer by layer:
d(x, y) = sum_l mean_{h,w} || n(f_l(x)) - n(f_l(y)) ||^2, with n(v) = v / ||v|| over the channels at each position
(their "baseline" distance, before the learned per-channel weights). No ImageNet network is downloaded here: f is
the domain classifier trained on the run's own data (evaluation/extractors.py, the FID feature network), frozen.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FeatureDistance(nn.Module):
    """d(x, y) per example over the activations after every ReLU of a frozen `body` (an nn.Sequential)."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body.eval().requires_grad_(False)
        self.taps = [i for i, m in enumerate(body) if isinstance(m, nn.ReLU)]
        if not self.taps:
            raise ValueError("the feature network has no ReLU to tap")

    def train(self, mode: bool = True) -> "FeatureDistance":
        """Stay in eval mode (the feature network's BatchNorm statistics are frozen)."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """d(x, y), shape (B,); x and y in [-1, 1], gradients flow to both."""
        h = torch.cat([x, y])
        total = torch.zeros(len(x), device=x.device, dtype=torch.float32)
        for i, layer in enumerate(self.body):
            h = layer(h)
            if i in self.taps:
                n = h.float() / (h.float().norm(dim=1, keepdim=True) + 1e-10)
                fx, fy = n.chunk(2)
                total = total + ((fx - fy) ** 2).sum(1).flatten(1).mean(1)
            if i == self.taps[-1]:
                break
        return total


__all__ = ["FeatureDistance"]
