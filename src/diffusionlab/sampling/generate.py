"""`generate`: draw n samples in batches with a named sampler, decode them, and record a denoising trajectory.

The maths lives in `samplers/`; which space a sampler walks and what it reads is its row of `SAMPLERS` (spec.py);
a `Plan` (one per space, below) turns that row, the model's family and the step count into a grid, a starting
scale for x_T and a function that runs one batch. `generate` itself is the batch loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..codecs import Codec, PixelCodec
from ..data.dataset import PIXEL_RANGE
from ..denoiser import Denoiser, SigmaModel
from ..errors import ConfigError
from ..paths import expand_like, vp_scale
from ..processes.base import Process
from ..samplers import NFECounter, solve_ode
from ..samplers.common import ClipRange
from ..training.determinism import generator
from .grids import ode_times, sigma_grid
from .spec import SamplerOptions, SamplerSpec, require_sampler_fits, sampler_spec

# record(k, x_k, x0_hat): called after step k (n_steps .. 1) of a batch
Recorder = Callable[..., None]


@dataclass
class SampleResult:
    """Generated samples in pixel space ([-1, 1]), the NFE spent, and an optional denoising trajectory (decoded)."""

    images: Tensor
    nfe: int
    trajectory_labels: list[str] = field(default_factory=list)  # where each frame is: 't=742', 't=0.350', 'sigma=3.2'
    trajectory_xt: list[Tensor] = field(default_factory=list)
    trajectory_x0: list[Tensor] = field(default_factory=list)


@dataclass
class Frame:
    """Where the first batch is after step k of n_steps (the view `generate` gives `on_step`): x_k at a scale within
    the data range and the x0 prediction, both in the model's space; `pixels()` decodes them."""

    k: int
    n_steps: int
    label: str
    x_t: Tensor
    x0_hat: Tensor
    decode: Callable[[Tensor], Tensor]

    def pixels(self) -> tuple[Tensor, Tensor]:
        """(x_t, x0_hat) decoded to pixels in [-1, 1]."""
        return tuple(self.decode(x).cpu().clamp(*PIXEL_RANGE) for x in (self.x_t, self.x0_hat))  # type: ignore[return-value]


@dataclass
class Plan:
    """A sampler ready to run on batches: its step count, the scale of x_T, the batch runner and the frame labels."""

    n_steps: int
    start_scale: float
    run: Callable[[Denoiser, Tensor, Tensor | None, torch.Generator, Recorder], tuple[Tensor, int]]
    label: Callable[[int], str]  # where x is after step k
    display: Callable[[int, Tensor], Tensor] = lambda k, x: x  # x after step k at a scale within the data range


def clipped(model: SigmaModel, clip: ClipRange) -> SigmaModel:
    """D(x, sigma) clamped to `clip` (the sigma-space form of x0 clipping), or D itself."""
    return model if clip is None else (lambda x, sigma: model(x, sigma).clamp(*clip))


def vp_plan(spec: SamplerSpec, process: Process, steps: int, o: SamplerOptions, clip: ClipRange) -> Plan:
    """DDPM / DDIM on the family's VP schedule, in VP coordinates (`Denoiser.vp()`)."""
    schedule = process.vp_schedule(steps, o.spacing)
    kwargs = spec.kwargs(o, process)
    discrete = process.T is not None

    def run(model: Denoiser, x: Tensor, y: Tensor | None, g: torch.Generator, record: Recorder) -> tuple[Tensor, int]:
        counter = NFECounter(model.vp(y))
        x = spec.fn(counter, x, schedule, clip=clip, generator=g, callback=record, **kwargs)  # type: ignore[misc]
        return x, counter.nfe

    def label(k: int) -> str:  # integer timesteps of a discrete DDPM, continuous times of a path
        t_k = float(schedule.timesteps[k - 1])
        return f"t={int(t_k)}" if discrete else f"t={t_k:.3f}"

    return Plan(schedule.T, 1.0, run, label)


def sigma_plan(spec: SamplerSpec, process: Process, steps: int, o: SamplerOptions, clip: ClipRange) -> Plan:
    """A sigma-space sampler on EDM's D(x~, sigma~) from x~ = sigma_max z (`Denoiser.sigma_model()`)."""
    sigmas = spec.grid(process, steps, o) if spec.grid is not None else sigma_grid(process, steps, o.sigma_spacing)
    kwargs = spec.kwargs(o, process)

    def run(model: Denoiser, x: Tensor, y: Tensor | None, g: torch.Generator, record: Recorder) -> tuple[Tensor, int]:
        counter = NFECounter(clipped(model.sigma_model(y), clip))
        return spec.fn(counter, x, sigmas, generator=g, callback=record, **kwargs), counter.nfe  # type: ignore[misc]

    def sigma_after(k: int) -> float:  # x after the step sits at sigmas[i + 1], i = n_steps - k
        return float(sigmas[steps - k + 1])

    # x~ shown at the VP scale x~ / sqrt(1 + sigma~^2), which stays within the data range
    return Plan(steps, float(sigmas[0]), run, lambda k: f"sigma={sigma_after(k):.3g}",
                lambda k, x: x / math.sqrt(1 + sigma_after(k) ** 2))


