"""The one model contract between trained networks and samplers.

A *network* is any callable `net(x, t, y=None) -> Tensor` (t: network time, shape (B,); y: class
labels or None). A `Denoiser` pairs it with what its output means (`PredictionType`) and with the
Gaussian path x_t = alpha(t) x0 + sigma(t) eps it was trained on, and answers the one question every
sampler asks:

    model(x_t, t) -> Prediction(x0_hat, eps_hat)

Samplers are plain functions of `(model, x, schedule, ...)`, written in the variance-preserving
notation of the papers (alpha_bar). A path that is not variance preserving (VE, flow matching) is
seen by those samplers through `Denoiser.vp()`, which rescales x by s(t) = sqrt(alpha^2 + sigma^2) so
that x / s(t) = sqrt(abar) x0 + sqrt(1 - abar) eps with abar = alpha^2 / (alpha^2 + sigma^2).

Two more views serve the continuous-time samplers:
- `Denoiser.sigma_model()`: the EDM denoiser D(x~, sigma~) -> x0_hat in variance-exploding coordinates
  x~ = x_t / alpha(t), sigma~ = sigma(t) / alpha(t) (Karras et al. 2022, eqs. 1-3 and Table 1), where
  every Gaussian path is the same ODE dx~/dsigma~ = (x~ - D(x~, sigma~)) / sigma~ (their eq. 4);
- `Denoiser.velocity()`: d x_t / dt = alpha'(t) x0_hat + sigma'(t) eps_hat, the probability-flow ODE in
  the path's own time (for flow matching, the network's v).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

from .errors import ConfigError
from .paths import GaussianPath, batch_time, expand_like, sigma_range, time_range, vp_scale
from .prediction import Prediction, PredictionType, from_prediction, to_prediction

Network = Callable[..., Tensor]
Model = Callable[[Tensor, Tensor], Prediction]  # the sampler contract: model(x_t, t) -> Prediction
SigmaModel = Callable[[Tensor, Tensor], Tensor]  # EDM's D(x~, sigma~) -> x0_hat in VE coordinates


class Denoiser:
    """A network plus the meaning of its output on a Gaussian path; `denoiser(x_t, t, y)` gives x0_hat, eps_hat."""

    def __init__(self, net: Network, prediction: PredictionType | str, path: GaussianPath,
                 learned_variance: bool = False):
        self.net = net
        self.prediction = PredictionType.parse(prediction)
        self.path = path
        # iDDPM (Nichol & Dhariwal 2021, section 3.1): the network emits 2C channels, the prediction and
        # v in [-1, 1]; the second half becomes Prediction.var_frac = (v + 1) / 2.
        self.learned_variance = learned_variance

    def output(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The raw network output at (x, t)."""
        t = batch_time(t, x)
        return self.net(x, t.to(x.dtype), y) if y is not None else self.net(x, t.to(x.dtype))

    def __call__(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Prediction:
        """Prediction(x0_hat, eps_hat) at x_t = x, network time t, condition y."""
        t = batch_time(t, x)
        path = self.path
        d_a, d_s = path.d_alpha(t), path.d_sigma(t)
        out, var_frac = self.output(x, t, y), None
        if self.learned_variance:
            out, v = out.chunk(2, dim=1)
            var_frac = (v + 1) / 2
        pred = to_prediction(
            out,
            self.prediction,
            x,
            expand_like(path.alpha(t), x),
            expand_like(path.sigma(t), x),
            None if d_a is None else expand_like(d_a, x),
            None if d_s is None else expand_like(d_s, x),
        )
        return pred if var_frac is None else Prediction(pred.x0, pred.eps, var_frac)

    def vp(self, y: Tensor | None = None) -> Model:
        """This model as seen in variance-preserving coordinates (identity for a VP path)."""

        def model(x_vp: Tensor, t: Tensor) -> Prediction:
            t = batch_time(t, x_vp)
            return self(x_vp * expand_like(vp_scale(self.path, t), x_vp), t, y)

        return model

    def time_range(self) -> tuple[float, float]:
        """(t at the noise end, t at the data end) of the path, clipped where sigma~ is infinite or 0 (`paths.time_range`)."""
        return time_range(self.path)

    def sigma_range(self, cap: float | None = None) -> tuple[float, float]:
        """(sigma~_min, sigma~_max) of `time_range()`, sigma~_max at most `cap` (`paths.sigma_range`)."""
        return sigma_range(self.path, cap)

    def sigma_model(self, y: Tensor | None = None) -> SigmaModel:
        """This model as EDM's D(x~, sigma~) -> x0_hat (Karras et al. 2022, eq. 3 and Table 1)."""

        def model(x_tilde: Tensor, sigma_tilde: Tensor) -> Tensor:
            # x_t = alpha(t) x~ at the t where sigma(t) / alpha(t) = sigma~: the same point in the path's coordinates.
            t = self.path.t_from_ratio(batch_time(sigma_tilde, x_tilde))
            return self(x_tilde * expand_like(self.path.alpha(t), x_tilde), t, y).x0

        return model

    def velocity(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """d x_t / dt = alpha'(t) x0_hat + sigma'(t) eps_hat: the probability-flow ODE in the path's time."""
        t = batch_time(t, x)
        path = self.path
        d_a, d_s = path.d_alpha(t), path.d_sigma(t)
        if d_a is None or d_s is None:
            raise ConfigError("this model's path is discrete (DDPM): time-space ODE solvers need a continuous path")
        coef = [expand_like(c, x) for c in (path.alpha(t), path.sigma(t), d_a, d_s)]
        return from_prediction(self(x, t, y), PredictionType.VELOCITY, *coef)

    def score(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """grad_x log q_t(x) = -eps_hat / sigma(t)."""
        t = batch_time(t, x)
        return -self(x, t, y).eps / expand_like(self.path.sigma(t), x)
