"""Discrete noise schedules of Gaussian diffusion (docs/maths.md section 1; Ho et al. 2020, Nichol & Dhariwal 2021).

Convention: every per-step array has length T + 1 and is indexed by the step t itself, so that
`alpha_bar[t]` is abar_t and `alpha_bar[t - 1]` is abar_{t-1} exactly as in the papers. Index 0 is
the clean data: beta_0 = 0, alpha_bar_0 = 1. Arrays are float64 so that products over 1000 steps
and the posterior coefficients near t = 1 keep their precision; samplers cast at use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ConfigError

SCHEDULES = ("linear", "cosine")
SPACINGS = ("uniform", "quadratic")


def linear_betas(T: int) -> Tensor:
    """Ho et al. (2020): beta linear from 1e-4 to 0.02 at T = 1000, both ends scaled by 1000 / T."""
    scale = 1000.0 / T
    return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal (2021) eq. 17: abar(t) = f(t) / f(0), f(t) = cos^2(((t/T) + s) / (1 + s) * pi/2)."""
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    # beta_t = 1 - abar_t / abar_{t-1}, clipped at 0.999 to avoid the singularity at t = T (their section 3.2).
    return torch.clamp(1 - alpha_bar[1:] / alpha_bar[:-1], max=max_beta)


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete variance-preserving schedule: x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) eps.

    `timesteps[k]` is the time the network is told at step k: k itself for a schedule built from
    betas, the kept original steps for a respaced one (Nichol & Dhariwal 2021, section 4).
    """

    alpha_bar: Tensor  # (K + 1,), alpha_bar[0] = 1
    timesteps: Tensor  # (K + 1,), network time of each step; timesteps[0] = 0

    @staticmethod
    def from_betas(betas: Tensor) -> "NoiseSchedule":
        """Build abar_t = prod_{i <= t} (1 - beta_i) from beta_1..beta_T."""
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or len(betas) == 0 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ConfigError("betas must be a non-empty 1-D sequence in (0, 1)")
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        return NoiseSchedule(alpha_bar, torch.arange(len(betas) + 1, dtype=torch.float64))

    @property
    def T(self) -> int:
        """Number of steps."""
        return len(self.alpha_bar) - 1

    @property
    def alpha_bar_prev(self) -> Tensor:
        """abar_{t-1} at index t (index 0 repeats abar_0 = 1)."""
        return torch.cat([self.alpha_bar[:1], self.alpha_bar[:-1]])

    @property
    def alphas(self) -> Tensor:
        """alpha_t = abar_t / abar_{t-1} (= 1 - beta_t)."""
        return self.alpha_bar / self.alpha_bar_prev

    @property
    def betas(self) -> Tensor:
        """beta_t = 1 - alpha_t; beta_0 = 0."""
        return 1 - self.alphas

    @property
    def snr(self) -> Tensor:
        """SNR(t) = abar_t / (1 - abar_t); infinite at t = 0."""
        return self.alpha_bar / (1 - self.alpha_bar)

    @property
    def posterior_variance(self) -> Tensor:
        """beta~_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t; beta~_1 = 0 and beta~_0 := 0."""
        out = (1 - self.alpha_bar_prev) / (1 - self.alpha_bar) * self.betas
        out[0] = 0.0
        return out

    @property
    def posterior_log_variance_clipped(self) -> Tensor:
        """log beta~_t with the -inf at t = 1 replaced by log beta~_2 (iDDPM reference code; docs/maths.md section 2)."""
        var = self.posterior_variance.clone()
        if self.T >= 2:
            var[1] = var[2]
        var[0] = var[1]
        return torch.log(var)

    @property
    def posterior_mean_coef1(self) -> Tensor:
        """Coefficient of x0 in mu~_t: sqrt(abar_{t-1}) beta_t / (1 - abar_t)."""
        out = self.alpha_bar_prev.sqrt() * self.betas / (1 - self.alpha_bar)
        out[0] = 1.0
        return out

    @property
    def posterior_mean_coef2(self) -> Tensor:
        """Coefficient of x_t in mu~_t: sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t)."""
        out = self.alphas.sqrt() * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        out[0] = 0.0
        return out

    def respace(self, keep: Tensor | list[int]) -> "NoiseSchedule":
        """Keep the steps `keep` (a subset of 1..T): abar'_k = abar_{keep[k]}, beta'_k = 1 - abar'_k / abar'_{k-1}."""
        keep = torch.as_tensor(keep, dtype=torch.long).sort().values
        if len(keep) == 0 or keep[0] < 1 or keep[-1] > self.T or len(torch.unique(keep)) != len(keep):
            raise ConfigError(f"respacing needs distinct steps in 1..{self.T}")
        idx = torch.cat([torch.zeros(1, dtype=torch.long), keep])
        return NoiseSchedule(self.alpha_bar[idx], self.timesteps[idx])


def make_schedule(name: str, T: int) -> NoiseSchedule:
    """The schedule called `name` ('linear' or 'cosine') with T steps."""
    if T < 1:
        raise ConfigError(f"T must be >= 1, got {T}")
    if name == "linear":
        return NoiseSchedule.from_betas(linear_betas(T))
    if name == "cosine":
        return NoiseSchedule.from_betas(cosine_betas(T))
    raise ConfigError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")


def spaced_timesteps(T: int, K: int, spacing: str = "uniform") -> Tensor:
    """K distinct steps in 1..T, always including T: 'uniform' or 'quadratic' (DDIM, Song et al. 2021, App. D.2).

    Quadratic spacing puts more steps near t = 1, where the image details are decided.
    """
    if not 1 <= K <= T:
        raise ConfigError(f"number of sampling steps must be in 1..{T}, got {K}")
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    u = torch.linspace(0, 1, K, dtype=torch.float64) if K > 1 else torch.ones(1, dtype=torch.float64)
    if spacing == "quadratic":
        u = u**2
    steps = (1 + u * (T - 1)).round().long()
    # Rounding may merge neighbours near t = 1; push duplicates up, then pull back under T.
    for i in range(1, K):
        steps[i] = max(int(steps[i]), int(steps[i - 1]) + 1)
    for i in range(K - 1, -1, -1):
        limit = T if i == K - 1 else int(steps[i + 1]) - 1
        steps[i] = min(int(steps[i]), limit)
    steps[-1] = T
    return steps
