"""The flow-matching family (`--method flow`): conditional flow matching on the optimal-transport path
(Lipman et al. 2023; docs/maths.md section 6).

docs/maths.md's time convention (section 6): t = 0 is noise, t = 1 is data. The conditional OT path is
psi_t(x0) = (1 - (1 - sigma_min) t) x0 + t x1, with the x0 ~ N(0, I) of docs/maths.md section 6 the noise and x1 the data.
This repo calls the data x0 and the noise eps (the Denoiser contract), so here

    maths.md x1 (data)  -> x0    maths.md x0 (noise) -> eps
    x_t = alpha(t) x0 + sigma(t) eps,   alpha(t) = t,   sigma(t) = 1 - (1 - sigma_min) t

and the conditional target d psi_t / dt = x1 - (1 - sigma_min) x0 (Lipman et al. eq. 23) reads
alpha'(t) x0 + sigma'(t) eps = x0 - (1 - sigma_min) eps: exactly `PredictionType.VELOCITY`.
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


@dataclass(frozen=True)
class OTFlowPath:
    """mu_t = t x1, sigma_t = 1 - (1 - sigma_min) t (Lipman et al. 2023, eq. 20): noise at t = 0, data at t = 1."""

    sigma_min: float = 1e-4
    t_noise = 0.0  # sampling starts here: x_0 ~ N(0, I) exactly (a constant, not a field)
    t_data = 1.0  # x_1 = data + sigma_min eps

    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t) = t: the weight of the data (mu_t = t x1)."""
        return t

    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) = 1 - (1 - sigma_min) t: the weight of the noise."""
        return 1 - (1 - self.sigma_min) * t

    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha / dt = 1."""
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        """d sigma / dt = -(1 - sigma_min)."""
        return torch.full_like(t, -(1 - self.sigma_min))

    def t_from_ratio(self, r: Tensor) -> Tensor:
        """t with sigma(t) / alpha(t) = r: r t = 1 - (1 - sigma_min) t, so t = 1 / (r + 1 - sigma_min)."""
        return 1 / (r + 1 - self.sigma_min)


class FlowMatching(ContinuousProcess):
    """L_CFM = E_{t ~ U[0, 1]} || v_theta(psi_t, t) - (x1 - (1 - sigma_min) x0) ||^2 (docs/maths.md section 6)."""

    method = "flow"
    # sigma_min of the OT path: small, so that x_1 is the data up to a barely visible blur.
    settings = (Setting("sigma_min", 1e-4, float, "the OT path's sigma_min"),)
    default_sampler = "ode-euler"  # docs/maths.md section 6: integrate dx/dt = v_theta from t = 0 to 1

    def __init__(self, sigma_min: float = 1e-4):
        if not 0.0 <= sigma_min < 1.0:
            raise ConfigError(f"flow sigma_min must be in [0, 1), got {sigma_min}")
        super().__init__(OTFlowPath(float(sigma_min)), PredictionType.VELOCITY)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings."""
        return {"sigma_min": self.path.sigma_min}
