"""The sigma-space model contract (Karras et al. 2022, Table 1): every Gaussian path, seen in VE coordinates.

x~ = x_t / alpha(t), sigma~ = sigma(t) / alpha(t): then x~ = x0 + sigma~ eps for every path, and the Bayes
denoiser E[x0 | x~] is the exact target `GaussianMixture.posterior_x0(x~, 1, sigma~)` whatever the path and the
network's parameterization. Tolerances are float64 rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from analytic_paths import OTPath, PathNet
from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.denoiser import Denoiser
from diffusionlab.paths import END_CLIP
from diffusionlab.errors import ConfigError
from diffusionlab.prediction import PredictionType, from_prediction, to_prediction
from diffusionlab.processes import DiscreteVPPath
from diffusionlab.schedules import make_schedule

F64 = torch.float64
MIX = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.8, -0.4], [0.6, 0.5]]), torch.tensor([0.15, 0.25]) ** 2)
SCHEDULES = {name: make_schedule(name, 1000) for name in ("linear", "cosine")}


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_discrete_path_t_from_ratio_inverts_the_noise_ratio(name: str) -> None:
    path = DiscreteVPPath(SCHEDULES[name])
    assert (path.t_noise, path.t_data) == (1000.0, 1.0)
    t = torch.arange(1, 1001, dtype=F64)
    r = path.sigma(t) / path.alpha(t)
    assert torch.allclose(path.t_from_ratio(r), t, rtol=0, atol=1e-8)  # the integer steps exactly
    # between the steps: r(t(r)) = r, and t(r(t)) = t, on random points of the range
    g = torch.Generator().manual_seed(0)
    u = torch.rand(500, generator=g, dtype=F64)
    r_rand = torch.exp(r[0].log() + u * (r[-1].log() - r[0].log()))
    t_rand = path.t_from_ratio(r_rand)
    assert bool((t_rand >= 1).all() and (t_rand <= 1000).all())
    assert torch.allclose(path.sigma(t_rand) / path.alpha(t_rand), r_rand, rtol=1e-10, atol=0)
    t_frac = 1 + 999 * u
    assert torch.allclose(path.t_from_ratio(path.sigma(t_frac) / path.alpha(t_frac)), t_frac, rtol=0, atol=1e-8)
    # the interpolated path stays variance preserving and increasing in noise
    assert torch.allclose(path.alpha(t_frac) ** 2 + path.sigma(t_frac) ** 2, torch.ones_like(t_frac), atol=1e-12)
    s = path.sigma(t_frac.sort().values)
    assert bool((s[1:] >= s[:-1]).all())


def test_ot_path_helper_inverts_its_ratio() -> None:
    path = OTPath()
    t = torch.linspace(0.01, 1, 50, dtype=F64)
    assert torch.allclose(path.t_from_ratio(path.sigma(t) / path.alpha(t)), t, rtol=1e-12)


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_sigma_model_of_ddpm_denoiser_is_the_ve_posterior_mean(kind: str, name: str) -> None:
    """D(x~, sigma~) of an analytic DDPM network equals E[x0 | x0 + sigma~ eps = x~], on and between the steps."""
    sched = SCHEDULES[name]
    den = Denoiser(AnalyticNet(MIX, sched, kind), kind, DiscreteVPPath(sched))
    s_min, s_max = den.sigma_range()
    abar = sched.alpha_bar
    assert math.isclose(s_min, math.sqrt((1 - abar[1]) / abar[1]), rel_tol=1e-12)
    assert math.isclose(s_max, math.sqrt((1 - abar[-1]) / abar[-1]), rel_tol=1e-12)
    D = den.sigma_model()
    g = torch.Generator().manual_seed(1)
    for sigma in [s_min, 0.05, 0.5, 1.0, 3.0, 20.0, s_max]:
        x0, _ = MIX.sample(256, generator=g)
        x_tilde = x0 + sigma * torch.randn(256, 2, generator=g, dtype=F64)
        expected = MIX.posterior_x0(x_tilde, 1.0, sigma)
        got = D(x_tilde, torch.tensor(sigma, dtype=F64))
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9 * max(1.0, sigma)), (sigma, (got - expected).abs().max())


@pytest.mark.parametrize("kind", ["velocity", "eps", "x0", "v", "score"])
def test_sigma_model_of_flow_denoiser_is_the_ve_posterior_mean(kind: str) -> None:
    path = OTPath()
    den = Denoiser(PathNet(MIX, path, kind), kind, path)
    s_min, s_max = den.sigma_range()
    # the data end is finite (sigma~ = sigma_min); the noise end alpha(0) = 0 is clipped to t = END_CLIP
    assert den.time_range() == (END_CLIP, 1.0)
    assert math.isclose(s_min, 1e-4, rel_tol=1e-9) and math.isclose(s_max, (1 - (1 - 1e-4) * END_CLIP) / END_CLIP, rel_tol=1e-12)
    D = den.sigma_model()
    g = torch.Generator().manual_seed(2)
    for sigma in [1e-3, 0.3, 2.0, 50.0, s_max]:
        x0, _ = MIX.sample(128, generator=g)
        x_tilde = x0 + sigma * torch.randn(128, 2, generator=g, dtype=F64)
        assert torch.allclose(D(x_tilde, torch.tensor(sigma, dtype=F64)), MIX.posterior_x0(x_tilde, 1.0, sigma), rtol=1e-8, atol=1e-8 * sigma)


@pytest.mark.parametrize("kind", list(PredictionType))
def test_eps_to_score_to_eps_round_trip_through_every_parameterization(kind: PredictionType) -> None:
    """eps -> kind -> score -> kind -> eps, exactly (float64), on a continuous path with derivatives."""
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(64, 3, generator=g, dtype=F64), torch.randn(64, 3, generator=g, dtype=F64)
    t = torch.rand(64, 1, generator=g, dtype=F64) * 0.98 + 0.01
    path = OTPath()
    coef = (path.alpha(t), path.sigma(t), path.d_alpha(t), path.d_sigma(t))
    x_t = coef[0] * x0 + coef[1] * eps
    out = from_prediction(to_prediction(eps, PredictionType.EPS, x_t, *coef), kind, *coef)
    score = from_prediction(to_prediction(out, kind, x_t, *coef), PredictionType.SCORE, *coef)
    assert torch.allclose(score, -eps / coef[1], rtol=1e-12, atol=1e-12)
    back = from_prediction(to_prediction(score, PredictionType.SCORE, x_t, *coef), kind, *coef)
    eps_back = from_prediction(to_prediction(back, kind, x_t, *coef), PredictionType.EPS, *coef)
    assert torch.allclose(back, out, rtol=1e-10, atol=1e-10) and torch.allclose(eps_back, eps, rtol=1e-10, atol=1e-10)


def test_velocity_is_the_exact_probability_flow_of_gaussian_data() -> None:
    """For x0 ~ N(mu, s^2 I) the flow is x_t = alpha mu + (x - alpha mu) sqrt(v(t) / v(t0)), v = alpha^2 s^2 + sigma^2,
    so dx/dt = alpha' mu + (x - alpha mu) v' / (2 v): the closed form Denoiser.velocity must match."""
    mu, s = torch.tensor([0.7, -0.3], dtype=F64), 0.5
    path = OTPath()
    den = Denoiser(PathNet(GaussianMixture.isotropic(mu, s), path, "eps"), "eps", path)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(100, 2, generator=g, dtype=F64)
    for t in [0.05, 0.4, 0.9]:
        tt = torch.tensor(t, dtype=F64)
        a, b, da, db = path.alpha(tt), path.sigma(tt), path.d_alpha(tt), path.d_sigma(tt)
        v, dv = a**2 * s**2 + b**2, 2 * a * da * s**2 + 2 * b * db
        expected = da * mu + (x - a * mu) * dv / (2 * v)
        assert torch.allclose(den.velocity(x, t), expected, rtol=1e-10, atol=1e-10)


def test_velocity_needs_a_continuous_path() -> None:
    den = Denoiser(AnalyticNet(MIX, SCHEDULES["linear"]), "eps", DiscreteVPPath(SCHEDULES["linear"]))
    with pytest.raises(ConfigError, match="continuous"):
        den.velocity(torch.zeros(2, 2, dtype=F64), 10.0)
