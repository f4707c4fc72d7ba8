"""Samplers: plain functions around one model contract.

- Discrete VP samplers `sample_*(model, x, schedule, ...)` with model(x_t, t) -> Prediction: `schedule` is the
  (possibly respaced) `NoiseSchedule` to walk from step K down to 0; the network is told `schedule.timesteps[k]`.
- Sigma-space samplers `sample_*(model, x, sigmas, ...)` with EDM's D(x~, sigma~) -> x0_hat
  (`Denoiser.sigma_model()`): `sigmas` decreasing and ending with 0, x = sigmas[0] z at the start.
- Time-space ODE solvers `solve_ode(f, x, ts, method)` for dx/dt = f(x, t) (`Denoiser.velocity`).

Every sampler returns the final x; wrap the model in an `NFECounter` to count network evaluations. The names
the CLI accepts are `sampling.SAMPLER_NAMES`.
"""

from .common import NFECounter, StepCallback
from .ddim import ddim_invert, sample_ddim
from .ddpm import sample_ddpm
from .dpm_solver import sample_dpmpp_2m, sample_dpmpp_2m_sde
from .edm import sample_euler, sample_heun
from .langevin import sample_langevin
from .ode import ODE_METHODS, rk_step, solve_ode, solve_ode_adaptive
from .sde import sample_pc, sample_sde
from .sigmas import karras_sigmas, loguniform_sigmas, make_sigmas

__all__ = ["NFECounter", "ODE_METHODS", "StepCallback", "ddim_invert", "karras_sigmas", "loguniform_sigmas",
           "make_sigmas", "rk_step", "sample_ddim", "sample_ddpm", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
           "sample_euler", "sample_heun", "sample_langevin", "sample_pc", "sample_sde", "solve_ode",
           "solve_ode_adaptive"]
