"""What a network output means, and exact conversions between the meanings (docs/maths.md section 1).

All conversions are for a Gaussian path x_t = alpha_t x0 + sigma_t eps (alpha_t = sqrt(abar_t) and
sigma_t = sqrt(1 - abar_t) for DDPM). Because eps, x0, v, score and velocity are all *linear* in
(x_t, x0_hat, eps_hat), the conversions are exact for the posterior means E[x0 | x_t], E[eps | x_t]
too, which is what a trained network approximates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from torch import Tensor

from .errors import ConfigError


class PredictionType(str, Enum):
    """What a network output means; called `prediction` everywhere (config key, process and Denoiser attribute)."""

    EPS = "eps"  # the noise eps (Ho et al. 2020)
    X0 = "x0"  # the clean data
    V = "v"  # v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022)
    SCORE = "score"  # grad_x log q_t(x) = -eps / sigma_t (Song et al. 2021)
    VELOCITY = "velocity"  # d x_t / dt = alpha'_t x0 + sigma'_t eps (flow matching, Lipman et al. 2023)

    @classmethod
    def parse(cls, value: "str | PredictionType") -> "PredictionType":
        """Parse a name, with a one-line error listing the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"unknown prediction type {value!r}; choose from {', '.join(p.value for p in cls)}") from None


@dataclass(frozen=True)
class Prediction:
    """A model's estimate of the clean data and of the noise that produced x_t.

    `var_frac` is set only by a model with a learned reverse variance (Nichol & Dhariwal 2021, eq. 15):
    the interpolation v in [0, 1] of Sigma = exp(v log beta_t + (1 - v) log beta~_t), per element.
    """

    x0: Tensor
    eps: Tensor
    var_frac: Tensor | None = None


def x0_from_eps(x_t: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """x0 = (x_t - sigma_t eps) / alpha_t (DDPM eq. 4 solved for x0)."""
    return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """eps = (x_t - alpha_t x0) / sigma_t."""
    return (x_t - alpha * x0) / sigma


def v_from(x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022, section 4)."""
    return alpha * eps - sigma * x0


def score_from_eps(eps: Tensor, sigma: Tensor) -> Tensor:
    """grad log q(x_t) = -eps / sigma_t (docs/maths.md section 1; Song et al. 2021 eq. 11 for Gaussian kernels)."""
    return -eps / sigma


def to_prediction(
    output: Tensor,
    prediction: PredictionType,
    x_t: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    d_alpha: Tensor | None = None,
    d_sigma: Tensor | None = None,
) -> Prediction:
    """Turn a network `output` of meaning `prediction` into (x0_hat, eps_hat) at a point x_t of the path."""
    if prediction is PredictionType.EPS:
        return Prediction(x0_from_eps(x_t, output, alpha, sigma), output)
    if prediction is PredictionType.X0:
        return Prediction(output, eps_from_x0(x_t, output, alpha, sigma))
    if prediction is PredictionType.V:
        # alpha x_t - sigma v = (alpha^2 + sigma^2) x0 and sigma x_t + alpha v = (alpha^2 + sigma^2) eps.
        norm = alpha**2 + sigma**2
        return Prediction((alpha * x_t - sigma * output) / norm, (sigma * x_t + alpha * output) / norm)
    if prediction is PredictionType.SCORE:
        eps = -sigma * output
        return Prediction(x0_from_eps(x_t, eps, alpha, sigma), eps)
    if prediction is PredictionType.VELOCITY:
        if d_alpha is None or d_sigma is None:
            raise ConfigError("a velocity output needs a path with time derivatives (a continuous-time path)")
        # Solve [alpha sigma; alpha' sigma'] [x0; eps] = [x_t; u] for (x0, eps).
        det = alpha * d_sigma - sigma * d_alpha
        return Prediction((d_sigma * x_t - sigma * output) / det, (alpha * output - d_alpha * x_t) / det)
    raise ConfigError(f"unsupported prediction type {prediction!r}")


def from_prediction(
    pred: Prediction,
    prediction: PredictionType,
    alpha: Tensor,
    sigma: Tensor,
    d_alpha: Tensor | None = None,
    d_sigma: Tensor | None = None,
) -> Tensor:
    """The inverse of `to_prediction`: what a network of meaning `prediction` should output given (x0, eps)."""
    if prediction is PredictionType.EPS:
        return pred.eps
    if prediction is PredictionType.X0:
        return pred.x0
    if prediction is PredictionType.V:
        return v_from(pred.x0, pred.eps, alpha, sigma)
    if prediction is PredictionType.SCORE:
        return score_from_eps(pred.eps, sigma)
    if prediction is PredictionType.VELOCITY:
        if d_alpha is None or d_sigma is None:
            raise ConfigError("a velocity output needs a path with time derivatives (a continuous-time path)")
        return d_alpha * pred.x0 + d_sigma * pred.eps
    raise ConfigError(f"unsupported prediction type {prediction!r}")
