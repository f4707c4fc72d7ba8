"""Discrete-time Gaussian diffusion (DDPM; SPEC.md section 1, Ho et al. 2020).

Forward process q(x_t | x0), its posterior q(x_{t-1} | x_t, x0), the Gaussian KL used by the
variational bound, and the L_simple training loss with an eps, x0 or v target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..denoiser import Denoiser, Network, expand_like
from ..errors import ConfigError
from ..parameterization import Parameterization, Prediction, from_prediction
from ..schedules import NoiseSchedule, make_schedule


def _at(values: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """values[t] for integer steps t (B,), broadcast against x."""
    return expand_like(values.to(t.device)[t.long()], x)


def q_sample(schedule: NoiseSchedule, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, a draw from q(x_t | x0) (DDPM eq. 4)."""
    # sqrt(1 - abar_t) in float64 before the cast: in float32, 1 - abar_t near t = 1 keeps only ~3 digits.
    return _at(schedule.alpha_bar.sqrt(), t, x0) * x0 + _at((1 - schedule.alpha_bar).sqrt(), t, x0) * eps


def q_posterior(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean mu~_t, variance beta~_t and clipped log-variance of q(x_{t-1} | x_t, x0) (DDPM eqs. 6-7)."""
    mean = _at(schedule.posterior_mean_coef1, t, x0) * x0 + _at(schedule.posterior_mean_coef2, t, x_t) * x_t
    var = _at(schedule.posterior_variance, t, x_t)
    log_var = _at(schedule.posterior_log_variance_clipped, t, x_t)
    return mean, var, log_var


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


@dataclass(frozen=True)
class DiscreteVPPath:
    """The DDPM path seen by a Denoiser: alpha(t) = sqrt(abar_t), sigma(t) = sqrt(1 - abar_t), t in {0..T}."""

    schedule: NoiseSchedule

    def alpha(self, t: Tensor) -> Tensor:
        return self.schedule.alpha_bar.to(t.device)[t.round().long()].sqrt()

    def sigma(self, t: Tensor) -> Tensor:
        return (1 - self.schedule.alpha_bar.to(t.device)[t.round().long()]).sqrt()

    def d_alpha(self, t: Tensor) -> None:
        return None  # discrete time: no velocity parameterization

    def d_sigma(self, t: Tensor) -> None:
        return None


class GaussianDiffusion:
    """DDPM training process: schedule name, T, and what the network predicts (eps, x0 or v)."""

    PREDICTIONS = (Parameterization.EPS, Parameterization.X0, Parameterization.V)

    def __init__(self, schedule: str = "linear", T: int = 1000, prediction: str = "eps"):
        self.schedule_name = schedule
        self.schedule = make_schedule(schedule, T)
        self.prediction = Parameterization.parse(prediction)
        if self.prediction not in self.PREDICTIONS:
            raise ConfigError(f"DDPM trains an eps, x0 or v prediction, not {prediction!r}")
        self.path = DiscreteVPPath(self.schedule)

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.schedule.T

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (inverse of `GaussianDiffusion(**config)`)."""
        return {"schedule": self.schedule_name, "T": self.T, "prediction": self.prediction.value}

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training noise for a batch of data of `shape`: t ~ U{1..T} and eps ~ N(0, I) (Algorithm 1, lines 3-4)."""
        t = torch.randint(1, self.T + 1, (shape[0],), generator=generator)
        eps = torch.randn(shape, generator=generator)
        return t, eps

    def target(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """What the network should output at x_t = q_sample(x0, t, eps)."""
        alpha, sigma = _at(self.schedule.alpha_bar.sqrt(), t, x0), _at((1 - self.schedule.alpha_bar).sqrt(), t, x0)
        return from_prediction(Prediction(x0, eps), self.prediction, alpha, sigma)

    def loss(self, net: Network, x0: Tensor, t: Tensor, eps: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-example L_simple = mean over pixels of ||target - net(x_t, t)||^2 (Algorithm 1, line 5)."""
        x_t = q_sample(self.schedule, x0, t, eps)
        t_in = t.to(x0.dtype)
        out = net(x_t, t_in, y) if y is not None else net(x_t, t_in)
        return ((out - self.target(x0, t, eps)) ** 2).flatten(1).mean(1)

    def denoiser(self, net: Network) -> Denoiser:
        """The sampler-facing model of a network trained by this process."""
        return Denoiser(net, self.prediction, self.path)
