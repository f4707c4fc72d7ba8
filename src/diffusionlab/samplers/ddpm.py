"""Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2; docs/maths.md section 1).

On a respaced schedule (Nichol & Dhariwal 2021, section 4) the same lines run with
beta_k = 1 - abar_k / abar_{k-1} of the kept steps; a learned variance (their eq. 15) then
interpolates between the respaced beta_k and beta~_k, which is how strided iDDPM sampling works.
`ddpm_step` is one iteration of the loop; RePaint (inpainting.py) calls it for the unknown pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Model
from ..errors import ConfigError
from ..prediction import Prediction
from ..processes.vlb import VARIANCES, reverse_log_variance
from ..schedules import NoiseSchedule
from .common import ClipRange, StepCallback, noop_callback, predict


def ddpm_step(model: Model, x: Tensor, schedule: NoiseSchedule, k: int, z: Tensor, *, variance: str = "beta_tilde",
              clip: ClipRange = None) -> tuple[Tensor, Prediction]:
    """Algorithm 2, line 4, at step k: x_{k-1} from x_k with the noise z (zeros at k = 1); and the prediction used."""
    beta, abar = schedule.betas, schedule.alpha_bar
    alpha_k, abar_k = 1 - beta[k], abar[k]
    pred = predict(model, x, schedule.timesteps[k], abar_k, clip)
    # x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - abar_t) * eps_theta) / sqrt(alpha_t) + sigma_t z
    mean = (x - (1 - alpha_k) / (1 - abar_k).sqrt() * pred.eps) / alpha_k.sqrt()
    if variance == "learned":  # Sigma = exp(v log beta_t + (1 - v) log beta~_t), per element (iDDPM eq. 15)
        return mean + torch.exp(0.5 * reverse_log_variance(schedule, k, x, variance, pred.var_frac)) * z, pred
    sigma2 = beta[k] if variance == "beta" else schedule.posterior_variance[k]
    return mean + sigma2.sqrt() * z, pred


@torch.no_grad()
def sample_ddpm(
    model: Model,
    x: Tensor,
    schedule: NoiseSchedule,
    *,
    variance: str = "beta_tilde",
    clip: ClipRange = None,
    generator: torch.Generator | None = None,
    callback: StepCallback = noop_callback,
) -> Tensor:
    """Algorithm 2 from x = x_T ~ N(0, I); sigma_t^2 = beta_t, beta~_t, or the model's learned variance."""
    if variance not in VARIANCES:
        raise ConfigError(f"unknown DDPM variance {variance!r}; choose from {', '.join(VARIANCES)}")
    for k in range(schedule.T, 0, -1):  # line 2: for t = T, ..., 1
        # line 3: z ~ N(0, I) if t > 1, else z = 0
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if k > 1 else torch.zeros_like(x)
        x, pred = ddpm_step(model, x, schedule, k, z, variance=variance, clip=clip)
        callback(k, x, pred.x0)
    return x  # line 6: return x_0
