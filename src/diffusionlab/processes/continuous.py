"""Continuous-time training on a Gaussian path: t ~ U[t_lo, t_hi], x_t = alpha(t) x0 + sigma(t) eps, regress a target.

Every continuous family here (flow matching, the VP and VE score SDEs, NCSN) is this one regression with
a different path, a different meaning of the network output and a different law of t:

    L = E_{t, x0, eps} || net(alpha(t) x0 + sigma(t) eps, t) - target(x0, eps, t) ||^2

where the target is what `PredictionType` says the output means (eps, or the velocity
alpha'(t) x0 + sigma'(t) eps). Naming: x0 is the data and eps the noise, as in the rest of the repo.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..denoiser import Denoiser, Network
from ..paths import GaussianPath, expand_like, vp_schedule
from ..prediction import Prediction, PredictionType, from_prediction
from ..schedules import NoiseSchedule
from .base import Setting
from .timesteps import LossSecondMomentSampler


class ContinuousProcess(ABC):
    """Regression of a network output of meaning `prediction` on a continuous Gaussian `path`."""

    method: ClassVar[str] = ""  # the config name (process.method)
    settings: ClassVar[tuple[Setting, ...]] = ()
    # Continuous t in [0, 1] enters the network as 1000 t, DDPM's range of steps, so that the sinusoidal embedding's
    # frequencies (tuned for integer steps) still separate nearby times.
    time_scale: ClassVar[float] = 1000.0
    default_sampler: ClassVar[str] = "heun"
    sampling_steps: ClassVar[int] = 50  # steps of the default sampler
    learned_variance = False  # only DDPM learns a reverse variance (iDDPM)
    variance = "beta_tilde"  # the ancestral sampler's default on the path's VP view: the posterior variance
    pixel_decoder = False
    T = None  # continuous time: no discrete steps

    def __init__(self, path: GaussianPath, prediction: PredictionType | str):
        self.path = path
        self.prediction = PredictionType.parse(prediction)

    def out_channels(self, channels: int) -> int:
        """Network output channels for images with `channels` channels."""
        return channels

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings (the process section of config.json); each family names its own."""

    def default_steps(self, sampler: str) -> int:
        """The family's default number of sampling steps."""
        return self.sampling_steps

    def vp_schedule(self, steps: int, spacing: str = "uniform") -> NoiseSchedule:
        """The path's K-step VP view for DDPM/DDIM (`paths.vp_schedule`)."""
        return vp_schedule(self.path, steps, spacing)

    def timestep_sampler(self) -> LossSecondMomentSampler | None:
        """None: t follows `draw_t`."""
        return None

    def draw_t(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n training times, uniform on [t_data, t_noise] (float64)."""
        lo, hi = sorted((self.path.t_data, self.path.t_noise))
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training noise for a batch of data of `shape`: t from `draw_t` and eps ~ N(0, I)."""
        t = self.draw_t(shape[0], generator)
        eps = torch.randn(shape, generator=generator)
        return t, eps

    def x_t(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps, a draw from the path's marginal given x0."""
        return expand_like(self.path.alpha(t), x0) * x0 + expand_like(self.path.sigma(t), x0) * eps

    def target(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """What the network should output at x_t = self.x_t(x0, t, eps)."""
        p = self.path
        d_a, d_s = p.d_alpha(t), p.d_sigma(t)
        return from_prediction(Prediction(x0, eps), self.prediction, expand_like(p.alpha(t), x0),
                               expand_like(p.sigma(t), x0), expand_like(d_a, x0), expand_like(d_s, x0))

    def loss(self, net: Network, x0: Tensor, t: Tensor, eps: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-example squared error between the network output and the target, mean over pixels."""
        x_t = self.x_t(x0, t, eps)
        t_in = t.to(x0.dtype)
        out = net(x_t, t_in, y) if y is not None else net(x_t, t_in)
        return ((out - self.target(x0, t, eps)) ** 2).flatten(1).mean(1)

    def denoiser(self, net: Network) -> Denoiser:
        """The sampler-facing model of a network trained by this process."""
        return Denoiser(net, self.prediction, self.path)
