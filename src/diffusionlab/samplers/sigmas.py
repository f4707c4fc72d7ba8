"""Noise-level grids for the sigma-space samplers: sigma~_0 = sigma_max > ... > sigma~_{N-1} = sigma_min, then 0.

sigma~ is the VE noise level sigma(t) / alpha(t) of any Gaussian path (Karras et al. 2022, Table 1). Every
grid has N + 1 entries: N noise levels and the final 0, where the last step lands on the data.

- karras: EDM's rho = 7 spacing on [sigma_min, sigma_max] (the default);
- loguniform: geometric, uniform in log-SNR;
- time: uniform in the model's own time from t(sigma_max) to the data (DPM-Solver's "time uniform"); sigma_max is
  the capped 80 of the sigma-space samplers, so on a DDPM this is our grid, not diffusers';
- linspace: diffusers' default `timestep_spacing="linspace"` on a discrete DDPM, exactly: its integer steps
  round(linspace(0, T - 1, N + 1)) reversed, without the last (plus one: diffusers counts steps from 0), with
  sigma~ at those steps and no cap.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError

SPACINGS = ("karras", "loguniform", "time", "linspace")


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    if n < 1:
        raise ConfigError(f"the number of steps must be >= 1, got {n}")
    if not 0 < sigma_min <= sigma_max or not math.isfinite(sigma_max):
        raise ConfigError(f"need 0 < sigma_min <= sigma_max < inf, got {sigma_min}, {sigma_max}")


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM's spacing (Karras et al. 2022, eq. 5): sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho.

    rho = 7 shortens the steps near sigma_min, where the truncation error of the ODE is largest (their Fig. 13).
    """
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def loguniform_sigmas(n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """A geometric ladder from sigma_max to sigma_min (NCSN's noise levels, Song & Ermon 2019), then 0."""
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    sigmas = torch.exp(math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max)))
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def time_uniform_sigmas(ratio: Callable[[Tensor], Tensor], n: int, t_noise: float, t_clean: float) -> Tensor:
    """sigma~(t_i) at t_i = t_noise + (i / n) (t_clean - t_noise), i = 0..n-1, then 0: uniform steps in the path's time.

    This is DPM-Solver's "time uniform" step schedule (Lu et al. 2022a). `t_clean` is where the data sits (step 0 of
    a DDPM), so the last level is one step above it and the last step lands on sigma = 0. `ratio(t)` is the path's
    sigma(t) / alpha(t).
    """
    if n < 1:
        raise ConfigError(f"the number of steps must be >= 1, got {n}")
    t = t_noise + torch.arange(n, dtype=torch.float64) / n * (t_clean - t_noise)
    sigmas = ratio(t).to(torch.float64)
    if not bool(torch.isfinite(sigmas).all()) or not bool((sigmas[:-1] > sigmas[1:]).all()) or float(sigmas[-1]) <= 0:
        raise ConfigError("the time-uniform grid needs sigma~(t) finite, positive and decreasing towards the data")
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def linspace_steps(T: int, n: int) -> Tensor:
    """diffusers' `linspace` timesteps of a T-step DDPM as our 1-based steps: round(linspace(0, T - 1, n + 1)),
    reversed, the last (0) dropped, plus one. Rounding is half to even, as numpy's."""
    if not 1 <= n <= T:
        raise ConfigError(f"the linspace grid needs 1 <= steps <= T = {T}, got {n}")
    steps = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]  # numpy's linspace, as diffusers computes it
    return torch.from_numpy(steps.astype(np.int64)) + 1


def make_sigmas(spacing: str, n: int, sigma_min: float, sigma_max: float) -> Tensor:
    """The grid called `spacing` ('karras' or 'loguniform'; 'time' and 'linspace' need the model: `sampling.sigma_grid`)."""
    if spacing in ("time", "linspace"):
        raise ConfigError(f"the {spacing!r} grid needs the model's path: use diffusionlab.sampling.sigma_grid")
    if spacing == "karras":
        return karras_sigmas(n, sigma_min, sigma_max)
    if spacing == "loguniform":
        return loguniform_sigmas(n, sigma_min, sigma_max)
    raise ConfigError(f"unknown sigma spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
