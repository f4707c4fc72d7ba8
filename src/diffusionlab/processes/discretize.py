"""A continuous Gaussian path seen as a K-step discrete VP schedule, for the samplers that walk a NoiseSchedule.

Any path x_t = alpha(t) x0 + sigma(t) eps is, after dividing x by s(t) = sqrt(alpha^2 + sigma^2), the VP
path with abar(t) = alpha^2 / (alpha^2 + sigma^2) (`Denoiser.vp()` does the division). So K + 1 times from
t_data to t_noise give a `NoiseSchedule` whose `timesteps` are the continuous network times, and DDPM /
DDIM (Ho et al. 2020; Song et al. 2021) run on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..denoiser import GaussianPath
from ..errors import ConfigError
from ..schedules import NoiseSchedule

MAX_BETA = 0.999  # as for the cosine schedule (Nichol & Dhariwal 2021, section 3.2): abar(t_noise) may be 0


def schedule_from_path(path: GaussianPath, K: int) -> NoiseSchedule:
    """K steps uniform in t from path.t_data (index 0) to path.t_noise (index K): abar = alpha^2 / (alpha^2 + sigma^2)."""
    if K < 1:
        raise ConfigError(f"number of sampling steps must be >= 1, got {K}")
    t = torch.linspace(path.t_data, path.t_noise, K + 1, dtype=torch.float64)
    a2, s2 = path.alpha(t) ** 2, path.sigma(t) ** 2
    abar = a2 / (a2 + s2)
    # Index 0 is the data itself (abar_0 = 1, NoiseSchedule's convention: DDIM's last step returns x0_hat).
    # beta_k = 1 - abar_k / abar_{k-1}; flow matching has abar = 0 at t = 0, so the last beta is clipped
    # (otherwise DDPM's 1 / sqrt(alpha_K) is infinite).
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[1:-1]])
    betas = (1 - abar[1:] / prev).clamp(max=MAX_BETA)
    return NoiseSchedule(NoiseSchedule.from_betas(betas).alpha_bar, t)


@dataclass(frozen=True)
class DiscretizedProcess:
    """What `sampling.generate`'s ddpm/ddim branch reads from a process: a K-step schedule and a reverse variance."""

    schedule: NoiseSchedule
    path: GaussianPath  # the continuous path the schedule was built from
    variance: str = "beta_tilde"
    learned_variance = False

    @property
    def T(self) -> int:
        """Number of steps K."""
        return self.schedule.T


def discretize(path: GaussianPath, K: int) -> DiscretizedProcess:
    """The path as a K-step discrete process that `generate(..., sampler='ddim' or 'ddpm', steps=K)` can sample."""
    return DiscretizedProcess(schedule_from_path(path, K), path)
