"""The DDPM forward process against independent derivations (docs/maths.md section 1; Ho et al. 2020).

q(x_t | x0) moments by simulation, the posterior q(x_{t-1} | x_t, x0) against Bayes' rule computed
two independent ways, the Gaussian KL against torch.distributions, and L_simple against its definition
(including what its minimum is for data whose Bayes-optimal predictor is known in closed form).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.errors import ConfigError
from diffusionlab.processes import GaussianDiffusion, normal_kl, q_posterior, q_sample
from diffusionlab.schedules import make_schedule, spaced_timesteps

SCHEDULES = {name: make_schedule(name, 1000) for name in ("linear", "cosine")}


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 10, 500, 1000])
def test_q_sample_moments(name: str, t: int) -> None:
    """x_t | x0 ~ N(sqrt(abar_t) x0, 1 - abar_t): sample mean and variance within 5 standard errors."""
    s = SCHEDULES[name]
    n = 200_000
    gen = torch.Generator().manual_seed(1000 + t)
    x0 = torch.full((n,), 0.8, dtype=torch.float64)
    eps = torch.randn(n, generator=gen, dtype=torch.float64)
    x_t = q_sample(s, x0, torch.full((n,), t), eps)
    abar = s.alpha_bar[t].item()
    mean, var = math.sqrt(abar) * 0.8, 1 - abar
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / (n - 1))  # Gaussian standard errors
    assert abs(x_t.mean().item() - mean) < 5 * se_mean
    assert abs(x_t.var().item() - var) < 5 * se_var


def test_q_sample_per_example_times_on_images() -> None:
    """Each example uses its own t: x_t[i] = sqrt(abar[t_i]) x0[i] + sqrt(1 - abar[t_i]) eps[i] exactly."""
    s = SCHEDULES["cosine"]
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 4, 4, generator=gen), torch.randn(6, 3, 4, 4, generator=gen)
    t = torch.tensor([1, 2, 17, 500, 999, 1000])
    x_t = q_sample(s, x0, t, eps)
    for i, ti in enumerate(t.tolist()):
        ab = s.alpha_bar[ti].item()
        assert torch.allclose(x_t[i], math.sqrt(ab) * x0[i] + math.sqrt(1 - ab) * eps[i], rtol=1e-6, atol=1e-6)


def _bayes_by_conditioning(s, t: int, x0: float, x_t: float) -> tuple[float, float]:
    """q(x_{t-1} | x_t, x0) by Gaussian conditioning: prior N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}),
    likelihood x_t | x_{t-1} ~ N(sqrt(alpha_t) x_{t-1}, beta_t); precisions add."""
    ab_prev, beta = s.alpha_bar[t - 1].item(), s.betas[t].item()
    alpha = 1 - beta
    prec = 1 / (1 - ab_prev) + alpha / beta
    mean = (math.sqrt(ab_prev) * x0 / (1 - ab_prev) + math.sqrt(alpha) * x_t / beta) / prec
    return mean, 1 / prec


def _bayes_on_grid(s, t: int, x0: float, x_t: float) -> tuple[float, float]:
    """q(x_{t-1} | x_t, x0) proportional to q(x_t | x_{t-1}) q(x_{t-1} | x0), normalised numerically on a grid."""
    ab_prev, beta = s.alpha_bar[t - 1].item(), s.betas[t].item()
    prior_mean, prior_std = math.sqrt(ab_prev) * x0, math.sqrt(1 - ab_prev)
    grid = torch.linspace(prior_mean - 12 * prior_std, prior_mean + 12 * prior_std, 100_001, dtype=torch.float64)
    log_prior = -0.5 * (grid - prior_mean) ** 2 / (1 - ab_prev)
    log_lik = -0.5 * (x_t - math.sqrt(1 - beta) * grid) ** 2 / beta
    w = torch.exp((log_prior + log_lik) - (log_prior + log_lik).max())
    w = w / w.sum()
    mean = (w * grid).sum().item()
    return mean, (w * (grid - mean) ** 2).sum().item()


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [2, 3, 10, 500, 999, 1000])
def test_posterior_matches_bayes_rule(name: str, t: int) -> None:
    s = SCHEDULES[name]
    x0 = torch.tensor([0.6, -0.9, 0.1], dtype=torch.float64)
    # x_t values: a typical one, and ones far into the tails of q(x_t | x0)
    ab = s.alpha_bar[t].item()
    x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * torch.tensor([0.3, -2.5, 3.0], dtype=torch.float64)
    mean, var, log_var = q_posterior(s, x0, x_t, torch.full((3,), t))
    for i in range(3):
        m_c, v_c = _bayes_by_conditioning(s, t, x0[i].item(), x_t[i].item())
        m_g, v_g = _bayes_on_grid(s, t, x0[i].item(), x_t[i].item())
        # exact conditioning: float64 agreement
        assert mean[i].item() == pytest.approx(m_c, rel=1e-9, abs=1e-12)
        assert var[i].item() == pytest.approx(v_c, rel=1e-9)
        # numerical Bayes on a 100k-point grid over +-12 prior std: quadrature error well below 1e-6
        assert mean[i].item() == pytest.approx(m_g, rel=1e-6, abs=1e-9)
        assert var[i].item() == pytest.approx(v_g, rel=1e-5)
        assert log_var[i].item() == pytest.approx(math.log(v_c), rel=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_at_t1_is_a_point_mass_at_x0(name: str) -> None:
    s = SCHEDULES[name]
    x0 = torch.tensor([0.6, -0.9], dtype=torch.float64)
    x_1 = torch.tensor([0.1, 2.0], dtype=torch.float64)
    mean, var, log_var = q_posterior(s, x0, x_1, torch.ones(2, dtype=torch.long))
    assert torch.allclose(mean, x0, rtol=1e-12, atol=1e-12)
    assert torch.equal(var, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(log_var, s.posterior_variance[2].log().expand(2))  # clipped (iDDPM)


def test_posterior_of_a_respaced_schedule_matches_bayes_rule() -> None:
    """A respaced chain is itself a Markov chain with beta'_k: its posterior obeys the same Bayes rule."""
    r = SCHEDULES["linear"].respace(spaced_timesteps(1000, 50, "quadratic"))
    for k in [2, 25, 50]:
        mean, var, _ = q_posterior(r, torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.2], dtype=torch.float64), torch.tensor([k]))
        m_c, v_c = _bayes_by_conditioning(r, k, 0.5, 0.2)
        assert mean.item() == pytest.approx(m_c, rel=1e-9) and var.item() == pytest.approx(v_c, rel=1e-9)


