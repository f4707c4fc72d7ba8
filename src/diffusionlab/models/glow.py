"""Glow, the normalizing flow for images (Kingma & Dhariwal 2018), a baseline the seeds compare diffusion with
(docs/maths.md section 9): an invertible x <-> (z_1, ..., z_L) with an exact log-determinant, so
    log p(x) = sum_i log N(z_i; mu_i, sigma_i) + log |det dz / dx|.

The blocks are `normflows`' (Stimper et al. 2023): each step of flow is actnorm, an invertible 1x1 convolution
(LU-parametrised) and an affine coupling layer (`GlowBlock`); `Squeeze` trades space for channels; `Merge` is
the multi-scale split (RealNVP's factor-out: half the channels leave as z_i at each level). Only the assembly is
ours: the level layout below, the class-conditional prior (`GlowBase`, Glow's "learned prior" with a class term)
and the direction names. normflows calls the map z -> x "forward"; here `latents(x)` is data -> noise and
`decode(z)` is noise -> data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import validation as v
from .config import SizedConfig, check_levels


@dataclass
class GlowConfig(SizedConfig):
    """Hyper-parameters of `Glow`; validated on construction (one-line ConfigErrors)."""

    label: ClassVar[str] = "Glow config"
    RANGES: ClassVar[dict[str, v.Range]] = {
        "image_size": v.at_least(1, v.MAX_IMAGE_SIDE), "in_channels": v.at_least(1), "levels": v.at_least(1, 8),
        "depth": v.at_least(1, 256), "hidden_channels": v.at_least(1), "num_classes": v.at_least(1)}

    image_size: int | tuple[int, int]
    in_channels: int = 1
    levels: int = 2  # L: squeezes (H must be a multiple of 2^L); a split after each but the last
    depth: int = 8  # K: steps of flow per level
    hidden_channels: int = 64  # width of each coupling layer's 3-layer CNN
    num_classes: int | None = None  # a class-conditional prior when set

    def __post_init__(self) -> None:
        if isinstance(self.image_size, (list, tuple)):
            self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        check_levels(self.height_width, self.levels, "Glow")

    @staticmethod
    def min_parameters(values: dict[str, Any]) -> int:
        """The coupling networks' middle 1x1 convolutions."""
        return values["levels"] * values["depth"] * values["hidden_channels"] ** 2

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """Shapes of z_1 (the coarsest, kept to the end) ... z_L (the first factored out), normflows' order."""
        c, (h, w), L = self.in_channels, self.height_width, self.levels
        shapes = []
        for i in range(L):
            f = 2 ** (L - i)
            shapes.append((c * 2 ** (L + 1) if i == 0 else c * f, h // (2**L) if i == 0 else h // f,
                           w // (2**L) if i == 0 else w // f))
        return shapes

    def level_channels(self, i: int) -> int:
        """Channels the steps of flow at level i (0 = coarsest) act on."""
        return self.in_channels * 2 ** (self.levels + 1 - i)


class Glow(nn.Module):
    """The multi-scale Glow of `GlowConfig` over x in R^{C x H x W} (continuous: dequantize 8-bit data first)."""

    def __init__(self, config: GlowConfig) -> None:
        super().__init__()
        import warnings

        import normflows as nf

        self.config = c = config
        q0, flows, merges = [], [], []
        for i, shape in enumerate(c.latent_shapes()):
            with warnings.catch_warnings():  # normflows' LU set-up calls torch.lu, deprecated but correct
                warnings.simplefilter("ignore", UserWarning)
                steps: list[nn.Module] = [nf.flows.GlowBlock(c.level_channels(i), c.hidden_channels,
                                                             split_mode="channel", scale=True) for _ in range(c.depth)]
            flows.append([*steps, nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
            q0.append(nf.distributions.GlowBase(shape, num_classes=c.num_classes))
        self.flow = nf.MultiscaleFlow(q0, flows, merges, class_cond=c.num_classes is not None)
        self.dims = c.in_channels * c.height_width[0] * c.height_width[1]

    def latents(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """x -> ([z_1, ..., z_L], log |det dz / dx|) per example."""
        return self.flow.inverse_and_log_det(x)

    def decode(self, z: list[Tensor]) -> Tensor:
        """[z_1, ..., z_L] -> x (the inverse of `latents`)."""
        return self.flow.forward_and_log_det(z)[0]

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) per example (`log_prob`; training calls the network, so a data-parallel wrapper sees it)."""
        return self.flow.log_prob(x, y)

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """log p(x) in nats per example: the prior's log-density of the latents plus the log-determinant."""
        return self.flow.log_prob(x, y)

    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n draws of x (the prior's noise comes from torch's global generator: seed it, or fork it, first)."""
        return self.flow.sample(n, y)[0]


def initialize(model: Glow, x: Tensor, y: Tensor | None = None) -> None:
    """Glow's data-dependent actnorm initialisation (each actnorm's output has zero mean, unit variance on x)."""
    with torch.no_grad():
        model.log_prob(x, y)


def initialized(model: Glow) -> bool:
    """Have the actnorms been initialised (by `initialize`, the first forward pass, or a loaded checkpoint)?"""
    flags = [m.data_dep_init_done for m in model.modules() if hasattr(m, "data_dep_init_done")]
    return all(bool(f > 0) for f in flags)


__all__ = ["Glow", "GlowConfig", "initialize", "initialized"]
