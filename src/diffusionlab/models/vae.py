"""The convolutional variational autoencoder, a baseline the seeds compare diffusion with (Kingma & Welling 2014;
docs/maths.md section 9).

Encoder E: x -> q(z | x) = N(mu(x), diag sigma(x)^2) over a flat z in R^d; decoder: z -> the parameters of
p(x | z), one distribution per pixel (baselines/vae.py turns them into log-likelihoods over 256 bins). Both are
DCGAN-shaped stacks: stride-2 4x4 convolutions down, stride-2 transposed convolutions up, GroupNorm and SiLU, one
linear layer between the last feature map and z. A conditional VAE (Sohn et al. 2015) appends the one-hot label to
the encoder's features and to z.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import validation as v
from ..errors import ConfigError
from .autoencoder import DiagonalGaussian
from .config import ConvStackConfig

# What the decoder's output means, and how many numbers per pixel it takes.
LIKELIHOODS = {"logistic": 2, "gaussian": 2, "bernoulli": 1}


@dataclass
class VAEConfig(ConvStackConfig):
    """Hyper-parameters of `ConvVAE`; validated on construction (one-line ConfigErrors)."""

    label: ClassVar[str] = "VAE config"
    likelihood: str = "logistic"  # p(x | z): a key of LIKELIHOODS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"model.likelihood must be one of {', '.join(LIKELIHOODS)}, got {v.show(self.likelihood)}")

    @classmethod
    def check_dict(cls, d: dict[str, Any], section: str | None = None) -> dict[str, Any]:
        """The typed check, and the likelihood's name."""
        values = super().check_dict(d, section)
        if "likelihood" in values and values["likelihood"] not in LIKELIHOODS:
            raise ConfigError(f"{section + '.' if section else ''}likelihood must be one of {', '.join(LIKELIHOODS)}, "
                              f"got {v.show(values['likelihood'])}")
        return values


def elbo_terms(posterior: DiagonalGaussian, log_likelihood: Callable[[Tensor], Tensor], noise: Tensor
               ) -> tuple[Tensor, Tensor]:
    """(log p(x | z) at z = mu + sigma * noise, KL(q(z | x) || N(0, I))) per example: the reparameterized one-sample
    estimate of E_q log p(x | z), and the KL in closed form (Kingma & Welling 2014, eq. 10 and appendix B)."""
    z = posterior.sample(noise)
    return log_likelihood(z), posterior.kl()


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, ch // 4) if ch >= 8 else 1, ch)


class ConvVAE(nn.Module):
    """encode(x, y) -> DiagonalGaussian over z; decode(z, y) -> the per-pixel parameters of p(x | z)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        chs = c.widths
        self.num_classes = c.num_classes or 0
        down: list[nn.Module] = [nn.Conv2d(c.in_channels, c.base_channels, 3, padding=1), nn.SiLU()]
        ch = c.base_channels
        for out in chs:
            down += [nn.Conv2d(ch, out, 4, stride=2, padding=1), _norm(out), nn.SiLU()]
            ch = out
        self.encoder = nn.Sequential(*down)
        features = int(torch.tensor(c.bottom).prod())
        self.to_moments = nn.Linear(features + self.num_classes, 2 * c.latent_dim)
        self.from_z = nn.Linear(c.latent_dim + self.num_classes, features)
        up: list[nn.Module] = []
        for out in [*reversed(chs[:-1]), c.base_channels]:
            up += [_norm(ch), nn.SiLU(), nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1)]
            ch = out
        up += [_norm(ch), nn.SiLU(), nn.Conv2d(ch, c.in_channels * LIKELIHOODS[c.likelihood], 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def _with_label(self, h: Tensor, y: Tensor | None) -> Tensor:
        if not self.num_classes:
            return h
        if y is None:
            raise ValueError("a conditional VAE needs labels y")
        return torch.cat([h, F.one_hot(y.long(), self.num_classes).to(h.dtype)], dim=1)

    def forward(self, x: Tensor, noise: Tensor, y: Tensor | None, log_likelihood: Callable[[Tensor], Tensor]
                ) -> tuple[Tensor, Tensor]:
        """`elbo_terms` of images x in [-1, 1], with log_likelihood(decoder parameters) -> log p(x | z) per example.
        Training calls the network this way, so that a data-parallel wrapper sees the whole computation."""
        return elbo_terms(self.encode(x, y), lambda z: log_likelihood(self.decode(z, y)), noise)

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """q(z | x) (and y) for x in [-1, 1]."""
        return DiagonalGaussian(self.to_moments(self._with_label(self.encoder(x).flatten(1), y)))

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The decoder's parameters, (B, k C, H, W) with k = LIKELIHOODS[likelihood]."""
        h = self.from_z(self._with_label(z, y)).view(len(z), *self.config.bottom)
        return self.decoder(h)


__all__ = ["LIKELIHOODS", "ConvVAE", "VAEConfig", "elbo_terms"]
