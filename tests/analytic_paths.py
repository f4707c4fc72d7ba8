"""A continuous Gaussian path with derivatives and its Bayes-optimal network, for the time-space solver tests.

`OTPath` is flow matching's conditional OT path in the source's convention (SPEC.md section 6: t = 0 noise,
t = 1 data): x_t = alpha(t) x1 + sigma(t) x0 with alpha(t) = t, sigma(t) = 1 - (1 - sigma_min) t. It is
minimal on purpose: the library's path classes belong to the training processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffusionlab.analytic import GaussianMixture
from diffusionlab.denoiser import expand_like
from diffusionlab.parameterization import Parameterization, from_prediction


@dataclass(frozen=True)
class OTPath:
    """alpha(t) = t, sigma(t) = 1 - (1 - sigma_min) t, t in [0, 1] (Lipman et al. 2023, eq. 20)."""

    sigma_min: float = 1e-4
    t_noise: float = 0.0
    t_data: float = 1.0

    def alpha(self, t: Tensor) -> Tensor:
        return t.to(torch.float64)

    def sigma(self, t: Tensor) -> Tensor:
        return 1 - (1 - self.sigma_min) * t.to(torch.float64)

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t, dtype=torch.float64)

    def d_sigma(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1 - self.sigma_min), dtype=torch.float64)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        """r = (1 - c t) / t with c = 1 - sigma_min, so t = 1 / (r + c)."""
        return 1 / (r.to(torch.float64) + 1 - self.sigma_min)


class PathNet:
    """The Bayes-optimal network of kind `prediction` for `data` on a continuous `path`: net(x_t, t)."""

    def __init__(self, data: GaussianMixture, path: OTPath, prediction: str = "velocity"):
        self.data, self.path, self.prediction = data, path, Parameterization.parse(prediction)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = t.to(torch.float64)
        p = self.path
        a, b = p.alpha(t).to(x.dtype), p.sigma(t).to(x.dtype)
        pred = self.data.posterior_mean(x, a, b)
        coef = [expand_like(c, x) for c in (a, b, p.d_alpha(t), p.d_sigma(t))]
        return from_prediction(pred, self.prediction, *coef)
