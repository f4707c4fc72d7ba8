"""High-level generation: build a sampling schedule, run a named sampler in batches, record a trajectory.

The maths lives in `samplers/`; this module is the plumbing the CLI and the trainer share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .denoiser import Denoiser, Model
from .errors import ConfigError
from .processes.gaussian import GaussianDiffusion
from .samplers import NFECounter, sample_ddim, sample_ddpm
from .schedules import NoiseSchedule, spaced_timesteps
from .training.determinism import generator

SAMPLER_NAMES = ("ddpm", "ddim")


def sampling_schedule(process: GaussianDiffusion, steps: int | None, spacing: str = "uniform") -> NoiseSchedule:
    """The training schedule, respaced to `steps` steps (None or T: the full schedule)."""
    if steps is None or steps == process.T:
        return process.schedule
    return process.schedule.respace(spaced_timesteps(process.T, steps, spacing))


@dataclass
class SampleResult:
    """Generated samples in [-1, 1], the NFE spent, and an optional denoising trajectory."""

    images: Tensor
    nfe: int
    trajectory_steps: list[int] = field(default_factory=list)
    trajectory_xt: list[Tensor] = field(default_factory=list)
    trajectory_x0: list[Tensor] = field(default_factory=list)


def generate(
    denoiser: Denoiser,
    process: GaussianDiffusion,
    shape: tuple[int, int, int],
    n: int,
    *,
    sampler: str = "ddim",
    steps: int | None = 50,
    eta: float = 0.0,
    variance: str | None = None,
    spacing: str = "uniform",
    clip_x0: bool = True,
    seed: int = 0,
    y: Tensor | None = None,
    batch_size: int = 256,
    trajectory_frames: int = 0,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> SampleResult:
    """Draw n samples of `shape` with the named sampler; the same seed gives the same images.

    `variance` (DDPM only) defaults to the process's own: the learned one for an iDDPM model.
    """
    if sampler not in SAMPLER_NAMES:
        raise ConfigError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLER_NAMES)}")
    if n < 1:
        raise ConfigError("--n must be >= 1")
    schedule = sampling_schedule(process, steps, spacing)
    variance = variance or process.variance
    x_T = torch.randn((n, *shape), generator=generator(seed, 0))
    out, nfe = [], 0
    result = SampleResult(images=torch.empty(0), nfe=0)
    frame_steps = set()
    if trajectory_frames:
        frame_steps = {int(k) for k in torch.linspace(schedule.T, 1, min(trajectory_frames, schedule.T)).round().tolist()}
    batches = range(0, n, batch_size)
    for b, start in enumerate(tqdm(batches, desc="sampling", disable=not progress or len(batches) == 1)):
        x = x_T[start : start + batch_size].to(device)
        yb = None if y is None else y[start : start + batch_size].to(device)
        base: Model = denoiser.vp(yb)
        model = NFECounter(base)
        g = generator(seed, 1, b)

        def record(k: int, x_k: Tensor, x0_hat: Tensor, first: bool = b == 0) -> None:
            if first and k in frame_steps:
                result.trajectory_steps.append(int(schedule.timesteps[k - 1]))
                result.trajectory_xt.append(x_k[:16].detach().cpu().clamp(-1, 1))
                result.trajectory_x0.append(x0_hat[:16].detach().cpu().clamp(-1, 1))

        if sampler == "ddpm":
            x = sample_ddpm(model, x, schedule, variance=variance, clip_x0=clip_x0, generator=g, callback=record)
        else:
            x = sample_ddim(model, x, schedule, eta=eta, clip_x0=clip_x0, generator=g, callback=record)
        out.append(x.cpu())
        nfe = max(nfe, model.nfe)
    result.images = torch.cat(out).clamp(-1, 1)
    result.nfe = nfe
    return result


__all__ = ["SAMPLER_NAMES", "SampleResult", "generate", "sampling_schedule"]
