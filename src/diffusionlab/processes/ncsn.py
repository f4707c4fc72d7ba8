"""The NCSN family (`--method ncsn`; Song & Ermon 2019, 2020; docs/maths.md section 5): denoising score matching on a
geometric noise ladder.

The ladder sigma_1 > ... > sigma_L is the VE path sigma(t) = sigma_min (sigma_max / sigma_min)^t sampled at
L equally spaced times t_i = (L - i) / (L - 1), so the network is told the VE time t_i of its level and the
samplers see the same path as `VESDE`'s. A level is drawn uniformly, and the loss is docs/maths.md section 5's
sigma^2 || s_theta(x0 + sigma e, sigma) + e / sigma ||^2.

Song & Ermon (2020, technique 3) parameterize s_theta(x, sigma) = net(x) / sigma. With this repo's
`PredictionType`, s_theta = -eps_theta / sigma is that same scaling (an eps-like output on an alpha = 1
path), and the sigma^2-weighted loss becomes || eps_theta - e ||^2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigError
from ..prediction import PredictionType
from ..validation import MAX_T
from .base import Setting
from .continuous import ContinuousProcess
from .vesde import VESDEPath, check_ve_range


class NCSN(ContinuousProcess):
    """DSM on the ladder of `num_levels` noise levels, geometric from sigma_max down to sigma_min."""

    method = "ncsn"
    # sigma_min, sigma_max as for vesde.py. num_levels 100 is close to Song & Ermon's technique 2 (consecutive levels
    # overlap enough): its ratio gamma = 1.082 for 784 dimensions gives 108 levels for sigma_max / sigma_min = 5000
    # (for the 64-dim digits, gamma = 1.36 and sigma_max / sigma_min = 1000 give 22, the digits-ncsn preset).
    settings = (Setting("sigma_min", 0.01, float, "smallest noise level sigma_L"),
                Setting("sigma_max", 50.0, float, "largest noise level sigma_1"),
                Setting("num_levels", 100, int, "number of noise levels L", maximum=MAX_T))
    default_sampler = "langevin"  # annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1)

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, num_levels: int = 100):
        check_ve_range(sigma_min, sigma_max)
        if int(num_levels) != num_levels or num_levels < 2:
            raise ConfigError(f"num_levels must be a whole number >= 2, got {num_levels}")
        # t_eps = 0: the smallest level sigma_L = sigma_min sits at t = 0 (the data end of the ladder).
        super().__init__(VESDEPath(float(sigma_min), float(sigma_max), t_eps=0.0), PredictionType.EPS)
        self.num_levels = int(num_levels)

    def default_steps(self, sampler: str) -> int:
        """The trained ladder's L levels (the `langevin` sampler's N levels)."""
        return self.num_levels

    @property
    def times(self) -> Tensor:
        """VE times t_1 = 1 > ... > t_L = 0 of the levels (float64)."""
        return torch.linspace(1.0, 0.0, self.num_levels, dtype=torch.float64)

    @property
    def sigmas(self) -> Tensor:
        """The ladder sigma_1 = sigma_max > ... > sigma_L = sigma_min (geometric)."""
        return self.path.sigma(self.times)

    def draw_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n level times, the level uniform on 1..L."""
        return self.times[torch.randint(0, self.num_levels, (n,), generator=generator)]

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings."""
        p = self.path
        return {"sigma_min": p.sigma_min, "sigma_max": p.sigma_max, "num_levels": self.num_levels}
