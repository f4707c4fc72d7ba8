"""SDEdit: image editing by noising to an intermediate time and denoising (Meng et al. 2022, Algorithm 1).

x(t0) = sqrt(abar_{t0}) x_guide + sqrt(1 - abar_{t0}) eps with t0 = s T, then any reverse sampler runs
from t0 down to 0 on the same (sub-)schedule. The strength s trades faithfulness (s -> 0: the input
itself, returned exactly at s = 0) for realism (s = 1: ordinary sampling, the input all but forgotten).
With deterministic DDIM (eta = 0) the only randomness is the noise of the first line.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Model
from .errors import ConfigError
from .processes.ddpm import q_sample
from .samplers import sample_ddim, sample_ddpm
from .samplers.common import ClipRange, StepCallback, noop_callback
from .schedules import NoiseSchedule


def start_step(schedule: NoiseSchedule, strength: float) -> int:
    """The step k0 = round(s K) of a K-step schedule that SDEdit starts from."""
    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"--strength must be in [0, 1], got {strength}")
    return int(round(strength * schedule.T))


@torch.no_grad()
def sdedit(
    model: Model,
    x_guide: Tensor,
    schedule: NoiseSchedule,
    strength: float,
    *,
    sampler: str = "ddim",
    eta: float = 0.0,
    variance: str = "beta_tilde",
    clip: ClipRange = None,
    generator: torch.Generator | None = None,
    callback: StepCallback = noop_callback,
) -> Tensor:
    """Noise `x_guide` (in the model's space) to step round(strength K) with q_sample, then denoise it with `sampler`."""
    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"SDEdit runs with the ddpm or ddim sampler, not {sampler!r}")
    k0 = start_step(schedule, strength)
    if k0 == 0:
        return x_guide.clone()
    eps = torch.randn(x_guide.shape, generator=generator, dtype=x_guide.dtype).to(x_guide.device)
    # Algorithm 1, line 2: x(t0) ~ q(x_{t0} | x_guide) (DDPM eq. 4).
    x = q_sample(schedule, x_guide, torch.full((x_guide.shape[0],), k0), eps)
    # Lines 3-5: the reverse process from t0 only -- the schedule truncated to its first k0 steps.
    sub = NoiseSchedule(schedule.alpha_bar[: k0 + 1], schedule.timesteps[: k0 + 1])
    if sampler == "ddpm":
        return sample_ddpm(model, x, sub, variance=variance, clip=clip, generator=generator, callback=callback)
    return sample_ddim(model, x, sub, eta=eta, clip=clip, generator=generator, callback=callback)


__all__ = ["sdedit", "start_step"]
