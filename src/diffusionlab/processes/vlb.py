"""The variational bound of Gaussian diffusion and its reverse-process variances (docs/maths.md sections 1-2).

    L = L_T + sum_{t>=2} L_{t-1} + L_0                                         (Ho et al. 2020, eq. 5)
    L_T     = KL(q(x_T | x0) || N(0, I))
    L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t))   (two Gaussians: closed form)
    L_0     = -log p_theta(x0 | x_1), a Gaussian discretized over the 256 pixel bins (eq. 13)

with p_theta(x_{t-1} | x_t) = N(mu~_t(x0_hat, x_t), Sigma_t). Sigma_t is fixed (beta_t or beta~_t, Ho
et al. section 3.2) or learned as exp(v log beta_t + (1 - v) log beta~_t) (Nichol & Dhariwal 2021,
eq. 15). Every function works on a respaced schedule too: its betas are those of the kept steps, so
the same lines give the bound of the strided K-step model (Nichol & Dhariwal, section 4).

Terms are returned per example in nats, summed over the D dimensions; bits/dim divides by D ln 2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..paths import expand_like
from ..errors import ConfigError
from ..prediction import Prediction
from ..schedules import NoiseSchedule

VARIANCES = ("beta", "beta_tilde", "learned")
BIN = 1.0 / 255.0  # half the width of one of the 256 pixel bins of data scaled to [-1, 1]


def _at(values: Tensor, k: Tensor, x: Tensor) -> Tensor:
    """values[k] for integer steps k (B,) or a single step, broadcast against x."""
    return expand_like(values.to(x.device)[torch.as_tensor(k, device=x.device).long()], x)


def reverse_log_variance(schedule: NoiseSchedule, k: Tensor, x: Tensor, variance: str,
                         var_frac: Tensor | None = None) -> Tensor:
    """log Sigma_k of p_theta(x_{k-1} | x_k): 'beta', 'beta_tilde', or 'learned' from var_frac = v in [0, 1]."""
    if variance not in VARIANCES:
        raise ConfigError(f"unknown reverse variance {variance!r}; choose from {', '.join(VARIANCES)}")
    # log beta~ is -inf at k = 1; use log beta~_2 there (docs/maths.md section 2, iDDPM reference code).
    log_small = schedule.posterior_log_variance_clipped
    if variance == "beta_tilde":
        return _at(log_small, k, x)
    log_beta = torch.log(schedule.betas.clamp(min=1e-20))
    if variance == "beta":
        # Ho et al.'s code uses beta~_2 instead of beta_1 at k = 1 so that the decoder's width is a
        # pixel-scale variance, not the (much wider) first beta of a respaced schedule.
        log_large = log_beta.clone()
        log_large[1] = log_small[1]
        return _at(log_large, k, x)
    if var_frac is None:
        raise ConfigError("variance 'learned' needs a model that outputs the variance (out_channels = 2 C)")
    # iDDPM eq. 15: interpolate in the log domain between the upper (beta) and lower (beta~) bounds.
    return var_frac * _at(log_beta, k, x) + (1 - var_frac) * _at(log_small, k, x)


def reverse_mean(schedule: NoiseSchedule, x0_hat: Tensor, x_t: Tensor, k: Tensor) -> Tensor:
    """mu_theta(x_k, k) = mu~_k(x0_hat, x_k), the posterior mean at the predicted x0 (DDPM eqs. 7 and 11)."""
    return _at(schedule.posterior_mean_coef1, k, x_t) * x0_hat + _at(schedule.posterior_mean_coef2, k, x_t) * x_t


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log1mexp(d: Tensor) -> Tensor:
    """log(1 - exp(d)) for d < 0, accurate at both ends (Maechler 2012); d is kept below 0 so that
    round-off in a far tail (where both log-CDFs are huge and nearly equal) never gives log(0)."""
    d = d.clamp(max=-1e-30)
    near = d > -math.log(2.0)
    # Each branch sees only inputs valid for it, so the branch torch.where discards has finite gradients.
    return torch.where(near, torch.log(-torch.expm1(torch.where(near, d, -1.0))),
                       torch.log1p(-torch.exp(torch.where(near, -1.0, d))))


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise log P(bin of x0) under N(mean, exp(log_scale)^2) cut into 256 bins on [-1, 1] (DDPM eq. 13).

    The outer bins extend to -inf and +inf, so the 256 probabilities sum to exactly 1.
    """
    inv_std = torch.exp(-log_scale)
    upper = (x0 - mean + BIN) * inv_std
    lower = (x0 - mean - BIN) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # log P(X <= x + 1/255): the bin at -1 reaches -inf
    log_sf_lower = torch.special.log_ndtr(-lower)  # log P(X > x - 1/255): the bin at +1 reaches +inf
    # Interior bin: log(Phi(upper) - Phi(lower)), computed on the tail that keeps precision.
    mid = torch.where(
        lower > 0,
        log_sf_lower + _log1mexp(torch.special.log_ndtr(-upper) - log_sf_lower),
        log_cdf_upper + _log1mexp(torch.special.log_ndtr(lower) - log_cdf_upper),
    )
    return torch.where(x0 < -1 + BIN, log_cdf_upper, torch.where(x0 > 1 - BIN, log_sf_lower, mid))


