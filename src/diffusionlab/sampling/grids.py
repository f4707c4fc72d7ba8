"""The grids the samplers walk, built from the model's family and path: sigma~ levels and ODE times.

(The DDPM/DDIM samplers' grid is the family's own `vp_schedule`.) sigma~ = sigma / alpha, the sigma range and
EDM's cap of 80 come from paths.py, the one place they are computed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from ..paths import SIGMA_MAX_CAP, GaussianPath, sigma_range, sigma_tilde, time_range
from ..prediction import PredictionType
from ..processes.base import Process
from ..samplers.sigmas import linspace_steps, loguniform_sigmas, make_sigmas, time_uniform_sigmas

# NCSN's sigma_L (Song & Ermon 2019, section 4.3): with eps = 2e-5 the top level's step is
# a_1 = eps sigma_1^2 / sigma_L^2 ~ 0.2 sigma_1^2, a stable Langevin step; a smaller sigma_L would need a smaller eps.
LANGEVIN_SIGMA_MIN = 0.01


def sigma_grid(process: Process, steps: int, spacing: str = "karras") -> Tensor:
    """The N + 1 noise levels of a sigma-space sampler on the process's path, then 0 (samplers/sigmas.py's grids).

    karras and loguniform span [sigma~_min, min(sigma~_max, 80)]; time is uniform in the path's time from
    t(min(sigma~_max, 80)) to the data (a DDPM's data is its step 0, below t_data = 1); linspace is diffusers' grid.
    """
    path = process.path
    s_min, s_max = sigma_range(path, cap=SIGMA_MAX_CAP)
    if spacing == "linspace":
        if process.T is None:
            raise ConfigError("the linspace grid is diffusers' grid of a discrete DDPM; on a continuous path use "
                              "--sigma-spacing time")
        levels = sigma_tilde(path, linspace_steps(process.T, steps).to(torch.float64))
        return torch.cat([levels, torch.zeros(1, dtype=torch.float64)])
    if spacing != "time":
        return make_sigmas(spacing, steps, s_min, s_max)  # karras or loguniform; a one-line error otherwise
    t_noise = float(path.t_from_ratio(torch.tensor([s_max], dtype=torch.float64))[0])
    t_clean = 0.0 if process.T is not None else float(path.t_data)
    return time_uniform_sigmas(lambda t: sigma_tilde(path, t), steps, t_noise, t_clean)


def langevin_sigmas(path: GaussianPath, steps: int) -> Tensor:
    """Annealed Langevin's N geometric levels from min(sigma~_max, 80) to max(sigma~_min, NCSN's sigma_L = 0.01)."""
    s_min, s_max = sigma_range(path, cap=SIGMA_MAX_CAP)
    return loguniform_sigmas(steps, max(s_min, LANGEVIN_SIGMA_MIN), s_max)


def ode_times(path: GaussianPath, prediction: PredictionType, steps: int) -> Tensor:
    """N + 1 uniform times from the noise end to the data end: a velocity network is finite at both ends of its
    path (flow matching from t = 0, docs/maths.md section 6); other outputs are singular where alpha = 0, so those
    start at `time_range()`."""
    if prediction is PredictionType.VELOCITY:
        t_noise, t_data = float(path.t_noise), float(path.t_data)
    else:
        t_noise, t_data = time_range(path)
    return torch.linspace(t_noise, t_data, steps + 1, dtype=torch.float64)


__all__ = ["LANGEVIN_SIGMA_MIN", "langevin_sigmas", "ode_times", "sigma_grid"]
