"""DDIM sampling and inversion (Song, Meng & Ermon 2021, eq. 12; docs/maths.md section 3).

`ddim_step` is one update of eq. 12; RePaint (inpainting.py) calls it for the unknown pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Model
from ..errors import ConfigError
from ..prediction import Prediction
from ..schedules import NoiseSchedule
from .common import ClipRange, StepCallback, noop_callback, predict


def ddim_sigma(schedule: NoiseSchedule, k: int, eta: float) -> Tensor:
    """sigma = eta * sqrt((1 - abar_t') / (1 - abar_t)) * sqrt(1 - abar_t / abar_t') at t = tau_k, t' = tau_{k-1} (eq. 16)."""
    abar_t, abar_prev = schedule.alpha_bar[k], schedule.alpha_bar[k - 1]
    return eta * ((1 - abar_prev) / (1 - abar_t)).sqrt() * (1 - abar_t / abar_prev).sqrt()


def ddim_step(model: Model, x: Tensor, schedule: NoiseSchedule, k: int, z: Tensor | None, *, eta: float = 0.0,
              clip: ClipRange = None) -> tuple[Tensor, Prediction]:
    """Eq. 12 at step k: x_{t'} from x_t with the noise z (None: no noise); and the prediction used."""
    abar_t, abar_prev = schedule.alpha_bar[k], schedule.alpha_bar[k - 1]  # t = tau_k and t' = tau_{k-1} (abar_0 = 1)
    pred = predict(model, x, schedule.timesteps[k], abar_t, clip)  # eps_theta(x_t) and x0_hat
    sigma = ddim_sigma(schedule, k, eta)
    # x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_theta + sigma z
    x = abar_prev.sqrt() * pred.x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * pred.eps
    return (x if z is None else x + sigma * z), pred


@torch.no_grad()
def sample_ddim(
    model: Model,
    x: Tensor,
    schedule: NoiseSchedule,
    *,
    eta: float = 0.0,
    clip: ClipRange = None,
    generator: torch.Generator | None = None,
    callback: StepCallback = noop_callback,
) -> Tensor:
    """DDIM from x = x_{tau_S}: eta = 0 is deterministic, eta = 1 on the full schedule is DDPM with beta~."""
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta must be in [0, 1], got {eta}")
    for k in range(schedule.T, 0, -1):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if eta > 0 and k > 1 else None
        x, pred = ddim_step(model, x, schedule, k, z, eta=eta, clip=clip)
        callback(k, x, pred.x0)
    return x


@torch.no_grad()
def ddim_invert(model: Model, x0: Tensor, schedule: NoiseSchedule, *, callback: StepCallback = noop_callback) -> Tensor:
    """Encode data into x_T by running the eta = 0 update forwards (Song et al. 2021, section 4.3).

    The step t_{k-1} -> t_k reuses eps_theta at (x_{t_{k-1}}, t_k): the exact inverse would need
    eps_theta(x_{t_k}), unknown before the step, and the two agree as the step size goes to 0.
    """
    abar = schedule.alpha_bar
    x = x0
    for k in range(1, schedule.T + 1):
        abar_t = abar[k]
        pred = predict(model, x, schedule.timesteps[k], abar_t)
        eps = pred.eps
        x0_hat = (x - (1 - abar[k - 1]).sqrt() * eps) / abar[k - 1].sqrt()
        # The eta = 0 update of eq. 12 with the roles of t and t' exchanged.
        x = abar_t.sqrt() * x0_hat + (1 - abar_t).sqrt() * eps
        callback(k, x, x0_hat)
    return x
