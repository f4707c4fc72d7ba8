"""DPM-Solver++(2M) and its SDE form (Lu et al. 2022, "DPM-Solver++": Algorithm 2 and its SDE variant) in sigma space.

In VE coordinates alpha = 1, sigma = sigma~ and the half log-SNR is lambda = -log sigma. The solver integrates
the data-prediction ODE exactly in its linear part and extrapolates the denoiser D linearly in lambda from the
previous step (multistep: one NFE per step). The first step has no previous D and the last step lands on
sigma = 0 (lambda = inf): both are first order (DDIM's update), the "lower order final" of their section 5.
The SDE form solves the reverse diffusion SDE the same way: its linear part and its noise are integrated
exactly, so the step adds fresh noise like DDIM with eta = 1, with the same multistep D.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import SigmaModel
from .common import StepCallback, noise_like, noop_callback


def _multistep_D(x0: Tensor, x0_prev: Tensor | None, h: Tensor, h_prev: Tensor | None, last: bool) -> Tensor:
    """D_i of Algorithm 2: x0_i on the first and the last step (line 3, lower order final), else line 5."""
    if x0_prev is None or last:
        return x0
    r = h_prev / h  # r_i = h_{i-1} / h_i
    return (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev  # D_i = (1 + 1/(2 r_i)) x0_i - 1/(2 r_i) x0_{i-1}


@torch.no_grad()
def sample_dpmpp_2m(model: SigmaModel, x: Tensor, sigmas: Tensor, *, generator: torch.Generator | None = None,
                    callback: StepCallback = noop_callback) -> Tensor:
    """DPM-Solver++(2M) from x = sigmas[0] z: N steps, N NFE (`generator` is unused: deterministic)."""
    n = len(sigmas) - 1
    lam = -sigmas.log()  # lambda_i = log(alpha_i / sigma_i); lambda = inf at sigma = 0
    x0_prev, h_prev = None, None
    for i in range(n):
        x0 = model(x, sigmas[i])
        h = lam[i + 1] - lam[i]  # h_i = lambda_{t_i} - lambda_{t_{i-1}}
        D = _multistep_D(x0, x0_prev, h, h_prev, last=i == n - 1)
        # line 6: x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x - alpha_{t_i} (e^{-h_i} - 1) D_i, with alpha = 1
        x = (sigmas[i + 1] / sigmas[i]) * x - torch.expm1(-h) * D
        x0_prev, h_prev = x0, h
        callback(n - i, x, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model: SigmaModel, x: Tensor, sigmas: Tensor, *, generator: torch.Generator | None = None,
                        callback: StepCallback = noop_callback) -> Tensor:
    """SDE-DPM-Solver++(2M) from x = sigmas[0] z: N steps, N NFE, fresh noise from `generator` at every step."""
    n = len(sigmas) - 1
    lam = -sigmas.log()
    x0_prev, h_prev = None, None
    for i in range(n):
        x0 = model(x, sigmas[i])
        h = lam[i + 1] - lam[i]
        D = _multistep_D(x0, x0_prev, h, h_prev, last=i == n - 1)  # the same D_i as the ODE solver
        # x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) e^{-h_i} x + alpha_{t_i} (1 - e^{-2 h_i}) D_i
        #           + sigma_{t_i} sqrt(1 - e^{-2 h_i}) z, with alpha = 1 (their SDE-DPM-Solver++(2M))
        x = (sigmas[i + 1] / sigmas[i]) * torch.exp(-h) * x - torch.expm1(-2 * h) * D
        if sigmas[i + 1] > 0:  # the last step lands on sigma = 0, e^{-2h} = 0: x = D, no noise
            x = x + sigmas[i + 1] * (-torch.expm1(-2 * h)).sqrt() * noise_like(x, generator)
        x0_prev, h_prev = x0, h
        callback(n - i, x, x0)
    return x
