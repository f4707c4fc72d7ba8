"""High-level generation: build a sampling grid, run a named sampler in batches, record a trajectory.

The maths lives in `samplers/`; this module is the plumbing the CLI and the trainer share. It works for any
process exposing `.path` and `.denoiser(net)`; only the DDPM process has a `.schedule`. The sampler names:

| name | what | grid (`steps` = N) | NFE |
|---|---|---|---|
| ddpm, ddim | Ho et al. Algorithm 2; DDIM eq. 12 (`Denoiser.vp()`) | respaced schedule, or K times of a continuous path | N |
| euler | Euler on the PF-ODE in sigma space | Karras (rho = 7) on `sigma_range()`, sigma_max capped at 80 (`sigma_spacing`) | N |
| heun | EDM Algorithm 1 | Karras | 2N - 1 |
| dpmpp2m | DPM-Solver++(2M), first order on the first and last step | Karras | N |
| dpmpp2m-sde | SDE-DPM-Solver++(2M): the same multistep D, fresh noise every step | Karras | N |
| sde | reverse-SDE Euler-Maruyama (VE form) | Karras | N |
| pc | predictor-corrector, Langevin corrector at snr r | Karras | N (M + 1) |
| langevin | annealed Langevin, T steps per level, then one denoising step | N geometric levels to max(sigma_min, 0.01) | N T + 1 |
| ode-euler, ode-midpoint, ode-heun, ode-rk4 | the PF-ODE in the path's time (`Denoiser.velocity`) | N uniform steps in t | N, 2N, 2N, 4N |
| ode-adaptive | RK45 with rtol = atol | adaptive | as it takes |

The sigma-space samplers start from x~ = sigma_max z and end at sigma = 0, where x~ = x0. Their grid
(`sigma_spacing`) is Karras et al.'s (default), log-uniform in sigma (= uniform in log-SNR), or uniform in the
path's time (diffusers' default spacing; DPM-Solver's "time uniform"). The ode-* samplers
need a continuous path (time derivatives); they start from x_t = sqrt(alpha^2 + sigma^2) z at the noise end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .denoiser import Denoiser, SigmaModel, expand_like
from .errors import ConfigError
from .parameterization import Parameterization
from .samplers import (NFECounter, sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_euler,
                       sample_heun, sample_langevin, sample_pc, sample_sde, solve_ode)
from .samplers.sigmas import loguniform_sigmas, make_sigmas, time_uniform_sigmas
from .schedules import NoiseSchedule, spaced_timesteps
from .training.determinism import generator

VP_SAMPLERS = ("ddpm", "ddim")
SIGMA_SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "dpmpp2m": sample_dpmpp_2m,
                  "dpmpp2m-sde": sample_dpmpp_2m_sde, "sde": sample_sde, "pc": sample_pc, "langevin": sample_langevin}
ODE_SAMPLERS = ("ode-euler", "ode-midpoint", "ode-heun", "ode-rk4", "ode-adaptive")
SAMPLER_NAMES = (*VP_SAMPLERS, *SIGMA_SAMPLERS, *ODE_SAMPLERS)
# EDM's sigma_max (Karras et al. 2022, section 5 and Table 1). A cosine DDPM reaches sigma~ = 2e4 at t = T, and a
# grid spread over [sigma_min, 2e4] wastes its steps where x~ is pure noise (Heun-18 on Gaussian data: std 0.43
# for 0.30, against 0.32 from 80). Starting at 80 from N(0, 80^2 I) instead of q_80 costs a variance mismatch of
# 1 part in 80^2 / Var(data) and a mean offset of mean(data) / 80 that the flow shrinks by Std(data) / 80.
SIGMA_MAX_CAP = 80.0
LANGEVIN_STEPS_EACH = 100  # NCSN's T (Song & Ermon 2019, section 4.3)
# NCSN's sigma_L (ibid.): with eps = 2e-5 the top level's step is a_1 = eps sigma_1^2 / sigma_L^2 ~ 0.2 sigma_1^2,
# a stable Langevin step; a smaller sigma_L would need a smaller eps.
LANGEVIN_SIGMA_MIN = 0.01


def sampling_schedule(process: Any, steps: int | None, spacing: str = "uniform") -> NoiseSchedule:
    """The training schedule, respaced to `steps` steps (None or T: the full schedule)."""
    if steps is None or steps == process.T:
        return process.schedule
    return process.schedule.respace(spaced_timesteps(process.T, steps, spacing))


def path_schedule(denoiser: Denoiser, steps: int) -> NoiseSchedule:
    """A K-step VP `NoiseSchedule` of a continuous path, for DDPM/DDIM: K times uniform on `time_range()`,
    abar_k = alpha^2 / (alpha^2 + sigma^2) (the VP view of `Denoiser.vp()`), network times the continuous t."""
    if steps < 1:
        raise ConfigError(f"number of sampling steps must be >= 1, got {steps}")
    t_noise, t_data = denoiser.time_range()
    t = t_data + (t_noise - t_data) * torch.arange(1, steps + 1, dtype=torch.float64) / steps
    alpha, sigma = denoiser.path.alpha(t).double(), denoiser.path.sigma(t).double()
    abar = alpha**2 / (alpha**2 + sigma**2)
    one = torch.ones(1, dtype=torch.float64)
    return NoiseSchedule(torch.cat([one, abar]), torch.cat([t_data * one, t]))


def sigma_grid(denoiser: Denoiser, steps: int, spacing: str = "karras", discrete: bool = False) -> Tensor:
    """The N + 1 noise levels of a sigma-space sampler: `spacing` on [sigma_min, min(sigma_max, 80)], then 0."""
    s_min, s_max = denoiser.sigma_range()
    s_max = min(s_max, SIGMA_MAX_CAP)
    if spacing != "time":
        return make_sigmas(spacing, steps, s_min, s_max)  # karras or loguniform; a one-line error otherwise
    path = denoiser.path
    t_noise = float(path.t_from_ratio(torch.tensor([s_max], dtype=torch.float64))[0])
    # A DDPM's data is its step 0, below t_data = 1; a continuous path's data end is t_data itself.
    t_clean = 0.0 if discrete else float(path.t_data)

    def ratio(t: Tensor) -> Tensor:
        return path.sigma(t).double() / path.alpha(t).double()

    return time_uniform_sigmas(ratio, steps, t_noise, t_clean)


def has_time_derivatives(denoiser: Denoiser) -> bool:
    """Whether the model's path is continuous (d alpha / dt and d sigma / dt exist)."""
    t = torch.tensor([float(denoiser.path.t_data)], dtype=torch.float64)
    return denoiser.path.d_alpha(t) is not None and denoiser.path.d_sigma(t) is not None


