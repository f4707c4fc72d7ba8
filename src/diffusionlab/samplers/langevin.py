"""Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; docs/maths.md section 5).

For each noise level sigma_1 > ... > sigma_L the step size is a_i = eps sigma_i^2 / sigma_L^2, and T steps of
x <- x + (a_i / 2) s_theta(x, sigma_i) + sqrt(a_i) z are taken. The score comes from any model through
Tweedie's formula in VE coordinates. Langevin samples keep the noise of the last level sigma_L; the optional
final step x <- D(x, sigma_L) removes it (the "denoising" step of Jolicoeur-Martineau et al. 2021 and of
NCSNv2, Song & Ermon 2020), costing one more NFE.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import SigmaModel
from ..errors import ConfigError
from .common import StepCallback, noise_like, noop_callback, ve_score


@torch.no_grad()
def sample_langevin(model: SigmaModel, x: Tensor, sigmas: Tensor, *, step_eps: float = 2e-5, n_steps_each: int = 100,
                    denoise: bool = True, generator: torch.Generator | None = None,
                    callback: StepCallback = noop_callback) -> Tensor:
    """Annealed Langevin on the positive levels of `sigmas` (a trailing 0 is ignored): L T (+ 1) NFE."""
    if not step_eps > 0 or n_steps_each < 1:
        raise ConfigError(f"Langevin needs eps > 0 and T >= 1 steps per level, got {step_eps}, {n_steps_each}")
    levels = sigmas[sigmas > 0]
    sigma_L = levels[-1]
    x0 = x
    for i, sigma in enumerate(levels):  # line 2: for i = 1..L
        a = step_eps * sigma**2 / sigma_L**2  # line 3: alpha_i = eps sigma_i^2 / sigma_L^2
        for _ in range(n_steps_each):  # line 4: for t = 1..T
            x0 = model(x, sigma)
            z = noise_like(x, generator)  # line 5
            x = x + a / 2 * ve_score(x, x0, sigma) + a.sqrt() * z  # line 6
        callback(len(levels) - i, x, x0)
    if denoise:
        x = model(x, sigma_L)
    return x
