"""Gaussian paths x_t = alpha(t) x0 + sigma(t) eps, and everything derived from alpha and sigma, in one place.

Every model family declares one path (processes/ddpm.py, flow.py, vpsde.py, vesde.py; NCSN reuses VE's). A path
answers alpha(t), sigma(t) and their time derivatives; what the samplers need beyond that is computed here
once, from those two numbers:

- the VE noise level sigma~(t) = sigma(t) / alpha(t) (Karras et al. 2022, Table 1: x~ = x_t / alpha(t) is the
  data plus N(0, sigma~^2) noise), and its inverse `path.t_from_ratio`;
- the VP view abar(t) = alpha^2 / (alpha^2 + sigma^2), x_t / sqrt(alpha^2 + sigma^2) (DDPM/DDIM on any path);
- the time range a sampler may use (END_CLIP inside an end where sigma~ is infinite or zero) and its sigma~
  range, with EDM's cap sigma_max <= 80 for the sigma-space samplers.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from .errors import ConfigError
from .schedules import SPACINGS, NoiseSchedule

# Where sigma~ = sigma / alpha is infinite (alpha = 0: flow matching's t = 0) or zero (sigma = 0), sampling
# starts (ends) this fraction of the time range inside the path's end instead: for the OT path that is
# t = 1e-3, sigma~ = 999, where x_t = alpha x~ with x~ ~ N(0, sigma~^2 I) matches x_t ~ N(0, (1 + 1e-6) I).
END_CLIP = 1e-3
# EDM's sigma_max (Karras et al. 2022, section 5 and Table 1). A cosine DDPM reaches sigma~ = 2e4 at t = T, and a
# grid spread over [sigma_min, 2e4] wastes its steps where x~ is pure noise (Heun-18 on Gaussian data: std 0.43
# for 0.30, against 0.32 from 80). Starting at 80 from N(0, 80^2 I) instead of q_80 costs a variance mismatch of
# 1 part in 80^2 / Var(data) and a mean offset of mean(data) / 80 that the flow shrinks by Std(data) / 80.
SIGMA_MAX_CAP = 80.0


class GaussianPath(Protocol):
    """x_t = alpha(t) x0 + sigma(t) eps, with t the time the network is given (before its `time_scale`)."""

    def alpha(self, t: Tensor) -> Tensor: ...

    def sigma(self, t: Tensor) -> Tensor: ...

    def d_alpha(self, t: Tensor) -> Tensor | None: ...

    def d_sigma(self, t: Tensor) -> Tensor | None: ...

    @property
    def t_noise(self) -> float:
        """The time at the noise end of the trained range (sampling starts here)."""
        ...

    @property
    def t_data(self) -> float:
        """The time at the data end of the trained range (sampling ends here)."""
        ...

    def t_from_ratio(self, r: Tensor) -> Tensor:
        """The time t at which sigma(t) / alpha(t) = r, on [t_data, t_noise]."""
        ...


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example (B,) or scalar coefficient to broadcast against x of shape (B, ...)."""
    v = v.to(device=x.device, dtype=x.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def batch_time(t: Tensor | float, x: Tensor) -> Tensor:
    """t as a float tensor of shape (B,) on x's device."""
    t = torch.as_tensor(t, dtype=torch.float64 if not torch.is_tensor(t) else None)
    t = t.to(x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t


def is_continuous(path: GaussianPath) -> bool:
    """Whether the path has time derivatives (continuous time), which the velocity and the ode-* solvers need."""
    t = torch.tensor([float(path.t_data)], dtype=torch.float64)
    return path.d_alpha(t) is not None and path.d_sigma(t) is not None


def sigma_tilde(path: GaussianPath, t: Tensor) -> Tensor:
    """sigma~(t) = sigma(t) / alpha(t), the VE noise level of x~ = x_t / alpha(t) (inf where alpha = 0)."""
    alpha, sigma = path.alpha(t).double(), path.sigma(t).double()
    return torch.where(alpha > 0, sigma / alpha, torch.full_like(sigma, math.inf))


def vp_scale(path: GaussianPath, t: Tensor) -> Tensor:
    """sqrt(alpha^2 + sigma^2): x_t divided by it is sqrt(abar) x0 + sqrt(1 - abar) eps (the VP view)."""
    return (path.alpha(t) ** 2 + path.sigma(t) ** 2).sqrt()


def vp_alpha_bar(path: GaussianPath, t: Tensor) -> Tensor:
    """abar(t) = alpha^2 / (alpha^2 + sigma^2) = 1 / (1 + sigma~^2), the VP view's alpha_bar (float64)."""
    alpha, sigma = path.alpha(t).double(), path.sigma(t).double()
    return alpha**2 / (alpha**2 + sigma**2)


def _ratio_at(path: GaussianPath, t: float) -> float:
    return float(sigma_tilde(path, torch.tensor([t], dtype=torch.float64))[0])


def time_range(path: GaussianPath) -> tuple[float, float]:
    """(t at the noise end, t at the data end), moved END_CLIP inside an end where sigma~ is infinite or 0."""
    t_noise, t_data = float(path.t_noise), float(path.t_data)
    span = t_data - t_noise
    if not math.isfinite(_ratio_at(path, t_noise)):
        t_noise += END_CLIP * span
    if not _ratio_at(path, t_data) > 0:
        t_data -= END_CLIP * span
    return t_noise, t_data


def sigma_range(path: GaussianPath, cap: float | None = None) -> tuple[float, float]:
    """(sigma~_min, sigma~_max) at the data and noise ends of `time_range()`; sigma~_max at most `cap` if given."""
    t_noise, t_data = time_range(path)
    s_min, s_max = _ratio_at(path, t_data), _ratio_at(path, t_noise)
    return s_min, s_max if cap is None else min(s_max, cap)


def vp_schedule(path: GaussianPath, steps: int, spacing: str = "uniform") -> NoiseSchedule:
    """A K-step VP `NoiseSchedule` of a continuous path, for the DDPM/DDIM samplers: times on `time_range()`,
    uniform ('uniform') or denser at the data end ('quadratic', DDIM's App. D.2 spacing), abar_k from
    `vp_alpha_bar`, and the continuous t as each step's network time."""
    if steps < 1:
        raise ConfigError(f"number of sampling steps must be >= 1, got {steps}")
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    t_noise, t_data = time_range(path)
    k = torch.arange(1, steps + 1, dtype=torch.float64)
    if spacing == "uniform":
        t = t_data + (t_noise - t_data) * k / steps
    else:
        t = t_data + (t_noise - t_data) * (k / steps) ** 2
    one = torch.ones(1, dtype=torch.float64)
    return NoiseSchedule(torch.cat([one, vp_alpha_bar(path, t)]), torch.cat([t_data * one, t]))


__all__ = ["END_CLIP", "SIGMA_MAX_CAP", "GaussianPath", "batch_time", "expand_like", "is_continuous", "sigma_range",
           "sigma_tilde", "time_range", "vp_alpha_bar", "vp_scale", "vp_schedule"]
