"""Progressive generation: x_t and the model's x0_hat at chosen steps of one sampling run, DDPM's Fig. 6 (Ho et al.
2020, section 4.3): large-scale features appear first, details last. The frames are `sampling.generate`'s
trajectory (decoded for a latent run); the last frame's samples are the images `Run.sample` draws for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import from_model_range, to_model_range
from ..runs import LoadedRun
from ..sampling import SamplerOptions, generate, sampler_spec
from ..superres import degrade, upsample


@dataclass
class Progressive:
    """Frames of the first (up to 16) samples: where each one is, x_t and x0_hat (uint8), and the final samples."""

    labels: list[str]
    x_t: Tensor  # (K, N, C, H, W) uint8, x_t at a scale within the data range (sampling/generate.py)
    x0_hat: Tensor | None  # (K, N, C, H, W) uint8; None for a time-space ode-* solver, which reports none
    samples: Tensor  # (N, C, H, W) uint8
    sampler: str
    steps: int
    nfe: int


def reports_x0(sampler: str) -> bool:
    """Whether a sampler shows its x0_hat at each step: all but the time-space ode-* solvers (samplers/ode.py)."""
    return sampler_spec(sampler).space != "time"


def _uint8(frames: list[Tensor]) -> Tensor:
    """Frames in [-1, 1] as one uint8 tensor (K, N, C, H, W)."""
    return torch.stack([from_model_range(f) for f in frames])


@torch.no_grad()
def progressive(run: LoadedRun, sampler: str, steps: int, frames: int, n: int, seed: int = 0, y: Tensor | None = None,
                images: Tensor | None = None, options: SamplerOptions | None = None) -> Progressive:
    """n samples with `frames` recorded steps; y: the labels or token ids to draw (a conditional run). An upsampler
    draws the high-resolution version of uint8 `images`, degraded as in its training (superres.py)."""
    sr = run.superres
    if sr is not None:
        if images is None:
            raise ValueError("an upsampler's progressive figure needs the images to degrade")
        lowres = degrade(to_model_range(images[:n]), sr.factor, sr.blur)
        res = upsample(run.denoiser, run.process, run.model_shape, lowres, sampler, steps, level=sr.aug_level,
                       seed=seed, options=options, codec=run.codec, trajectory_frames=frames)
    else:
        res = generate(run.denoiser, run.process, run.model_shape, n, sampler, steps, options=options, seed=seed, y=y,
                       codec=run.codec, trajectory_frames=frames)
    # an ode-* solver integrates x_t itself and reports no x0_hat (generate then repeats x_t in its place)
    x0_hat = _uint8(res.trajectory_x0) if reports_x0(sampler) else None
    return Progressive(list(res.trajectory_labels), _uint8(res.trajectory_xt), x0_hat,
                       from_model_range(res.images), sampler, steps, res.nfe)


__all__ = ["Progressive", "progressive", "reports_x0"]
