"""The VP SDE family (`--method vpsde`): continuous DDPM (Song et al. 2021, "Score-based generative modeling
through SDEs", eqs. 32-33; docs/maths.md section 5).

The perturbation kernel is a Gaussian path x_t = alpha(t) x0 + sigma(t) eps with t in [t_eps, 1] and the noise end
at t = 1. Training is continuous-time denoising score matching with lambda(t) = sigma(t)^2 (their eq. 7 and
section 3.3): sigma^2 || s_theta + eps / sigma ||^2 = || eps_theta - eps ||^2 for s_theta = -eps_theta / sigma,
so the network is an eps predictor and the loss is eps matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..prediction import PredictionType
from .base import Setting
from .continuous import ContinuousProcess


class SongTimeRange:
    """Song et al. (2021)'s time range: the noise end at t = 1, the data end at t = t_eps > 0 (a field of the path)."""

    t_eps: float
    t_noise = 1.0

    @property
    def t_data(self) -> float:
        """The data end of the range: t_eps (sigma(0) = 0 or the score's 1 / sigma blows up at t = 0)."""
        return self.t_eps


@dataclass(frozen=True)
class VPSDEPath(SongTimeRange):
    """beta(t) = beta_min + t (beta_max - beta_min); alpha(t) = exp(-B(t) / 2), sigma = sqrt(1 - alpha^2) (Song et al. eq. 32-33)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_eps: float = 1e-3

    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Tensor) -> Tensor:
        """B(t) = int_0^t beta(s) ds = beta_min t + t^2 (beta_max - beta_min) / 2."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t) = exp(-B(t) / 2), the mean coefficient of the VP kernel (eq. 33)."""
        return torch.exp(-0.5 * self.integral_beta(t))

    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) = sqrt(1 - alpha(t)^2)."""
        # 1 - alpha^2 = -expm1(-B): exact near t = 0, where 1 - exp(-B) would cancel.
        return torch.sqrt(-torch.expm1(-self.integral_beta(t)))

    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha / dt = -beta(t) alpha(t) / 2."""
        return -0.5 * self.beta(t) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        """d sigma / dt = beta(t) alpha(t)^2 / (2 sigma(t))."""
        # sigma^2 = 1 - alpha^2  =>  sigma' = -alpha alpha' / sigma = beta alpha^2 / (2 sigma).
        return 0.5 * self.beta(t) * self.alpha(t) ** 2 / self.sigma(t)

    def t_from_ratio(self, r: Tensor) -> Tensor:
        """t with sigma/alpha = r: r^2 = e^B - 1, so B = log(1 + r^2); t is the positive root of B(t) = B."""
        B = torch.log1p(r**2)
        d = self.beta_max - self.beta_min
        # (-b_min + sqrt(b_min^2 + 2 d B)) / d, written without the cancellation (and valid for d = 0).
        return 2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * B))


def check_t_eps(t_eps: float) -> None:
    """t_eps is the data end of the training range (0, 1)."""
    if not 0 < t_eps < 1:
        raise ConfigError(f"t_eps must be in (0, 1), got {t_eps}")


class VPSDE(ContinuousProcess):
    """Continuous DDPM: eps matching with t ~ U[t_eps, 1] on the VP SDE's perturbation kernel."""

    method = "vpsde"
    # Song et al. (2021), section C: beta_min 0.1, beta_max 20; t_eps 1e-3 (their VP sampling epsilon).
    settings = (Setting("beta_min", 0.1, float, "beta(0)"),
                Setting("beta_max", 20.0, float, "beta(1)"),
                Setting("t_eps", 1e-3, float, "data end of the training time range [t_eps, 1]"))
    default_sampler = "heun"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, t_eps: float = 1e-3):
        if not 0 <= beta_min <= beta_max or beta_max <= 0:
            raise ConfigError(f"need 0 <= beta_min <= beta_max and beta_max > 0, got {beta_min}, {beta_max}")
        check_t_eps(t_eps)
        super().__init__(VPSDEPath(float(beta_min), float(beta_max), float(t_eps)), PredictionType.EPS)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings."""
        p = self.path
        return {"beta_min": p.beta_min, "beta_max": p.beta_max, "t_eps": p.t_eps}


