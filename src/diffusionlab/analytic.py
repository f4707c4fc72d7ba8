"""Bayes-optimal denoisers for data whose noised marginals are known in closed form.

For data x0 ~ sum_k w_k N(m_k, s_k^2 I) (an isotropic Gaussian is the case K = 1) and the VP path
x_t = a x0 + b eps with a = sqrt(abar_t), b = sqrt(1 - abar_t), eps ~ N(0, I), everything is exact:

    q_t(x) = sum_k w_k N(x; a m_k, v_k I),   v_k = a^2 s_k^2 + b^2
    r_k(x) = w_k N(x; a m_k, v_k I) / q_t(x)                        (posterior responsibilities)
    E[eps | x_t, k] = b (x_t - a m_k) / v_k,  E[x0 | x_t, k] = m_k + a s_k^2 (x_t - a m_k) / v_k
    E[eps | x_t] = sum_k r_k E[eps | x_t, k]                         (and likewise for x0)

and Tweedie's formula ties them to the score: grad log q_t(x_t) = -E[eps | x_t] / b and
E[x0 | x_t] = (x_t + b^2 grad log q_t(x_t)) / a. These are the minimisers of L_simple (the optimal
noise predictor), so samplers driven by them must reproduce the data distribution up to their own
discretisation error: the exact-target tests of docs/maths.md sections 1 and 3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .errors import ConfigError
from .prediction import PredictionType, Prediction, from_prediction
from .processes.ddpm import DiscreteVPPath
from .schedules import NoiseSchedule


def _coef(v: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or per-example (B,) coefficient as a (B, 1) or 0-dim tensor in x's dtype."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v if v.ndim == 0 else v.reshape(-1, 1)


@dataclass(frozen=True)
class GaussianMixture:
    """x0 ~ sum_k weights[k] N(means[k], variances[k] I) in D dims (variances may be 0: point masses)."""

    weights: Tensor  # (K,), sums to 1
    means: Tensor  # (K, D)
    variances: Tensor  # (K,), per-component isotropic variance s_k^2

    def __post_init__(self) -> None:
        w, m, v = (torch.as_tensor(a, dtype=torch.float64) for a in (self.weights, self.means, self.variances))
        if m.ndim != 2 or w.shape != (m.shape[0],) or v.shape != (m.shape[0],):
            raise ConfigError("a Gaussian mixture needs weights (K,), means (K, D) and variances (K,)")
        if not bool((w > 0).all()) or abs(float(w.sum()) - 1) > 1e-6 or not bool((v >= 0).all()):
            raise ConfigError("mixture weights must be positive and sum to 1, variances non-negative")
        object.__setattr__(self, "weights", w / w.sum())  # exact normalisation (float32 inputs sum to 1 +- 1e-7)
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "variances", v)

    @staticmethod
    def isotropic(mean: Tensor | list[float] | float, std: float, dim: int | None = None) -> "GaussianMixture":
        """The single Gaussian N(mean, std^2 I); a scalar mean needs `dim`."""
        mean = torch.as_tensor(mean, dtype=torch.float64)
        if mean.ndim == 0:
            if dim is None:
                raise ConfigError("a scalar mean needs the dimension `dim`")
            mean = mean.expand(dim)
        return GaussianMixture(torch.ones(1), mean.reshape(1, -1).clone(), torch.tensor([float(std) ** 2]))

    @property
    def dim(self) -> int:
        """Number of data dimensions D."""
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return self.means.shape[0]

    def mean(self) -> Tensor:
        """E[x0] = sum_k w_k m_k, shape (D,)."""
        return self.weights @ self.means

    def covariance(self) -> Tensor:
        """Cov[x0] = sum_k w_k (s_k^2 I + m_k m_k^T) - E[x0] E[x0]^T (law of total covariance), (D, D)."""
        second = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        second = second + (self.weights @ self.variances) * torch.eye(self.dim, dtype=torch.float64)
        mu = self.mean()
        return second - torch.outer(mu, mu)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """n draws x0 (n, D) and the component index (n,) each came from."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        x = self.means[k] + self.variances[k].sqrt()[:, None] * z
        return x.to(dtype), k

    def _flat(self, x: Tensor) -> Tensor:
        """x of shape (B, ...) with prod(...) = D as (B, D)."""
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ConfigError(f"expected {self.dim} data dimensions, got {flat.shape[1]}")
        return flat

    def _components(self, x: Tensor, a: Tensor | float, b: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, D) view of x, v_k = a^2 s_k^2 + b^2 (B|1, K), log r_k (B, K) and log q_t(x) (B,)."""
        flat = self._flat(x)
        a, b = _coef(a, flat), _coef(b, flat)  # (B, 1) or 0-dim
        means = self.means.to(flat)
        var = a**2 * self.variances.to(flat) + b**2  # v_k: variance of component k after noising
        var = var.clamp(min=torch.finfo(flat.dtype).tiny)  # a point mass at t = 0 has v = 0
        var = var if var.ndim == 2 else var[None]
        # ||x - a m_k||^2 = ||x||^2 - 2 a <x, m_k> + a^2 ||m_k||^2, as matrix products: reductions over
        # tiny trailing dimensions (D, K of 2 or 3) are very slow on CPU, matrix products are not.
        sq_x = flat.pow(2) @ torch.ones(self.dim, dtype=flat.dtype, device=flat.device)
        sq_m = means.pow(2) @ torch.ones(self.dim, dtype=flat.dtype, device=flat.device)
        dist2 = (sq_x[:, None] - 2 * a * (flat @ means.T) + a**2 * sq_m).clamp(min=0)
        # log w_k + log N(x; a m_k, v_k I) = log w_k - D/2 log(2 pi v_k) - ||x - a m_k||^2 / (2 v_k)
        log_joint = self.weights.to(flat).log() - 0.5 * self.dim * torch.log(2 * math.pi * var) - 0.5 * dist2 / var
        # log q_t(x) = logsumexp_k log_joint: subtract the max so far-apart components do not underflow.
        top = log_joint.amax(dim=1, keepdim=True)
        ones_k = torch.ones(self.n_components, dtype=flat.dtype, device=flat.device)
        log_q = top[:, 0] + torch.log((log_joint - top).exp() @ ones_k)
        return flat, var, log_joint - log_q[:, None], log_q

    def responsibilities(self, x: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
        """Posterior component probabilities r_k(x_t) = P(k | x_t), shape (B, K)."""
        return self._components(x, a, b)[2].exp()

    def log_prob(self, x: Tensor, a: Tensor | float = 1.0, b: Tensor | float = 0.0) -> Tensor:
        """Exact log q_t(x) of x_t = a x0 + b eps (default a = 1, b = 0: the data density), shape (B,)."""
        return self._components(x, a, b)[3]

    def _weighted(self, x: Tensor, a: Tensor | float, b: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """flat x, a, responsibilities r_k and r_k / v_k (B|1, K): the weights of E[eps | x_t] and the score."""
        if self.n_components == 1:  # one Gaussian: r = 1, no need for the densities
            flat = self._flat(x)
            a_, b_ = _coef(a, flat), _coef(b, flat)
            var = (a_**2 * self.variances.to(flat) + b_**2).clamp(min=torch.finfo(flat.dtype).tiny)
            var = var if var.ndim == 2 else var[None]
            return flat, a_, torch.ones_like(var), 1 / var
        flat, var, log_r, _ = self._components(x, a, b)
        r = log_r.exp()
        return flat, _coef(a, flat), r, r / var

    def _sum_k(self, w: Tensor, flat: Tensor, a: Tensor) -> Tensor:
        """sum_k w_k (x - a m_k) for weights w (B|1, K), shape (B, D)."""
        if w.shape[0] == 1:  # weights shared by the batch: sum_k w_k m_k is a single vector
            return flat * w.sum() - a * (w @ self.means.to(flat))
        ones_k = torch.ones(self.n_components, dtype=flat.dtype, device=flat.device)
        return flat * (w @ ones_k)[:, None] - a * (w @ self.means.to(flat))

    def posterior_eps(self, x: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
        """E[eps | x_t] = sum_k r_k b (x - a m_k) / v_k at x_t = x."""
        flat, a_, _, r_over_v = self._weighted(x, a, b)
        return (_coef(b, flat) * self._sum_k(r_over_v, flat, a_)).reshape(x.shape)

    def posterior_x0(self, x: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
        """E[x0 | x_t] = sum_k r_k (m_k + a s_k^2 (x - a m_k) / v_k) at x_t = x."""
        flat, a_, r, r_over_v = self._weighted(x, a, b)
        x0 = r @ self.means.to(flat) + a_ * self._sum_k(r_over_v * self.variances.to(flat), flat, a_)
        return x0.reshape(x.shape)

    def posterior_mean(self, x: Tensor, a: Tensor | float, b: Tensor | float) -> Prediction:
        """Prediction(E[x0 | x_t], E[eps | x_t]) at x_t = x, mixing per-component Gaussian conditionals by r_k."""
        return Prediction(self.posterior_x0(x, a, b), self.posterior_eps(x, a, b))

    def score(self, x: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
        """grad_x log q_t(x) = -sum_k r_k (x - a m_k) / v_k (equal to -E[eps | x_t] / b by Tweedie's formula)."""
        flat, a_, _, r_over_v = self._weighted(x, a, b)
        return (-self._sum_k(r_over_v, flat, a_)).reshape(x.shape)


class AnalyticNet:
    """The Bayes-optimal network `net(x, t)` for a `GaussianMixture` on a DDPM `NoiseSchedule`.

    t is the network time (an index into `schedule.alpha_bar`, rounded); the output means
    `prediction` (eps by default, or x0, v, score), so `GaussianDiffusion(...).denoiser(net)` or
    `Denoiser(net, prediction, DiscreteVPPath(schedule))` turns it into a sampler model.
    """

    def __init__(self, data: GaussianMixture, schedule: NoiseSchedule, prediction: str | PredictionType = "eps"):
        self.data = data
        self.schedule = schedule
        self.path = DiscreteVPPath(schedule)
        self.prediction = PredictionType.parse(prediction)
        if self.prediction is PredictionType.VELOCITY:
            raise ConfigError("a discrete schedule has no velocity parameterization")

    def rates(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """a = sqrt(abar_t), b = sqrt(1 - abar_t) at network times t: (B,) tensors, or 0-dim if t is one time.

        A fractional t (asked by the continuous-time samplers) gets the path's interpolated rates."""
        t = torch.as_tensor(t, device=x.device, dtype=torch.float64)
        if t.ndim > 0 and bool((t == t.reshape(-1)[0]).all()):
            t = t.reshape(-1)[0]  # one time for the whole batch (as in sampling): scalar rates are cheaper
        a, b = self.path.alpha(t), self.path.sigma(t)
        return a.to(x.dtype), b.to(x.dtype)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The optimal output of type `prediction` at (x_t, t)."""
        a, b = self.rates(t, x)
        if self.prediction is PredictionType.EPS:  # the common case: skip E[x0 | x_t]
            return self.data.posterior_eps(x, a, b)
        if self.prediction is PredictionType.X0:
            return self.data.posterior_x0(x, a, b)
        shape = (-1,) + (1,) * (x.ndim - 1) if a.ndim else ()
        pred = self.data.posterior_mean(x, a, b)
        return from_prediction(pred, self.prediction, a.reshape(shape), b.reshape(shape))

    def log_prob(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact log q_t(x) at network time t, shape (B,)."""
        a, b = self.rates(t, x)
        return self.data.log_prob(x, a, b)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """Exact grad_x log q_t(x) at network time t."""
        a, b = self.rates(t, x)
        return self.data.score(x, a, b)


class ConditionalAnalyticNet(AnalyticNet):
    """The Bayes-optimal class-conditional network `net(x, t, y)` for a mixture whose components are the classes.

    Label k < K gives component k's own optimal output (the data of class k is N(m_k, s_k^2 I)); the
    null label K, or y = None, gives the whole mixture's: exactly what a network trained with label
    dropout (Ho & Salimans 2022) converges to. `class_log_probs` is the exact noisy classifier
    log p(y | x_t) = log r_y(x_t), the target of classifier guidance.
    """

    def __init__(self, data: GaussianMixture, schedule: NoiseSchedule, prediction: str | PredictionType = "eps"):
        super().__init__(data, schedule, prediction)
        self.components = [
            AnalyticNet(GaussianMixture(torch.ones(1), data.means[k : k + 1], data.variances[k : k + 1]), schedule, prediction)
            for k in range(data.n_components)
        ]

    @property
    def null_label(self) -> int:
        """The label meaning "no class": K."""
        return self.data.n_components

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The optimal output for class y[i] at (x_t[i], t[i]) (the mixture's for the null label)."""
        out = super().__call__(x, t)
        if y is None:
            return out
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        for k, net in enumerate(self.components):
            rows = (y == k).nonzero()[:, 0]
            if len(rows):
                out[rows] = net(x[rows], t[rows])
        return out

    def class_log_probs(self, x: Tensor, t: Tensor) -> Tensor:
        """log p(k | x_t) = log r_k(x_t) for every class k, shape (B, K): the exact noisy classifier."""
        a, b = self.rates(t, x)
        return self.data._components(x, a, b)[2]
