"""`inpaint_or_edit`: the batch loop of RePaint and SDEdit (inpainting.py, editing.py), shared by the `inpaint` and
`edit` commands, `Run.inpaint` / `Run.edit` and the playground, so that the same seed gives the same images in each.

Each batch b draws its starting noise from generator(seed, 0, b) and its step noise from generator(seed, 1, b).
The two algorithms are looked up on their modules at call time (`inpainting.sample_inpaint`), so a wrapper or a
test's stand-in installed there is the one that runs.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .. import editing, inpainting
from ..data.dataset import PIXEL_RANGE
from ..denoiser import Denoiser
from ..samplers import NFECounter
from ..samplers.common import ClipRange
from ..schedules import NoiseSchedule
from ..training.determinism import generator
from .generate import Frame


@torch.no_grad()
def inpaint_or_edit(model: Denoiser, schedule: NoiseSchedule, x_in: Tensor, *, mask: Tensor | None = None,
                    strength: float | None = None, sampler: str = "ddpm", variance: str = "beta_tilde",
                    eta: float = 0.0, resample: int = 1, jump: int = 1, clip: ClipRange = None, seed: int = 0,
                    y: Tensor | None = None, batch_size: int = 256,
                    on_step: Callable[[Frame], None] | None = None) -> tuple[Tensor, int]:
    """RePaint (`mask` given, 1 = known) or SDEdit (`strength` given) of the pixel images x_in in [-1, 1]; returns the
    outputs in [-1, 1] and the NFE per output. `on_step` sees every step of the first batch."""
    outputs, nfe = [], 0
    for b, start in enumerate(range(0, len(x_in), batch_size)):
        xb = x_in[start : start + batch_size]
        counter = NFECounter(model.vp(None if y is None else y[start : start + batch_size]))
        g = generator(seed, 1, b)

        def record(k: int, x_k: Tensor, x0_hat: Tensor, first: bool = b == 0) -> None:
            if first and on_step is not None:
                t = float(schedule.timesteps[k - 1])  # where x is after step k: integer steps, or a path's time
                on_step(Frame(k, schedule.T, f"t={int(t)}" if t.is_integer() else f"t={t:.3f}", x_k, x0_hat,
                              lambda x: x))

        if mask is not None:
            x_T = torch.randn(xb.shape, generator=generator(seed, 0, b))
            xb = inpainting.sample_inpaint(counter, x_T, schedule, xb, mask, sampler=sampler, variance=variance,
                                           eta=eta, resample=resample, jump=jump, clip=clip, generator=g,
                                           callback=record)
        else:
            xb = editing.sdedit(counter, xb, schedule, float(strength),  # type: ignore[arg-type]
                                sampler=sampler, eta=eta, variance=variance, clip=clip, generator=g, callback=record)
        outputs.append(xb.clamp(*PIXEL_RANGE))
        nfe = max(nfe, counter.nfe)
    return torch.cat(outputs), nfe


__all__ = ["inpaint_or_edit"]
