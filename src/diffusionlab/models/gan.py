"""DCGAN's generator and discriminator (Radford et al. 2016), a baseline the seeds compare diffusion with (Goodfellow
et al. 2014; docs/maths.md section 9).

G: z ~ N(0, I_d) -> a feature map at H / 2^L -> L stride-2 4x4 transposed convolutions, batch norm and ReLU
(tanh at the end) -> an image in [-1, 1]. D: L stride-2 4x4 convolutions with batch norm (not on the first, as
DCGAN) and LeakyReLU(0.2) -> one logit. A conditional GAN feeds the label to G as a learned embedding concatenated
with z (Mirza & Osindero 2014) and to D by projection, logit += <embed(y), phi(x)> (Miyato & Koyama 2018).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from .config import ConvStackConfig


@dataclass
class GANConfig(ConvStackConfig):
    """Hyper-parameters of `Generator` and `Discriminator`; validated on construction (one-line ConfigErrors)."""

    label: ClassVar[str] = "GAN config"
    base_channels: int = 64  # G's last and D's first width
    latent_dim: int = 64


class Generator(nn.Module):
    """G(z, y) -> images in [-1, 1]."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.num_classes, c.latent_dim) if c.num_classes else None
        z_in = c.latent_dim * (2 if self.embed is not None else 1)
        self.project = nn.Sequential(nn.Linear(z_in, int(torch.tensor(c.bottom).prod()), bias=False))
        ch = c.widths[-1]
        layers: list[nn.Module] = [nn.BatchNorm2d(ch), nn.ReLU()]
        for out in reversed(c.widths[:-1]):
            layers += [nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            ch = out
        layers += [nn.ConvTranspose2d(ch, c.in_channels, 4, stride=2, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Images for latents z (B, d) and labels y (B,) when conditional."""
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs labels y")
            z = torch.cat([z, self.embed(y.long())], dim=1)
        return self.body(self.project(z).view(len(z), *self.config.bottom))


class Discriminator(nn.Module):
    """D(x, y) -> one logit per image (the log-odds that x is real)."""

    def __init__(self, config: GANConfig) -> None:
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = []
        ch = c.in_channels
        for i, out in enumerate(c.widths):
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1, bias=i == 0)]
            layers += [nn.LeakyReLU(0.2)] if i == 0 else [nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        self.body = nn.Sequential(*layers, nn.Flatten())
        features = int(torch.tensor(c.bottom).prod())
        self.logit = nn.Linear(features, 1)
        self.embed = nn.Embedding(c.num_classes, features) if c.num_classes else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits (B,)."""
        h = self.body(x)
        out = self.logit(h).squeeze(1)
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional discriminator needs labels y")
            out = out + (self.embed(y.long()) * h).sum(1)  # the projection term
        return out


__all__ = ["Discriminator", "GANConfig", "Generator"]
