"""The VE SDE family (`--method vesde`): continuous NCSN (Song et al. 2021, eqs. 30-31; docs/maths.md section 5).

alpha = 1 and sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [t_eps, 1] with the noise end at t = 1. Training
is eps matching, as for the VP SDE (vpsde.py): the sigma^2-weighted denoising score matching loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..prediction import PredictionType
from .base import Setting
from .continuous import ContinuousProcess
from .vpsde import SongTimeRange, check_t_eps


@dataclass(frozen=True)
class VESDEPath(SongTimeRange):
    """alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t (Song et al. 2021, eq. 30-31)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_eps: float = 1e-5

    @property
    def log_ratio(self) -> float:
        """log(sigma_max / sigma_min)."""
        return math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t: Tensor) -> Tensor:
        """alpha = 1: the VE SDE only adds noise."""
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha / dt = 0."""
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        """d sigma / dt = sigma(t) log(sigma_max / sigma_min)."""
        return self.sigma(t) * self.log_ratio

    def t_from_ratio(self, r: Tensor) -> Tensor:
        """t with sigma(t) = r (alpha = 1): log(r / sigma_min) / log(sigma_max / sigma_min)."""
        return torch.log(r / self.sigma_min) / self.log_ratio


def check_ve_range(sigma_min: float, sigma_max: float) -> None:
    """One-line errors for a VE noise range that cannot work."""
    if not 0 < sigma_min < sigma_max:
        raise ConfigError(f"need 0 < sigma_min < sigma_max, got sigma_min {sigma_min}, sigma_max {sigma_max}")


class VESDE(ContinuousProcess):
    """Continuous NCSN: eps matching with t ~ U[t_eps, 1] on the VE SDE's perturbation kernel."""

    method = "vesde"
    # sigma_min 0.01 as in Song & Ermon (2019, 2020). sigma_max 50 follows their technique 1 (sigma_1 about the
    # largest pairwise distance of the training data): for MNIST scaled to [-1, 1] that distance is 31.7 (measured
    # on 5,000 training images), so 50 covers it with margin; the 8x8 digits need only ~10 (max pairwise distance
    # 9.6; the digits-* presets use 10). t_eps 1e-5 is Song et al.'s VE epsilon.
    settings = (Setting("sigma_min", 0.01, float, "smallest noise level"),
                Setting("sigma_max", 50.0, float, "largest noise level"),
                Setting("t_eps", 1e-5, float, "data end of the training time range [t_eps, 1]"))
    default_sampler = "pc"  # Song et al. 2021 sample the VE SDE with predictor-corrector (their Table 1)
    sampling_steps = 500

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_eps: float = 1e-5):
        check_ve_range(sigma_min, sigma_max)
        check_t_eps(t_eps)
        super().__init__(VESDEPath(float(sigma_min), float(sigma_max), float(t_eps)), PredictionType.EPS)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings."""
        p = self.path
        return {"sigma_min": p.sigma_min, "sigma_max": p.sigma_max, "t_eps": p.t_eps}