def time_plan(spec: SamplerSpec, process: Process, steps: int, o: SamplerOptions, clip: ClipRange) -> Plan:
    """An ode-* solver on the PF-ODE in the path's time (`Denoiser.velocity`), from x_t = sqrt(alpha^2 + sigma^2) z."""
    path = process.path
    require_sampler_fits(f"ode-{spec.method}", process)
    ts = ode_times(path, process.prediction, steps)

    def run(model: Denoiser, x: Tensor, y: Tensor | None, g: torch.Generator, record: Recorder) -> tuple[Tensor, int]:
        counter = NFECounter(lambda x_t, t: model.velocity(x_t, t, y))
        x = solve_ode(counter, x, ts, spec.method, rtol=o.rtol, atol=o.rtol, callback=record)  # type: ignore[arg-type]
        # x_t at the data end is alpha x0 + sigma eps; report x~ = x_t / alpha, the VE coordinates' x0 estimate
        return x / expand_like(path.alpha(ts[-1:]).to(x), x), counter.nfe

    return Plan(steps, float(vp_scale(path, ts[:1])), run, lambda k: f"t={float(ts[steps - k + 1]):.3f}")


PLANS = {"vp": vp_plan, "sigma": sigma_plan, "time": time_plan}


PROGRESS_DELAY = 0.5  # seconds before the sampling bar appears


@torch.no_grad()  # no autograd graph across steps (classifier guidance turns grad on for its own gradient)
def generate(model: Denoiser, process: Process, shape: tuple[int, int, int], n: int, sampler: str = "ddim",
             steps: int | None = None, *, options: SamplerOptions | None = None, seed: int = 0, y: Tensor | None = None,
             codec: Codec | None = None, batch_size: int = 256, trajectory_frames: int = 0, progress: bool = False,
             device: torch.device | str = "cpu", on_batch: Callable[[Tensor], None] | None = None,
             on_step: Callable[[Frame], None] | None = None) -> SampleResult:
    """Draw n samples of the model's `shape` with the named sampler and decode them; the same seed gives the same images.

    `steps` defaults to the family's `default_steps(sampler)` (see spec.py for the NFE per step). The codec (pixels
    by default) decodes the samples and frames, and sets the range the x0 prediction is clipped to. With `on_batch`,
    each decoded batch (clamped to [-1, 1]) goes to it instead of into `images`, which stays empty: a large n
    streams to disk (viz.SampleWriter) instead of being held in memory. With `on_step`, every step of the first
    batch is shown to it as a `Frame` (the playground streams these); an exception it raises stops the sampling.
    """
    o, codec = options or SamplerOptions(), codec or PixelCodec()
    spec = sampler_spec(sampler)
    spec.check(sampler, o)
    if n < 1:
        raise ConfigError("--n must be >= 1")
    steps = process.default_steps(sampler) if steps is None else steps
    if steps < 1:
        raise ConfigError(f"number of sampling steps must be >= 1, got {steps}")
    plan = PLANS[spec.space](spec, process, steps, o, codec.x0_clip if o.clip_x0 else None)

    x_T = torch.randn((n, *shape), generator=generator(seed, 0))
    result, out = SampleResult(images=torch.empty(0), nfe=0), []
    frames: list[tuple[str, Tensor, Tensor]] = []
    frame_steps = set()
    if trajectory_frames:
        frame_steps = {int(k) for k in torch.linspace(plan.n_steps, 1, min(trajectory_frames, plan.n_steps)).round().tolist()}
    batches = range(0, n, batch_size)
    # Progress in sampler steps over all batches (with ETA), so one long batch is not a silent wait.
    # Shown after PROGRESS_DELAY seconds: a quick call, or an error in the first step, prints no bar.
    bar = tqdm(total=plan.n_steps * len(batches), desc="sampling", unit="step", disable=not progress,
               delay=PROGRESS_DELAY)
    try:
        for b, start in enumerate(batches):
            yb = None if y is None else y[start : start + batch_size].to(device)

            def record(k: int, x_k: Tensor, x0_hat: Tensor | None = None, first: bool = b == 0) -> None:
                bar.update(1)
                if first and on_step is not None:
                    on_step(Frame(k, plan.n_steps, plan.label(k), plan.display(k, x_k).detach(),
                                  (plan.display(k, x_k) if x0_hat is None else x0_hat).detach(), codec.decode))
                if first and k in frame_steps:
                    shown = plan.display(k, x_k)
                    frames.append((plan.label(k), shown[:16].detach(), (shown if x0_hat is None else x0_hat)[:16].detach()))

            x, nfe = plan.run(model, plan.start_scale * x_T[start : start + batch_size].to(device), yb,
                              generator(seed, 1, b), record)
            decoded = codec.decode(x).cpu()
            if on_batch is not None:
                on_batch(decoded.clamp(*PIXEL_RANGE))
            else:
                out.append(decoded)
            result.nfe = max(result.nfe, nfe)
    finally:
        bar.close()
    result.images = torch.cat(out).clamp(*PIXEL_RANGE) if out else torch.empty(0)
    for label, x_k, x0_k in frames:
        result.trajectory_labels.append(label)
        result.trajectory_xt.append(codec.decode(x_k).cpu().clamp(*PIXEL_RANGE))
        result.trajectory_x0.append(codec.decode(x0_k).cpu().clamp(*PIXEL_RANGE))
    return result


__all__ = ["PLANS", "Frame", "Plan", "SampleResult", "clipped", "generate", "sigma_plan", "time_plan", "vp_plan"]
