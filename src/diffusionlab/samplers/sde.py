"""Reverse-time SDE samplers in sigma space (Song et al. 2021, "Score-based generative modeling through SDEs").

In VE coordinates every Gaussian path is the VE SDE dx = sqrt(d[sigma^2]/dt) dw (their eq. 9), whose reverse is
dx = -d[sigma^2] grad log p_sigma(x) + sqrt(d[sigma^2]) dw_bar (eq. 6). The score comes from the denoiser by
Tweedie's formula, grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2. Grids `sigmas` end with 0: the step to 0
adds no noise, which makes it the denoising step x = D(x, sigma_min) their samplers end with (appendix G).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import SigmaModel
from ..errors import ConfigError
from .common import StepCallback, noise_like, noop_callback, ve_score


def _reverse_step(model: SigmaModel, x: Tensor, sigma: Tensor, sigma_next: Tensor,
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """One Euler-Maruyama step of the reverse VE SDE from sigma to sigma_next (the reverse-diffusion predictor, eq. 47)."""
    x0 = model(x, sigma)
    g2 = sigma**2 - sigma_next**2  # g_i^2 dt = sigma_i^2 - sigma_{i-1}^2
    x = x + g2 * ve_score(x, x0, sigma)  # x' = x_i + (sigma_i^2 - sigma_{i-1}^2) s_theta(x_i, sigma_i)
    if sigma_next > 0:
        x = x + g2.sqrt() * noise_like(x, generator)  # + sqrt(sigma_i^2 - sigma_{i-1}^2) z
    return x, x0


@torch.no_grad()
def sample_sde(model: SigmaModel, x: Tensor, sigmas: Tensor, *, generator: torch.Generator | None = None,
               callback: StepCallback = noop_callback) -> Tensor:
    """Euler-Maruyama on the reverse VE SDE from x = sigmas[0] z: N steps, N NFE."""
    n = len(sigmas) - 1
    for i in range(n):
        x, x0 = _reverse_step(model, x, sigmas[i], sigmas[i + 1], generator)
        callback(n - i, x, x0)
    return x


@torch.no_grad()
def sample_pc(model: SigmaModel, x: Tensor, sigmas: Tensor, *, snr: float = 0.16, n_corrector: int = 1,
              generator: torch.Generator | None = None, callback: StepCallback = noop_callback) -> Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 2, VE): per level, `n_corrector` Langevin steps at
    signal-to-noise ratio `snr` (Algorithm 4), then one reverse-SDE predictor step; N (n_corrector + 1) NFE.

    The corrector runs before the predictor at each level, as in the authors' code, so the last level is corrected
    before the final denoising step. The corrector's step size depends on the whole batch (mean norms), so a
    sample depends on the batch it is drawn in (the same batches and seed still give the same numbers).
    """
    if not snr > 0 or n_corrector < 0:
        raise ConfigError(f"the corrector needs snr > 0 and n_corrector >= 0, got {snr}, {n_corrector}")
    n = len(sigmas) - 1
    for i in range(n):
        for _ in range(n_corrector):
            g = ve_score(x, model(x, sigmas[i]), sigmas[i])  # Alg. 4 line 3: g = s_theta(x, sigma_i)
            z = noise_like(x, generator)  # line 4
            # line 5: eps = 2 (r ||z|| / ||g||)^2, the norms averaged over the batch as in the authors' code: in
            # few dimensions a single example's ||g|| can be near 0 and its step unbounded
            eps = 2 * (snr * z.flatten(1).norm(dim=1).mean() / g.flatten(1).norm(dim=1).mean()) ** 2
            x = x + eps * g + (2 * eps).sqrt() * z  # line 6: x <- x + eps g + sqrt(2 eps) z
        x, x0 = _reverse_step(model, x, sigmas[i], sigmas[i + 1], generator)
        callback(n - i, x, x0)
    return x
