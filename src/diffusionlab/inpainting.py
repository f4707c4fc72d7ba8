"""Inpainting by re-imposing the known pixels from the forward process: RePaint (Lugmayr et al. 2022, Algorithm 1).

Mask convention: 1 = known pixel (kept from the input image), 0 = unknown (generated). At every reverse
step k -> k-1 the known region is a fresh draw of q(x_{k-1} | x0_known) and the unknown region is the
model's reverse step; the last step (k = 1 -> 0) imposes the known pixels exactly. Resampling
(RePaint section 4.2) harmonises the two regions: after reaching step k the chain jumps back up
`jump` steps through the forward process and walks down again, `resample` times in all.
Works on a respaced schedule too (the forward jump uses abar ratios), with DDPM or DDIM steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Model
from .errors import ConfigError
from .samplers.common import ClipRange, StepCallback, noop_callback
from .samplers.ddim import ddim_step
from .samplers.ddpm import ddpm_step
from .schedules import NoiseSchedule


def repaint_steps(K: int, jump: int = 1, resample: int = 1) -> list[int]:
    """The steps RePaint visits from K down to 0: K, K-1, ..., with `resample - 1` jumps of `jump` steps back up
    at every multiple of `jump` (Lugmayr et al. 2022, section 4.2; jump = 1 is Algorithm 1's inner loop)."""
    if jump < 1 or resample < 1:
        raise ConfigError(f"RePaint jump length and resample count must be >= 1, got {jump} and {resample}")
    jumps_left = {k: resample - 1 for k in range(jump, K - jump + 1, jump)}
    k, steps = K, [K]
    while k > 0:
        k -= 1
        steps.append(k)
        if jumps_left.get(k, 0) > 0:
            jumps_left[k] -= 1
            k += jump
            steps.append(k)
    return steps


@torch.no_grad()
def sample_inpaint(
    model: Model,
    x: Tensor,
    schedule: NoiseSchedule,
    known: Tensor,
    mask: Tensor,
    *,
    sampler: str = "ddpm",
    variance: str = "beta_tilde",
    eta: float = 0.0,
    resample: int = 1,
    jump: int = 1,
    clip: ClipRange = None,
    generator: torch.Generator | None = None,
    callback: StepCallback = noop_callback,
) -> Tensor:
    """RePaint from x = x_K ~ N(0, I): `known` images in the model's space, `mask` (1 = known) broadcastable to x."""
    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"inpainting runs with the ddpm or ddim sampler, not {sampler!r}")
    mask = mask.to(x)
    known = known.to(x)
    abar = schedule.alpha_bar

    def noise() -> Tensor:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)

    steps = repaint_steps(schedule.T, jump, resample)
    for k, k_next in zip(steps, steps[1:]):
        if k_next > k:
            # Jump back up (Algorithm 1, line 9): x_{k'} ~ q(x_{k'} | x_k) = N(sqrt(abar_k'/abar_k) x_k, (1 - abar_k'/abar_k) I).
            ratio = abar[k_next] / abar[k]
            x = ratio.sqrt() * x + (1 - ratio).sqrt() * noise()
            continue
        abar_prev = abar[k - 1]
        # Line 5: the known region at k-1 from the forward process, x_{k-1}^known ~ q(x_{k-1} | x0); exact at k = 1.
        z_known = noise() if k > 1 else torch.zeros_like(x)
        x_known = abar_prev.sqrt() * known + (1 - abar_prev).sqrt() * z_known
        # Lines 6-7: the unknown region by one reverse step of the chosen sampler, the samplers' own step functions.
        z = noise() if k > 1 else torch.zeros_like(x)
        if sampler == "ddpm":  # Ho et al. 2020, Algorithm 2, line 4
            x_unknown, pred = ddpm_step(model, x, schedule, k, z, variance=variance, clip=clip)
        else:  # DDIM, Song et al. 2021, eq. 12 with sigma of their eq. 16
            x_unknown, pred = ddim_step(model, x, schedule, k, z, eta=eta, clip=clip)
        # Line 8: x_{k-1} = m * x^known + (1 - m) * x^unknown.
        x = mask * x_known + (1 - mask) * x_unknown
        callback(k, x, pred.x0)
    return x


__all__ = ["repaint_steps", "sample_inpaint"]
