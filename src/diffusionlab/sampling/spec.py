"""The samplers by name: which space each one walks, the function that walks it, and the options it reads.

| name | what | grid (`steps` = N) | NFE |
|---|---|---|---|
| ddpm, ddim | Ho et al. Algorithm 2; DDIM eq. 12 (`Denoiser.vp()`) | the family's `vp_schedule`: respaced DDPM steps, or N times of a continuous path | N |
| euler | Euler on the PF-ODE in sigma space | `sigma_spacing` on `sigma_range()`, sigma_max capped at 80 | N |
| heun | EDM Algorithm 1 | as euler | 2N - 1 |
| dpmpp2m | DPM-Solver++(2M), first order on the first and last step | as euler | N |
| dpmpp2m-sde | SDE-DPM-Solver++(2M): the same multistep D, fresh noise every step | as euler | N |
| sde | reverse-SDE Euler-Maruyama (VE form) | as euler | N |
| pc | predictor-corrector, Langevin corrector at snr r | as euler | N (M + 1) |
| langevin | annealed Langevin, T steps per level, then one denoising step | N geometric levels to max(sigma_min, 0.01) | N T + 1 |
| ode-euler, ode-midpoint, ode-heun, ode-rk4 | the PF-ODE in the path's time (`Denoiser.velocity`) | N uniform steps in t | N, 2N, 2N, 4N |
| ode-adaptive | RK45 with rtol = atol | adaptive | as it takes |

The three spaces (grids.py): `vp` (x_t / sqrt(alpha^2 + sigma^2) on a discrete VP schedule), `sigma` (EDM's VE
coordinates x~ = x_t / alpha, from x~ = sigma_max z to sigma = 0) and `time` (x_t itself, from the noise end of a
continuous path to its data end).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from ..errors import ConfigError
from ..processes.base import Process
from ..processes.vlb import VARIANCES
from ..samplers import (sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_euler, sample_heun,
                        sample_langevin, sample_pc, sample_sde)
from ..samplers.sigmas import SPACINGS as SIGMA_SPACINGS
from ..schedules import SPACINGS
from .grids import langevin_sigmas

LANGEVIN_STEPS_EACH = 100  # NCSN's T (Song & Ermon 2019, section 4.3)


@dataclass(frozen=True)
class SamplerOptions:
    """Every sampler option with its default; each sampler reads the ones its row of `SAMPLERS` names."""

    eta: float = 0.0  # ddim: 0 deterministic, 1 ancestral
    variance: str | None = None  # ddpm: beta, beta_tilde or learned (None: the model's own)
    spacing: str = "uniform"  # ddpm/ddim: uniform or quadratic respacing
    sigma_spacing: str = "karras"  # sigma-space samplers: karras, loguniform, time or linspace
    clip_x0: bool = True  # clip the x0 prediction to the codec's data range (pixels: [-1, 1])
    snr: float = 0.16  # pc: the corrector's signal-to-noise ratio r
    corrector_steps: int | None = None  # pc: M (default 1); langevin: T per level (default 100)
    langevin_eps: float = 2e-5  # langevin: eps of the step size eps sigma_i^2 / sigma_L^2
    rtol: float = 1e-3  # ode-adaptive: relative and absolute tolerance

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"eta must be in [0, 1], got {self.eta}")
        if self.variance is not None and self.variance not in VARIANCES:
            raise ConfigError(f"unknown variance {self.variance!r}; choose from {', '.join(VARIANCES)}")
        if self.spacing not in SPACINGS:
            raise ConfigError(f"unknown spacing {self.spacing!r}; choose from {', '.join(SPACINGS)}")
        if self.sigma_spacing not in SIGMA_SPACINGS:
            raise ConfigError(f"unknown sigma spacing {self.sigma_spacing!r}; choose from {', '.join(SIGMA_SPACINGS)}")
        for name in ("snr", "langevin_eps", "rtol"):
            value = getattr(self, name)
            if not (0 < value < float("inf")):
                raise ConfigError(f"{name} must be a number > 0, got {value}")


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: its space, its function, and its keyword arguments read from `SamplerOptions`."""

    space: str  # "vp", "sigma" or "time"
    fn: Callable[..., Any] | None = None  # vp and sigma samplers; the time samplers call `solve_ode` with `method`
    method: str | None = None  # the ode-* samplers' Runge-Kutta method
    kwargs: Callable[[SamplerOptions, Process], dict[str, Any]] = field(default=lambda o, p: {})
    grid: Callable[[Process, int, SamplerOptions], Tensor] | None = None  # sigma samplers: default `sigma_grid`
    min_corrector_steps: int = 1  # the smallest --corrector-steps this sampler accepts (when it reads it)

    def check(self, name: str, o: SamplerOptions) -> None:
        """One-line errors for options this sampler cannot use."""
        if o.corrector_steps is not None and o.corrector_steps < self.min_corrector_steps:
            raise ConfigError(f"--corrector-steps must be >= {self.min_corrector_steps}, got {o.corrector_steps}")


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec("vp", sample_ddpm, kwargs=lambda o, p: {"variance": o.variance or p.variance}),
    "ddim": SamplerSpec("vp", sample_ddim, kwargs=lambda o, p: {"eta": o.eta}),
    "euler": SamplerSpec("sigma", sample_euler),
    "heun": SamplerSpec("sigma", sample_heun),
    "dpmpp2m": SamplerSpec("sigma", sample_dpmpp_2m),
    "dpmpp2m-sde": SamplerSpec("sigma", sample_dpmpp_2m_sde),
    "sde": SamplerSpec("sigma", sample_sde),
    "pc": SamplerSpec("sigma", sample_pc, min_corrector_steps=0,
                      kwargs=lambda o, p: {"snr": o.snr, "n_corrector": 1 if o.corrector_steps is None else o.corrector_steps}),
    "langevin": SamplerSpec("sigma", sample_langevin, grid=lambda p, n, o: langevin_sigmas(p.path, n),
                            kwargs=lambda o, p: {"step_eps": o.langevin_eps, "n_steps_each": LANGEVIN_STEPS_EACH
                                                 if o.corrector_steps is None else o.corrector_steps}),
    **{f"ode-{m}": SamplerSpec("time", method=m) for m in ("euler", "midpoint", "heun", "rk4", "adaptive")},
}
SAMPLER_NAMES = tuple(SAMPLERS)
VP_SAMPLERS = tuple(n for n, s in SAMPLERS.items() if s.space == "vp")
SIGMA_SAMPLERS = tuple(n for n, s in SAMPLERS.items() if s.space == "sigma")
ODE_SAMPLERS = tuple(n for n, s in SAMPLERS.items() if s.space == "time")