def ode_time_range(denoiser: Denoiser) -> tuple[float, float]:
    """Where the ode-* samplers integrate: a velocity network is finite at both ends of its path (flow matching
    from t = 0, SPEC.md section 6); other outputs are singular where alpha = 0, so those start at `time_range()`."""
    if denoiser.parameterization is Parameterization.VELOCITY:
        return float(denoiser.path.t_noise), float(denoiser.path.t_data)
    return denoiser.time_range()


def clipped(model: SigmaModel) -> SigmaModel:
    """D(x, sigma) clamped to the data range [-1, 1] (the sigma-space form of x0 clipping)."""
    return lambda x, sigma: model(x, sigma).clamp(-1, 1)


@dataclass
class SampleResult:
    """Generated samples in [-1, 1], the NFE spent, and an optional denoising trajectory."""

    images: Tensor
    nfe: int
    trajectory_labels: list[str] = field(default_factory=list)  # where each frame is: 't=742', 't=0.350', 'sigma=3.2'
    trajectory_xt: list[Tensor] = field(default_factory=list)
    trajectory_x0: list[Tensor] = field(default_factory=list)


@torch.no_grad()  # no autograd graph across steps (classifier guidance turns grad on for its own gradient)
def generate(
    denoiser: Denoiser,
    process: Any,
    shape: tuple[int, int, int],
    n: int,
    *,
    sampler: str = "ddim",
    steps: int | None = 50,
    eta: float = 0.0,
    variance: str | None = None,
    spacing: str = "uniform",
    sigma_spacing: str = "karras",
    clip_x0: bool = True,
    seed: int = 0,
    y: Tensor | None = None,
    batch_size: int = 256,
    trajectory_frames: int = 0,
    progress: bool = False,
    device: torch.device | str = "cpu",
    snr: float = 0.16,
    corrector_steps: int | None = None,
    langevin_eps: float = 2e-5,
    rtol: float = 1e-3,
) -> SampleResult:
    """Draw n samples of `shape` with the named sampler; the same seed gives the same images.

    `steps` is the number of steps N (see the module table for the NFE). `variance` (DDPM only) defaults to the
    process's own. `corrector_steps` is pc's M (default 1) and langevin's T per level (default 100).
    """
    if sampler not in SAMPLER_NAMES:
        raise ConfigError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLER_NAMES)}")
    if n < 1:
        raise ConfigError("--n must be >= 1")
    discrete = hasattr(process, "schedule")
    if steps is None:
        steps = process.T if discrete and sampler == "ddpm" else getattr(process, "default_steps", 50)
    if steps < 1:
        raise ConfigError(f"number of sampling steps must be >= 1, got {steps}")
    if sampler.startswith("ode-") and not has_time_derivatives(denoiser):
        raise ConfigError(f"sampler {sampler} integrates d x_t / dt and needs a continuous-time path; this model's "
                          f"path is discrete (DDPM): use heun, dpmpp2m, euler, sde, pc, langevin, ddim or ddpm")
    if corrector_steps is not None and corrector_steps < (0 if sampler == "pc" else 1):
        raise ConfigError(f"--corrector-steps must be >= {0 if sampler == 'pc' else 1}, got {corrector_steps}")

    # The grid and the starting scale of x for the chosen family of samplers.
    schedule, sigmas, ts = None, None, None
    if sampler in VP_SAMPLERS:
        schedule = sampling_schedule(process, steps, spacing) if discrete else path_schedule(denoiser, steps)
        variance = variance or getattr(process, "variance", "beta_tilde")
        n_steps, start_scale = schedule.T, 1.0
    elif sampler in SIGMA_SAMPLERS:
        if sampler == "langevin":  # NCSN's ladder ends at sigma_L = 0.01: eps / sigma_L^2 sets the top step size
            s_min, s_max = denoiser.sigma_range()
            sigmas = loguniform_sigmas(steps, max(s_min, LANGEVIN_SIGMA_MIN), min(s_max, SIGMA_MAX_CAP))
        else:
            sigmas = sigma_grid(denoiser, steps, sigma_spacing, discrete)
        n_steps, start_scale = steps, float(sigmas[0])
    else:
        t_noise, t_data = ode_time_range(denoiser)
        ts = torch.linspace(t_noise, t_data, steps + 1, dtype=torch.float64)
        t0 = ts[:1]
        n_steps, start_scale = steps, float((denoiser.path.alpha(t0) ** 2 + denoiser.path.sigma(t0) ** 2).sqrt())

    x_T = torch.randn((n, *shape), generator=generator(seed, 0))
    out, nfe = [], 0
    result = SampleResult(images=torch.empty(0), nfe=0)
    frame_steps = set()
    if trajectory_frames:
        frame_steps = {int(k) for k in torch.linspace(n_steps, 1, min(trajectory_frames, n_steps)).round().tolist()}
    batches = range(0, n, batch_size)
    for b, start in enumerate(tqdm(batches, desc="sampling", disable=not progress or len(batches) == 1)):
        x = start_scale * x_T[start : start + batch_size].to(device)
        yb = None if y is None else y[start : start + batch_size].to(device)
        g = generator(seed, 1, b)

        def record(k: int, x_k: Tensor, x0_hat: Tensor | None = None, first: bool = b == 0) -> None:
            if not (first and k in frame_steps):
                return
            if schedule is not None:  # integer timesteps of a discrete DDPM, continuous times of a path
                t_k = float(schedule.timesteps[k - 1])
                label = f"t={int(t_k)}" if discrete else f"t={t_k:.3f}"
            elif sigmas is not None:  # x after the step sits at sigmas[i + 1], i = n_steps - k
                sigma_k = float(sigmas[n_steps - k + 1])
                label = f"sigma={sigma_k:.3g}"
                # show x~ at the VP scale x~ / sqrt(1 + sigma~^2), which stays within the data range
                x_k = x_k / math.sqrt(1 + sigma_k**2)
            else:
                label = f"t={float(ts[n_steps - k + 1]):.3f}"
            result.trajectory_labels.append(label)
            result.trajectory_xt.append(x_k[:16].detach().cpu().clamp(-1, 1))
            result.trajectory_x0.append((x_k if x0_hat is None else x0_hat)[:16].detach().cpu().clamp(-1, 1))

        counter: NFECounter
        if sampler in VP_SAMPLERS:
            counter = NFECounter(denoiser.vp(yb))
            if sampler == "ddpm":
                x = sample_ddpm(counter, x, schedule, variance=variance, clip_x0=clip_x0, generator=g, callback=record)
            else:
                x = sample_ddim(counter, x, schedule, eta=eta, clip_x0=clip_x0, generator=g, callback=record)
        elif sampler in SIGMA_SAMPLERS:
            model = denoiser.sigma_model(yb)
            counter = NFECounter(clipped(model) if clip_x0 else model)
            options: dict[str, Any] = {}
            if sampler == "pc":
                options = {"snr": snr, "n_corrector": 1 if corrector_steps is None else corrector_steps}
            elif sampler == "langevin":
                options = {"step_eps": langevin_eps,
                           "n_steps_each": LANGEVIN_STEPS_EACH if corrector_steps is None else corrector_steps}
            x = SIGMA_SAMPLERS[sampler](counter, x, sigmas, generator=g, callback=record, **options)
        else:
            counter = NFECounter(lambda x_t, t, yb=yb: denoiser.velocity(x_t, t, yb))
            x = solve_ode(counter, x, ts, sampler.removeprefix("ode-"), rtol=rtol, atol=rtol, callback=record)
            # x_t at the data end is alpha x0 + sigma eps; report x~ = x_t / alpha, the VE coordinates' x0 estimate
            x = x / expand_like(denoiser.path.alpha(ts[-1:]).to(x), x)
        out.append(x.cpu())
        nfe = max(nfe, counter.nfe)
    result.images = torch.cat(out).clamp(-1, 1)
    result.nfe = nfe
    return result


__all__ = ["ODE_SAMPLERS", "SAMPLER_NAMES", "SIGMA_SAMPLERS", "VP_SAMPLERS", "SampleResult", "generate",
           "has_time_derivatives", "path_schedule", "sampling_schedule"]