def gaussian_log_likelihood(x0: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise log N(x0; mean, exp(log_scale)^2): the continuous decoder L_0 of data without pixel bins (latents)."""
    return -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * ((x0 - mean) * torch.exp(-log_scale)) ** 2


DECODERS = ("discretized", "gaussian")


def prior_kl(schedule: NoiseSchedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x0) || N(0, I)) per example, in nats (no parameters: a constant of the schedule)."""
    T = schedule.T
    abar_T = schedule.alpha_bar[T].to(x0.dtype)
    mean = abar_T.sqrt() * x0
    logvar = torch.log1p(-schedule.alpha_bar[T]).to(x0.dtype).expand_as(x0)
    return normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0)).flatten(1).sum(1)


def vlb_term(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, k: Tensor, pred: Prediction, variance: str,
             decoder: str = "discretized") -> Tensor:
    """L_{k-1} per example in nats: the posterior KL for k >= 2, the decoder NLL -log p(x0 | x_1) for k = 1.

    `decoder`: 'discretized' over the 256 pixel bins (DDPM eq. 13: a bound on the discrete NLL of 8-bit images), or
    'gaussian', the continuous density N(x0; mu, Sigma_1) (for latents, which have no bins: a bound on -log p(z)).
    """
    if decoder not in DECODERS:
        raise ConfigError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
    k = torch.as_tensor(k, device=x0.device).long().expand(x0.shape[0])
    # q(x_{k-1} | x_k, x0): the target of step k (DDPM eqs. 6-7).
    true_mean = reverse_mean(schedule, x0, x_t, k)
    true_logvar = _at(schedule.posterior_log_variance_clipped, k, x0)
    # p_theta(x_{k-1} | x_k)
    mean = reverse_mean(schedule, pred.x0, x_t, k)
    logvar = reverse_log_variance(schedule, k, x_t, variance, pred.var_frac)
    terms = normal_kl(true_mean, true_logvar, mean, logvar).flatten(1).sum(1)
    first = k == 1
    if bool(first.any()):  # only the k = 1 rows need the decoder (and other rows' tails could overflow it)
        log_lik = discretized_gaussian_log_likelihood if decoder == "discretized" else gaussian_log_likelihood
        decoder_nll = -log_lik(x0[first], mean[first], 0.5 * logvar[first]).flatten(1).sum(1)
        terms = terms.masked_scatter(first, decoder_nll.to(terms.dtype))
    return terms


def bits_per_dim(nats: Tensor, dims: int) -> Tensor:
    """Convert a per-example NLL in nats to bits per dimension."""
    return nats / (dims * math.log(2.0))