def sampler_spec(name: str) -> SamplerSpec:
    """The spec of sampler `name`, or a one-line error listing the samplers."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLER_NAMES)}")
    return SAMPLERS[name]


def require_sampler_fits(name: str, process: Process) -> None:
    """Refuse in one line an ode-* solver on a discrete DDPM: it integrates the path's own d x_t / dt, which a
    discrete path does not define."""
    from ..paths import is_continuous

    if sampler_spec(name).space == "time" and not is_continuous(process.path):
        raise ConfigError(f"sampler {name} integrates d x_t / dt and needs a continuous-time path; this model's path "
                          "is discrete (DDPM): use heun, dpmpp2m, euler, sde, pc, langevin, ddim or ddpm")


def sampler_and_steps(process: Process, sampler: str | None = None, steps: int | None = None,
                      sigma_spacing: str | None = None,
                      recommended: tuple[str, int | None] | None = None) -> tuple[str, int]:
    """The sampler and step count asked for; without a sampler, the run's `recommended` (sampler, steps) if it has
    one, else the family's defaults. A step count the sampler cannot use (or absurd for any sampler) is a one-line
    error, before any work."""
    from ..validation import MAX_SAMPLING_STEPS

    if sampler is None and recommended is not None:
        sampler, steps = recommended[0], steps or recommended[1]
    sampler = sampler or process.default_sampler
    spec = sampler_spec(sampler)
    steps = steps or process.default_steps(sampler)
    if steps < 1:
        raise ConfigError(f"the number of sampling steps must be >= 1, got {steps}")
    if steps > MAX_SAMPLING_STEPS:
        raise ConfigError(f"--steps {steps} is more than any sampler needs (at most {MAX_SAMPLING_STEPS:,})")
    # A discrete model has T steps: DDPM/DDIM walk a subset of them, and diffusers' linspace grid picks among them.
    if process.T is not None and steps > process.T and (
            spec.space == "vp" or (spec.space == "sigma" and sigma_spacing == "linspace")):
        raise ConfigError(f"--steps {steps} is more than the model's T = {process.T}")
    return sampler, steps


__all__ = ["LANGEVIN_STEPS_EACH", "ODE_SAMPLERS", "SAMPLERS", "SAMPLER_NAMES", "SIGMA_SAMPLERS", "VP_SAMPLERS",
           "SamplerOptions", "SamplerSpec", "require_sampler_fits", "sampler_and_steps", "sampler_spec"]