def test_normal_kl_matches_torch_distributions() -> None:
    gen = torch.Generator().manual_seed(3)
    m1, m2 = torch.randn(1000, generator=gen, dtype=torch.float64), torch.randn(1000, generator=gen, dtype=torch.float64)
    lv1, lv2 = 3 * torch.randn(1000, generator=gen, dtype=torch.float64), 3 * torch.randn(1000, generator=gen, dtype=torch.float64)
    expected = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    assert torch.allclose(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(normal_kl(m1, lv1, m1, lv1), torch.zeros(1000, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_prior_term_L_T_is_negligible(name: str) -> None:
    """L_T = KL(q(x_T | x0) || N(0, I)) per dimension for |x0| <= 1: small for both schedules."""
    s = SCHEDULES[name]
    ab = s.alpha_bar[-1]
    x0 = torch.linspace(-1, 1, 11, dtype=torch.float64)
    kl = normal_kl(ab.sqrt() * x0, (1 - ab).log().expand(11), torch.zeros(11), torch.zeros(11))
    assert float(kl.max()) < 5e-5 and float(kl.min()) >= 0


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_target_and_loss_match_the_definition(prediction: str) -> None:
    gd = GaussianDiffusion("cosine", 1000, prediction)
    gen = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(8, 1, 4, 4, generator=gen, dtype=torch.float64), torch.randn(8, 1, 4, 4, generator=gen, dtype=torch.float64)
    t = torch.tensor([1, 2, 100, 300, 500, 800, 999, 1000])
    a = gd.schedule.alpha_bar[t].sqrt().reshape(-1, 1, 1, 1)
    b = (1 - gd.schedule.alpha_bar[t]).sqrt().reshape(-1, 1, 1, 1)
    expected = {"eps": eps, "x0": x0, "v": a * eps - b * x0}[prediction]  # v: Salimans & Ho 2022
    assert torch.allclose(gd.target(x0, t, eps), expected, rtol=1e-12, atol=1e-14)

    seen = {}

    def net(x_t: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        seen["x_t"], seen["t"] = x_t, t_in
        return 0.25 * x_t

    loss = gd.loss(net, x0, t, eps)
    x_t = a * x0 + b * eps
    assert torch.allclose(seen["x_t"], x_t, rtol=1e-12, atol=1e-14)
    assert torch.equal(seen["t"], t.to(torch.float64))  # the network is told t itself
    manual = ((0.25 * x_t - expected) ** 2).flatten(1).mean(1)
    assert loss.shape == (8,) and torch.allclose(loss, manual, rtol=1e-12)


def test_training_draw_covers_1_to_T() -> None:
    gd = GaussianDiffusion("linear", 10 * 100, "eps")
    t, eps = gd.draw((20_000, 3), generator=torch.Generator().manual_seed(0))
    assert eps.shape == (20_000, 3) and int(t.min()) == 1 and int(t.max()) == 1000
    assert abs(t.double().mean().item() - 500.5) < 5 * 288.7 / math.sqrt(20_000)  # U{1..T}: sd = 288.7


def test_bad_process_config() -> None:
    with pytest.raises(ConfigError):
        GaussianDiffusion("linear", 1000, "score")
    with pytest.raises(ConfigError):
        GaussianDiffusion("linear", 1000, "epsilon")
    with pytest.raises(ConfigError, match="hybrid"):
        GaussianDiffusion("linear", 1000, "eps", variance="beta_tilde", loss="hybrid")
    with pytest.raises(ConfigError):
        GaussianDiffusion("linear", 1000, "eps", variance="large")
    with pytest.raises(ConfigError):
        GaussianDiffusion("linear", 1000, "eps", loss="l2")
    gd = GaussianDiffusion("cosine", 250, "v", "learned", "hybrid", 0.002)
    assert GaussianDiffusion(**gd.config()).config() == {"schedule": "cosine", "T": 250, "prediction": "v",
                                                         "variance": "learned", "loss": "hybrid", "vlb_weight": 0.002,
                                                         "timestep_sampling": "auto", "weighting": "none",
                                                         "snr_gamma": 5.0}


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_point_mass_data_has_zero_optimal_loss(prediction: str) -> None:
    """Only for a point mass is x0 (hence eps) recoverable from x_t: the optimal L_simple is exactly 0."""
    gd = GaussianDiffusion("linear", 1000, prediction)
    data = GaussianMixture(torch.ones(1), torch.tensor([[0.4, -0.7]]), torch.zeros(1))
    net = AnalyticNet(data, gd.schedule, prediction)
    gen = torch.Generator().manual_seed(0)
    x0 = data.mean().expand(1000, 2).clone()
    t = torch.randint(1, 1001, (1000,), generator=gen)
    eps = torch.randn(1000, 2, generator=gen, dtype=torch.float64)
    assert float(gd.loss(net, x0, t, eps).max()) < 1e-20


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("t", [50, 300, 700])
def test_optimal_loss_equals_posterior_variance(prediction: str, t: int) -> None:
    """For x0 ~ N(mu, s^2 I) the Bayes-optimal predictor's L_simple is the posterior variance of the target:
    with a = sqrt(abar_t), b = sqrt(1 - abar_t), v = a^2 s^2 + b^2:
    Var(eps | x_t) = a^2 s^2 / v, Var(x0 | x_t) = b^2 s^2 / v, Var(a eps - b x0 | x_t) = s^2 (a^2 + b^2)^2 / v.
    A wrong predictor (here: the optimal one plus 0.1) must do worse by 0.1^2 in expectation."""
    gd = GaussianDiffusion("linear", 1000, prediction)
    s2 = 0.5**2
    data = GaussianMixture.isotropic([0.7, -0.3], 0.5)
    net = AnalyticNet(data, gd.schedule, prediction)
    gen = torch.Generator().manual_seed(t)
    n = 50_000
    x0, _ = data.sample(n, generator=gen)
    eps = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    tt = torch.full((n,), t)
    loss = gd.loss(net, x0, tt, eps)
    a2 = gd.schedule.alpha_bar[t].item()
    b2 = 1 - a2
    v = a2 * s2 + b2
    minimum = {"eps": a2 * s2 / v, "x0": b2 * s2 / v, "v": s2 * (a2 + b2) ** 2 / v}[prediction]
    se = loss.std().item() / math.sqrt(n)
    assert abs(loss.mean().item() - minimum) < 5 * se, (loss.mean().item(), minimum, se)
    worse = gd.loss(lambda x, tm: net(x, tm) + 0.1, x0, tt, eps)
    assert abs((worse - loss).mean().item() - 0.01) < 5 * (worse - loss).std().item() / math.sqrt(n)
