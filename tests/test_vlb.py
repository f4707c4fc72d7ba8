"""The variational bound, Improved DDPM's learned variance and its losses (docs/maths.md sections 1-2).

Every term is checked against an independent computation (torch.distributions, scipy's normal CDF),
and the whole bound against the closed-form NLL of Gaussian data under the Bayes-optimal model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.errors import ConfigError
from diffusionlab.evaluation.likelihood import variational_bound
from diffusionlab.prediction import Prediction
from diffusionlab.processes import (
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    prior_kl,
    q_posterior,
    q_sample,
    reverse_log_variance,
    vlb_term,
)
from diffusionlab.samplers import NFECounter, sample_ddpm
from diffusionlab.schedules import make_schedule, spaced_timesteps
from diffusionlab.processes.timesteps import LossSecondMomentSampler

F64 = torch.float64
BINS = torch.arange(256, dtype=F64) / 127.5 - 1  # the 256 pixel values of data scaled to [-1, 1]


@pytest.mark.parametrize("mean,log_scale", [(0.0, -3.0), (0.37, -5.5), (-0.99, -1.0), (1.3, 0.5), (-2.0, -4.0), (0.5, 2.0)])
def test_decoder_bins_sum_to_one_and_match_scipy(mean: float, log_scale: float) -> None:
    logp = discretized_gaussian_log_likelihood(BINS, torch.full_like(BINS, mean), torch.full_like(BINS, log_scale))
    assert abs(float(logp.exp().sum()) - 1.0) < 1e-10
    # Independent: Phi((x + 1/255 - m) / s) - Phi((x - 1/255 - m) / s), outer bins open-ended.
    s = math.exp(log_scale)
    edges = torch.cat([torch.tensor([-math.inf], dtype=F64), (BINS[:-1] + 1 / 255), torch.tensor([math.inf], dtype=F64)])
    hi, lo = (edges[1:].numpy() - mean) / s, (edges[:-1].numpy() - mean) / s
    # Each difference on the side of the mean where it does not cancel: upper bins as sf(lo) - sf(hi).
    p = np.where(lo > 0, norm.sf(lo) - norm.sf(hi), norm.cdf(hi) - norm.cdf(lo))
    ok = p > 1e-200  # where scipy's difference has not underflowed
    assert torch.allclose(logp[torch.from_numpy(ok)], torch.log(torch.from_numpy(p[ok])), rtol=1e-6, atol=1e-9)


def test_decoder_is_accurate_in_the_far_tail() -> None:
    """A bin 40 standard deviations from the mean: the naive Phi difference is 0, the log stays finite and right."""
    x = torch.tensor([0.5], dtype=F64)
    logp = discretized_gaussian_log_likelihood(x, torch.tensor([0.0], dtype=F64), torch.tensor([math.log(0.5 / 40)], dtype=F64))
    expected = norm.logsf((0.5 - 1 / 255) * 80) + math.log1p(-math.exp(norm.logsf((0.5 + 1 / 255) * 80) - norm.logsf((0.5 - 1 / 255) * 80)))
    assert math.isfinite(float(logp)) and abs(float(logp) - expected) < 1e-6 * abs(expected)


def test_learned_variance_interpolates_between_the_bounds() -> None:
    s = make_schedule("cosine", 100)
    x = torch.zeros(3, 2, dtype=F64)
    for k in (1, 2, 50, 100):
        lo = reverse_log_variance(s, torch.tensor(k), x, "learned", torch.zeros_like(x))
        hi = reverse_log_variance(s, torch.tensor(k), x, "learned", torch.ones_like(x))
        mid = reverse_log_variance(s, torch.tensor(k), x, "learned", torch.full_like(x, 0.25))
        assert torch.allclose(lo, torch.full_like(x, math.log(s.posterior_variance[max(k, 2)])))  # beta~_1 := beta~_2
        assert torch.allclose(hi, torch.full_like(x, math.log(s.betas[k])))
        assert torch.allclose(mid, 0.25 * hi + 0.75 * lo)  # exp(v log beta + (1 - v) log beta~)
    with pytest.raises(ConfigError, match="learned"):
        reverse_log_variance(s, torch.tensor(3), x, "learned", None)


def test_vlb_terms_match_torch_distributions() -> None:
    s = make_schedule("linear", 200)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 6, generator=g, dtype=F64) * 2 - 1
    frac = torch.rand(4, 6, generator=g, dtype=F64)
    x0_hat = x0 + 0.1 * torch.randn(4, 6, generator=g, dtype=F64)
    for k in (2, 7, 120, 200):
        t = torch.full((4,), k)
        x_t = q_sample(s, x0, t, torch.randn(4, 6, generator=g, dtype=F64))
        pred = Prediction(x0_hat, torch.zeros_like(x0), frac)
        got = vlb_term(s, x0, x_t, torch.tensor(k), pred, "learned")
        mean_q, var_q, _ = q_posterior(s, x0, x_t, t)
        mean_p, _, _ = q_posterior(s, x0_hat, x_t, t)
        var_p = torch.exp(frac * math.log(s.betas[k]) + (1 - frac) * math.log(s.posterior_variance[k]))
        q = torch.distributions.Normal(mean_q, var_q.sqrt())
        p = torch.distributions.Normal(mean_p, var_p.sqrt())
        assert torch.allclose(got, torch.distributions.kl_divergence(q, p).sum(1), rtol=1e-9)
    # L_T against torch.distributions.
    abar_T = s.alpha_bar[-1]
    qT = torch.distributions.Normal(abar_T.sqrt() * x0, (1 - abar_T).sqrt().expand_as(x0))
    std = torch.distributions.Normal(torch.zeros_like(x0), torch.ones_like(x0))
    assert torch.allclose(prior_kl(s, x0), torch.distributions.kl_divergence(qT, std).sum(1), rtol=1e-9)


def test_vlb_term_at_step_one_is_the_decoder_nll() -> None:
    s = make_schedule("linear", 100)
    x0 = BINS[torch.tensor([0, 3, 128, 255])].reshape(1, 4)
    x1 = q_sample(s, x0, torch.ones(1, dtype=torch.long), torch.randn(1, 4, dtype=F64, generator=torch.Generator().manual_seed(1)))
    x0_hat = torch.tensor([[-0.97, -0.9, 0.02, 0.99]], dtype=F64)
    got = vlb_term(s, x0, x1, torch.tensor(1), Prediction(x0_hat, torch.zeros_like(x0)), "beta_tilde")
    # p(x0 | x1) has mean mu~_1(x0_hat, x1) = x0_hat (coef1 = 1, coef2 = 0) and variance beta~_2 (clipped).
    sd = math.sqrt(s.posterior_variance[2])
    lo = torch.cat([torch.tensor([-math.inf], dtype=F64), x0[0, 1:] - 1 / 255]).numpy()
    hi = torch.cat([x0[0, :-1] + 1 / 255, torch.tensor([math.inf], dtype=F64)]).numpy()
    p = norm.cdf((hi - x0_hat[0].numpy()) / sd) - norm.cdf((lo - x0_hat[0].numpy()) / sd)
    assert abs(float(got) + float(torch.log(torch.from_numpy(p)).sum())) < 1e-6


def _gaussian_images(mu: float, s: float, n: int, seed: int) -> torch.Tensor:
    x = mu + s * torch.randn(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _optimal_learned_net(data: GaussianMixture, s2: float, schedule):
    """eps = E[eps | x_t] and v chosen so that Sigma is the true reverse variance of Gaussian data."""
    net = AnalyticNet(data, schedule)

    def f(x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        k = int(t.round()[0])
        a2 = schedule.alpha_bar[k]
        # Var(x_{k-1} | x_k) = beta~_k + coef1_k^2 Var(x0 | x_k), Var(x0 | x_k) = s^2 (1 - abar) / (abar s^2 + 1 - abar).
        var = schedule.posterior_variance[k] + schedule.posterior_mean_coef1[k] ** 2 * s2 * (1 - a2) / (a2 * s2 + 1 - a2)
        lo, hi = schedule.posterior_log_variance_clipped[k], torch.log(schedule.betas[k])
        v = ((torch.log(var) - lo) / (hi - lo)).clamp(0, 1)
        eps = net(x.flatten(1).double(), t).reshape(x.shape)
        return torch.cat([eps, (2 * v - 1).expand_as(eps)], 1).float()

    return f


def test_bound_of_the_optimal_model_equals_the_gaussian_nll() -> None:
    """Gaussian data N(0.1, 0.2^2) on 8-bit bins: with the exact posterior mean and the true reverse variance,
    the bound in bits/dim equals the closed-form discrete NLL (the bins are 0.0078 wide, s = 0.2, so
    -log P(bin) = -log(pdf * 2/255) to within 1e-4). Measured gap +0.006 (linear), tolerance 0.03 bits/dim."""
    mu, s = 0.1, 0.2
    images = _gaussian_images(mu, s, 256, seed=1)
    x = images.double() / 127.5 - 1
    exact = float((0.5 * math.log(2 * math.pi * s * s) + (x - mu) ** 2 / (2 * s * s) - math.log(2 / 255)).mean() / math.log(2))
    data = GaussianMixture.isotropic(torch.full((16,), mu, dtype=F64), s)
    gd = GaussianDiffusion("linear", 1000, "eps", variance="learned")
    res = variational_bound(gd.denoiser(_optimal_learned_net(data, s * s, gd.schedule)), gd, images, clip_x0=False)
    assert abs(res.bits_per_dim - exact) < 0.03, (res.bits_per_dim, exact)
    assert res.n_images == 256 and res.nfe_per_image == 1000 and len(res.per_step_bpd) == 1000
    parts = res.prior_bpd + res.diffusion_bpd + res.decoder_bpd
    assert abs(parts - res.bits_per_dim) < 1e-9 and abs(sum(res.per_step_bpd) + res.prior_bpd - res.bits_per_dim) < 1e-9
    assert res.prior_bpd < 1e-4  # abar_T ~ 4e-5: x_T carries no information about x0
    # With the fixed lower-bound variance beta~ the same mean gives a looser bound (Ho et al. Table 2): measured +0.73.
    fixed = GaussianDiffusion("linear", 1000, "eps")
    loose = variational_bound(fixed.denoiser(AnalyticNet(data, fixed.schedule)), fixed, images, clip_x0=False)
    assert loose.bits_per_dim > exact + 0.3


def test_learned_variance_sampler_uses_the_respaced_bounds() -> None:
    """v = 0 is beta~ and v = 1 is beta *of the schedule being walked*: on a respaced schedule the learned
    variance must interpolate the respaced beta_k, beta~_k (iDDPM section 4), draw for draw."""
    full = make_schedule("cosine", 1000)
    strided = full.respace(spaced_timesteps(1000, 25))
    data = GaussianMixture.isotropic(torch.zeros(2, dtype=F64), 0.5)
    eps_net = AnalyticNet(data, full)
    for v, fixed in ((-1.0, "beta_tilde"), (1.0, "beta")):
        def model(x: torch.Tensor, t: torch.Tensor, v=v) -> Prediction:
            a = full.alpha_bar[int(t[0])]
            eps = eps_net(x, t)
            return Prediction((x - (1 - a).sqrt() * eps) / a.sqrt(), eps, torch.full_like(x, (v + 1) / 2))

        x_T = torch.randn(500, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
        a = sample_ddpm(model, x_T, strided, variance="learned", generator=torch.Generator().manual_seed(1))
        b = sample_ddpm(model, x_T, strided, variance=fixed, generator=torch.Generator().manual_seed(1))
        assert torch.allclose(a, b, atol=1e-10)


def test_strided_learned_variance_reproduces_the_target() -> None:
    """iDDPM's point (section 4): with few strided steps a learned variance keeps the sample spread, where
    fixed beta~ shrinks it. Target N(0.3, 0.5^2), 20k x 2 draws (std's standard error 0.35%). Measured std / 0.5:
    K = 25: learned 0.991, beta~ 0.880; K = 50: learned 0.992, beta~ 0.928. Tolerance: learned within 2%."""
    full = make_schedule("cosine", 1000)
    s = 0.5
    data = GaussianMixture.isotropic(torch.full((2,), 0.3, dtype=F64), s)
    gd = GaussianDiffusion("cosine", 1000, "eps", variance="learned")
    net = _optimal_learned_net(data, s * s, full)
    model = gd.denoiser(lambda x, t, y=None: net(x, t).double()).vp()
    for K in (25, 50):
        strided = full.respace(spaced_timesteps(1000, K))
        x_T = torch.randn(20_000, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
        counter = NFECounter(model)
        learned = sample_ddpm(counter, x_T, strided, variance="learned", generator=torch.Generator().manual_seed(1))
        fixed = sample_ddpm(model, x_T, strided, variance="beta_tilde", generator=torch.Generator().manual_seed(1))
        assert counter.nfe == K
        assert abs(float(learned.mean()) - 0.3) < 5 * s / math.sqrt(learned.numel())
        err_learned, err_fixed = abs(float(learned.std()) / s - 1), abs(float(fixed.std()) / s - 1)
        assert err_learned < 0.02 and err_fixed > 3 * err_learned, (K, err_learned, err_fixed)


def test_hybrid_loss_stops_the_mean_gradient() -> None:
    """In L_hybrid the L_vlb term trains only the variance channels; in L_vlb it trains the mean too."""
    torch.manual_seed(0)
    x0 = torch.rand(3, 1, 4, 4) * 2 - 1
    t = torch.tensor([1, 40, 90])
    eps = torch.randn(3, 1, 4, 4)

    def grads(loss: str) -> tuple[torch.Tensor, torch.Tensor]:
        gd = GaussianDiffusion("linear", 100, "eps", variance="learned", loss=loss)
        out = torch.nn.Parameter(torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(5)))
        gd.loss(lambda x, tt: out, x0, t, eps).sum().backward()
        return out.grad[:, :1].clone(), out.grad[:, 1:].clone()

    mean_simple, var_simple = grads("simple")
    mean_hybrid, var_hybrid = grads("hybrid")
    mean_vlb, var_vlb = grads("vlb")
    assert torch.equal(var_simple, torch.zeros_like(var_simple))
    assert torch.allclose(mean_hybrid, mean_simple, atol=1e-7)  # the L_vlb part adds nothing to the mean
    assert var_hybrid.abs().sum() > 0 and var_vlb.abs().sum() > 0
    assert not torch.allclose(mean_vlb, torch.zeros_like(mean_vlb))
    assert torch.allclose(var_hybrid, 0.001 * var_vlb, rtol=1e-4, atol=1e-9)  # lambda = 0.001 on the same L_vlb


def test_importance_sampler_is_uniform_then_proportional_and_unbiased() -> None:
    T = 20
    sampler = LossSecondMomentSampler(T, history=10)
    assert torch.allclose(sampler.probabilities(), torch.full((T,), 1 / T, dtype=F64))
    L = torch.linspace(5.0, 0.1, T, dtype=F64)  # term sizes: the early terms dominate, as in L_vlb
    for _ in range(10):
        sampler.update(torch.arange(1, T + 1), L)
    assert sampler.warmed_up
    p = sampler.probabilities()
    expected = L / L.sum() * (1 - 0.001) + 0.001 / T  # sqrt(E[L_t^2]) = L_t for constant terms
    assert torch.allclose(p, expected, rtol=1e-12)
    # Unbiased: E_p[w L_t] = (1/T) sum_t L_t; 200k draws, 5 standard errors.
    t, w = sampler.sample(200_000, torch.Generator().manual_seed(0))
    est = (w.double() * L[t - 1])
    assert abs(float(est.mean()) - float(L.mean())) < 5 * float(est.std()) / math.sqrt(len(est))
    # The history keeps the last 10 values; the state round-trips through JSON-able lists.
    sampler.update(torch.tensor([1] * 10), torch.full((10,), 50.0))
    other = LossSecondMomentSampler(T)
    other.load_state_dict(sampler.state_dict())
    assert torch.equal(other.values, sampler.values) and float(other.values[1].mean()) == 50.0
