"""Deterministic sigma-space samplers on the probability-flow ODE (Karras et al. 2022, "EDM").

In VE coordinates every Gaussian path has the same ODE, dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 4 with
s(t) = 1, sigma(t) = t), so these run on any model through `Denoiser.sigma_model()`. They take a grid
`sigmas` (N noise levels, then 0) and x = sigmas[0] * z, and return the sample at sigma = 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..denoiser import SigmaModel
from .common import StepCallback, noise_like, noop_callback


@torch.no_grad()
def sample_euler(model: SigmaModel, x: Tensor, sigmas: Tensor, *, generator: torch.Generator | None = None,
                 callback: StepCallback = noop_callback) -> Tensor:
    """Euler's method on the PF-ODE in sigma: N steps, N NFE (`generator` is unused: deterministic)."""
    n = len(sigmas) - 1
    for i in range(n):
        denoised = model(x, sigmas[i])
        d = (x - denoised) / sigmas[i]  # dx/dsigma at (x_i, sigma_i), EDM eq. 4
        x = x + (sigmas[i + 1] - sigmas[i]) * d
        callback(n - i, x, denoised)
    return x


@torch.no_grad()
def sample_heun(model: SigmaModel, x: Tensor, sigmas: Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = math.inf, s_noise: float = 1.0, generator: torch.Generator | None = None,
                callback: StepCallback = noop_callback) -> Tensor:
    """EDM Algorithm 2 (Algorithm 1, deterministic, when s_churn = 0): Heun's method, Euler on the step to 0; 2N - 1 NFE."""
    n = len(sigmas) - 1
    for i in range(n):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        # Alg. 2 lines 4-6: gamma_i = min(S_churn / N, sqrt(2) - 1) on [S_tmin, S_tmax]; t^ = (1 + gamma) t_i;
        # x^ = x_i + sqrt(t^^2 - t_i^2) S_noise eps_i (more noise, then the ODE removes it: a Langevin-like churn).
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= float(t_cur) <= s_tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            x = x + (t_hat**2 - t_cur**2).sqrt() * s_noise * noise_like(x, generator)
        denoised = model(x, t_hat)
        d = (x - denoised) / t_hat  # line 7: d_i = (x^ - D(x^; t^)) / t^
        x_next = x + (t_next - t_hat) * d  # line 8: the Euler step
        if t_next > 0:  # lines 9-11: the second-order correction, except on the last step (sigma = 0)
            d_next = (x_next - model(x_next, t_next)) / t_next  # line 10: d'_i
            x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * d_next)  # line 11: the trapezoidal rule
        x = x_next
        callback(n - i, x, denoised)
    return x
