"""Exact-target tests of the sigma-space samplers: Euler and Heun (EDM), DPM-Solver++(2M), reverse-SDE
Euler-Maruyama, predictor-corrector and annealed Langevin.

They are driven by the exact denoiser D(x~, sigma) = E[x0 | x0 + sigma eps = x~] of a Gaussian and of a
two-component mixture (`analytic.GaussianMixture.posterior_x0(x, 1, sigma)`), directly or through the adapters
of trained-model kinds (`Denoiser.sigma_model()` of a DDPM eps network or a flow-matching velocity network).
For Gaussian data the exact PF-ODE map from sigma_max to 0 is affine, x -> mu + (x - mu) S / sqrt(S^2 + smax^2),
and every stochastic sampler's moments follow scalar recursions written here from the update rules: Monte
Carlo moments are compared with those in standard errors (SE), and the samplers' own bias is bounded separately.
"""

from __future__ import annotations

import math

import pytest
import torch

from analytic_paths import OTPath, PathNet
from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.denoiser import Denoiser
from diffusionlab.errors import ConfigError
from diffusionlab.processes import GaussianDiffusion
from diffusionlab.samplers import (NFECounter, karras_sigmas, loguniform_sigmas, make_sigmas, sample_dpmpp_2m,
                                   sample_dpmpp_2m_sde,
                                   sample_euler, sample_heun, sample_langevin, sample_pc, sample_sde)
from test_samplers import _one_thread, check_gaussian_moments, check_mixture  # noqa: F401 (autouse fixture)

F64 = torch.float64
MU, S = (0.7, -0.3), 0.5
GAUSS = GaussianMixture.isotropic(list(MU), S)
MIX = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.8, -0.4], [0.6, 0.5]]), torch.tensor([0.15, 0.25]) ** 2)
SMIN, SMAX = 0.002, 80.0  # EDM's range
ODE_SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "dpmpp2m": sample_dpmpp_2m}


def ve(data: GaussianMixture):
    """The exact EDM denoiser D(x~, sigma) of `data`."""
    return lambda x, sigma: data.posterior_x0(x, 1.0, sigma)


def start(n: int, seed: int = 0, standardise: bool = False) -> torch.Tensor:
    """z ~ N(0, I) of shape (n, 2), optionally with exact zero mean and unit variance per dimension."""
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return (z - z.mean(0)) / z.std(0, unbiased=False) if standardise else z


def exact_ode_map(sigma_max: float) -> tuple[float, list[float]]:
    """The exact PF-ODE flow of N(mu, S^2) data from sigma_max to 0: x -> A x + B (per dimension)."""
    A = S / math.sqrt(S**2 + sigma_max**2)
    return A, [m * (1 - A) for m in MU]


def test_sigma_grids() -> None:
    k = karras_sigmas(18, SMIN, SMAX)
    assert len(k) == 19 and k[-1] == 0 and math.isclose(k[0], SMAX) and math.isclose(k[-2], SMIN, rel_tol=1e-12)
    assert bool((k[1:] < k[:-1]).all())
    i = torch.arange(18, dtype=F64)  # EDM eq. 5 written out
    assert torch.allclose(k[:-1], (SMAX ** (1 / 7) + i / 17 * (SMIN ** (1 / 7) - SMAX ** (1 / 7))) ** 7, rtol=1e-12)
    assert torch.allclose(karras_sigmas(5, 1.0, 5.0, rho=1.0)[:-1], torch.tensor([5.0, 4, 3, 2, 1], dtype=F64))  # rho=1: linear
    g = loguniform_sigmas(10, SMIN, SMAX)
    ratios = g[1:-1] / g[:-2]
    assert torch.allclose(ratios, ratios[0].expand(9), rtol=1e-12) and g[-1] == 0
    assert torch.equal(make_sigmas("karras", 3, 1, 2), karras_sigmas(3, 1, 2))
    for bad in [(0, SMIN, SMAX), (5, 0.0, SMAX), (5, 2.0, 1.0), (5, 1.0, math.inf)]:
        with pytest.raises(ConfigError):
            karras_sigmas(*bad)
    with pytest.raises(ConfigError):
        make_sigmas("cosine", 5, 1, 2)


@pytest.mark.parametrize("name", list(ODE_SAMPLERS))
def test_ode_samplers_converge_to_the_exact_flow_at_their_order(name: str) -> None:
    """The output std error against the exact flow (moment-matched start: no Monte Carlo error) halves per
    doubling of N for Euler and quarters for Heun and DPM-Solver++(2M).

    Measured (Karras grid, 0.002..80), relative std error at N = 10 / 20 / 40 / 80:
      euler 0.270 / 0.139 / 0.070 / 0.035;  heun 0.220 / 0.044 / 0.0098 / 0.0023;  dpmpp2m 0.159 / 0.049 / 0.0104 / 0.0024
    """
    z = start(2000, standardise=True)
    A, B = exact_ode_map(SMAX)
    errs, mean_errs = [], []
    for N in [10, 20, 40, 80]:
        out = ODE_SAMPLERS[name](ve(GAUSS), SMAX * z, karras_sigmas(N, SMIN, SMAX))
        errs.append(((out.std(0, unbiased=False) - A * SMAX) / (A * SMAX)).abs().max().item())
        mean_errs.append((out.mean(0) - torch.tensor(B, dtype=F64)).abs().max().item())
    ratios = [e / e2 for e, e2 in zip(errs, errs[1:])]
    if name == "euler":
        assert all(1.8 < r < 2.2 for r in ratios[1:]) and errs[-1] < 0.04, (errs, ratios)
    else:
        assert all(3.5 < r < 5.5 for r in ratios[1:]) and errs[-1] < 0.003, errs
    assert max(mean_errs) < 2e-3 and mean_errs[-1] < 3e-4, mean_errs  # measured: Euler 1.2e-3 at N = 10, 1.5e-4 at 80


def test_second_order_beats_euler_at_equal_nfe() -> None:
    z = start(2000, standardise=True)
    A, _ = exact_ode_map(SMAX)

    def err(fn, N: int) -> tuple[float, int]:
        model = NFECounter(ve(GAUSS))
        out = fn(model, SMAX * z, karras_sigmas(N, SMIN, SMAX))
        return ((out.std(0, unbiased=False) - A * SMAX) / (A * SMAX)).abs().max().item(), model.nfe

    e_euler, nfe_euler = err(sample_euler, 80)
    e_heun, nfe_heun = err(sample_heun, 40)
    e_dpm, nfe_dpm = err(sample_dpmpp_2m, 40)
    assert (nfe_euler, nfe_heun, nfe_dpm) == (80, 79, 40)  # Heun: 2N - 1 (Euler on the last step)
    assert e_heun < e_euler / 3 and e_dpm < e_euler / 3, (e_euler, e_heun, e_dpm)


@pytest.mark.parametrize("name,N,tol", [("euler", 200, 0.04), ("heun", 40, 0.02), ("dpmpp2m", 40, 0.02)])
def test_ode_samplers_reproduce_the_mixture(name: str, N: int, tol: float) -> None:
    """Mean, covariance and weights of the mixture; tol: the std error at N measured on the Gaussian, doubled."""
    x = ODE_SAMPLERS[name](ve(MIX), SMAX * start(20_000, seed=1), karras_sigmas(N, SMIN, SMAX))
    check_mixture(x, MIX, rel_tol=tol)


def sde_moments(sigmas: torch.Tensor, m0: float) -> tuple[float, float]:
    """Exact output mean and variance of `sample_sde` for N(m0, S^2) data from x = sigma_0 z: the score is
    -(x - m0) / v, v = S^2 + sigma^2, so x' - m0 = (1 - g2 / v)(x - m0) + sqrt(g2) z, g2 = sigma^2 - sigma'^2."""
    m, V = 0.0, sigmas[0].item() ** 2
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        g2 = s**2 - s_next**2
        c = 1 - g2 / (S**2 + s**2)
        m, V = m0 + c * (m - m0), c * c * V + (g2 if s_next > 0 else 0.0)
    return m, V


def langevin_moments(sigmas: torch.Tensor, m0: float, step_eps: float, T: int, denoise: bool) -> tuple[float, float]:
    """Exact output moments of `sample_langevin`: x' - m0 = (1 - a / (2 v))(x - m0) + sqrt(a) z per step."""
    levels = sigmas[sigmas > 0].tolist()
    m, V = 0.0, levels[0] ** 2
    for s in levels:
        a = step_eps * s**2 / levels[-1] ** 2
        c = 1 - a / (2 * (S**2 + s**2))
        for _ in range(T):
            m, V = m0 + c * (m - m0), c * c * V + a
    if denoise:  # D(x, sigma_L) = m0 + S^2 / (S^2 + sigma_L^2) (x - m0)
        c = S**2 / (S**2 + levels[-1] ** 2)
        m, V = m0 + c * (m - m0), c * c * V
    return m, V


def test_reverse_sde_reproduces_the_gaussian() -> None:
    """Euler-Maruyama is weakly first order: the exact chain's variance is 3% high at N = 300 (11% at 100)."""
    sigmas = karras_sigmas(300, SMIN, SMAX)
    model = NFECounter(ve(GAUSS))
    x = sample_sde(model, SMAX * start(20_000, seed=2), sigmas, generator=torch.Generator().manual_seed(3))
    assert model.nfe == 300
    exact = [sde_moments(sigmas, m) for m in MU]
    for (m, V), mu in zip(exact, MU):
        assert abs(m - mu) < 0.005 and 0 < V - S**2 < 0.04 * S**2, (m, V)
    check_gaussian_moments(x, [m for m, _ in exact], [V for _, V in exact], 0.0)  # MC vs the exact chain: 4 SE
    check_gaussian_moments(x, MU, [S**2] * 2, 0.04)  # vs the target: 4 SE + the chain's bias bound


def dpmpp2m_sde_moments(sigmas: torch.Tensor, m0: float) -> tuple[float, float]:
    """Exact output mean and variance of `sample_dpmpp_2m_sde` for N(m0, S^2) data from x = sigma_0 z.

    D(x, sigma) = m0 + k(sigma) (x - m0), k = S^2 / (S^2 + sigma^2), so with y = x - m0 a step is
    y' = a y_i + b y_{i-1} + sqrt(q) z: a = e^{-2h} + (1 - e^{-2h}) c1 k_i, b = -(1 - e^{-2h}) c2 k_{i-1},
    q = sigma'^2 (1 - e^{-2h}), c1 = 1 + h / (2 h_prev), c2 = h / (2 h_prev) (first and last step: c1 = 1, c2 = 0).
    The pair (y_i, y_{i-1}) is Gaussian; its means and 2x2 covariance are carried exactly."""
    s, k = sigmas.tolist(), (lambda sig: S**2 / (S**2 + sig**2))
    n = len(s) - 1
    mc, mp, Vc, Vp, C = -m0, 0.0, s[0] ** 2, 0.0, 0.0
    h_prev = None
    for i in range(n):
        if s[i + 1] == 0:  # the last step: x = D(x, sigma_{N-1})
            a, b, q = k(s[i]), 0.0, 0.0
        else:
            h = math.log(s[i] / s[i + 1])
            e = math.exp(-2 * h)
            c1, c2 = (1.0, 0.0) if h_prev is None else (1 + h / (2 * h_prev), h / (2 * h_prev))
            a, b, q = e + (1 - e) * c1 * k(s[i]), -(1 - e) * c2 * k(s[i - 1]) if i else 0.0, s[i + 1] ** 2 * (1 - e)
            h_prev = h
        mc, mp = a * mc + b * mp, mc
        Vc, Vp, C = a * a * Vc + b * b * Vp + 2 * a * b * C + q, Vc, a * Vc + b * C
    return mc + m0, Vc


def test_sde_dpm_solver_reproduces_the_gaussian_at_second_order() -> None:
    """SDE-DPM-Solver++(2M): the exact chain's variance error is +3.5% / +0.81% / +0.19% at N = 50 / 100 / 200
    (a factor ~4 per doubling: second order, where Euler-Maruyama is +11% at N = 100), and the samples match it."""
    errors = [dpmpp2m_sde_moments(karras_sigmas(N, SMIN, SMAX), MU[0])[1] / S**2 - 1 for N in (50, 100, 200)]
    assert 0 < errors[2] < errors[1] < errors[0] < 0.05 and 3 < errors[0] / errors[1] < 5 and 3 < errors[1] / errors[2] < 5
    sigmas = karras_sigmas(100, SMIN, SMAX)
    model = NFECounter(ve(GAUSS))
    x = sample_dpmpp_2m_sde(model, SMAX * start(20_000, seed=11), sigmas, generator=torch.Generator().manual_seed(12))
    assert model.nfe == 100
    exact = [dpmpp2m_sde_moments(sigmas, m) for m in MU]
    check_gaussian_moments(x, [m for m, _ in exact], [V for _, V in exact], 0.0)  # MC vs the exact chain: 4 SE
    check_gaussian_moments(x, MU, [S**2] * 2, 0.01)  # vs the target: 4 SE + the chain's 0.8%


def test_annealed_langevin_reproduces_the_gaussian() -> None:
    """docs/maths.md section 5 with L = 10 levels 80..0.05, T = 100, eps = 2e-3, and the final denoising step."""
    sigmas = loguniform_sigmas(10, 0.05, SMAX)
    model = NFECounter(ve(GAUSS))
    x = sample_langevin(model, SMAX * start(20_000, seed=4), sigmas, step_eps=2e-3, n_steps_each=100,
                        generator=torch.Generator().manual_seed(5))
    assert model.nfe == 10 * 100 + 1
    exact = [langevin_moments(sigmas, m, 2e-3, 100, True) for m in MU]
    for (m, V), mu in zip(exact, MU):
        assert abs(m - mu) < 1e-3 and abs(V - S**2) < 0.02 * S**2, (m, V)
    check_gaussian_moments(x, [m for m, _ in exact], [V for _, V in exact], 0.0)
    check_gaussian_moments(x, MU, [S**2] * 2, 0.02)
    # without the denoising step the samples keep the last level's noise: variance S^2 + sigma_L^2, plus the
    # finite-step bias of Langevin (exact chain: 0.2592 against 0.2525, +2.7%)
    m, V = langevin_moments(sigmas, MU[0], 2e-3, 100, False)
    assert 0 < V - (S**2 + 0.05**2) < 0.03 * (S**2 + 0.05**2)


def test_predictor_corrector_reproduces_the_gaussian() -> None:
    """PC with one corrector step at snr 0.16: at N = 100 the variance is within 4% (the reverse SDE alone: 11%)."""
    model = NFECounter(ve(GAUSS))
    x = sample_pc(model, SMAX * start(20_000, seed=6), karras_sigmas(100, SMIN, SMAX), snr=0.16,
                  generator=torch.Generator().manual_seed(7))
    assert model.nfe == 200
    check_gaussian_moments(x, MU, [S**2] * 2, 0.05)


@pytest.mark.parametrize("name", ["sde", "pc", "langevin", "dpmpp2m-sde"])
def test_stochastic_samplers_reproduce_the_mixture(name: str) -> None:
    z, g = SMAX * start(10_000, seed=8), torch.Generator().manual_seed(9)
    if name == "dpmpp2m-sde":
        x = sample_dpmpp_2m_sde(ve(MIX), z, karras_sigmas(100, SMIN, SMAX), generator=g)
    elif name == "sde":
        x = sample_sde(ve(MIX), z, karras_sigmas(300, SMIN, SMAX), generator=g)
    elif name == "pc":
        x = sample_pc(ve(MIX), z, karras_sigmas(100, SMIN, SMAX), generator=g)
    else:
        x = sample_langevin(ve(MIX), z, loguniform_sigmas(10, 0.05, SMAX), step_eps=2e-3, n_steps_each=100, generator=g)
    check_mixture(x, MIX, rel_tol=0.05)  # 5%: the variance biases measured on the Gaussian are <= 4%


def test_stochastic_samplers_are_seeded_and_pc_without_corrector_is_the_sde() -> None:
    sigmas, z = karras_sigmas(20, SMIN, SMAX), SMAX * start(256, seed=10)
    for fn, kw in [(sample_sde, {}), (sample_pc, {}), (sample_langevin, {"step_eps": 1e-7, "n_steps_each": 3}),
                   (sample_dpmpp_2m_sde, {})]:
        a = fn(ve(MIX), z, sigmas, generator=torch.Generator().manual_seed(1), **kw)
        b = fn(ve(MIX), z, sigmas, generator=torch.Generator().manual_seed(1), **kw)
        c = fn(ve(MIX), z, sigmas, generator=torch.Generator().manual_seed(2), **kw)
        assert bool(a.isfinite().all()) and torch.equal(a, b) and not torch.allclose(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pc = sample_pc(ve(MIX), z, sigmas, n_corrector=0, generator=g1)
    assert torch.equal(pc, sample_sde(ve(MIX), z, sigmas, generator=g2))
    assert torch.equal(g1.get_state(), g2.get_state())
    model = NFECounter(ve(MIX))
    sample_pc(model, z, sigmas, n_corrector=2, generator=g1)
    assert model.nfe == 20 * 3
    with pytest.raises(ConfigError):
        sample_pc(ve(MIX), z, sigmas, snr=0.0)
    with pytest.raises(ConfigError):
        sample_langevin(ve(MIX), z, sigmas, n_steps_each=0)


def test_heun_churn_is_seeded_and_keeps_the_target() -> None:
    """EDM Algorithm 2 with S_churn > 0 draws noise; with S_churn = 0 it is Algorithm 1 and draws none."""
    sigmas, z = karras_sigmas(40, SMIN, SMAX), SMAX * start(20_000, seed=11)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    sample_heun(ve(GAUSS), z[:8], sigmas, generator=g)
    assert torch.equal(g.get_state(), state)
    x = sample_heun(ve(GAUSS), z, sigmas, s_churn=10.0, s_tmin=0.05, s_tmax=50.0, generator=g)
    assert not torch.equal(g.get_state(), state)
    check_gaussian_moments(x, MU, [S**2] * 2, 0.03)


def test_ddpm_eps_model_through_the_sigma_adapter() -> None:
    """A DDPM eps network (analytic, linear schedule, T = 1000) sampled by DPM-Solver++ and Heun on its own
    sigma range [0.010, 157]: the network is told fractional steps."""
    gd = GaussianDiffusion("linear", 1000, "eps")
    den = gd.denoiser(AnalyticNet(MIX, gd.schedule, "eps"))
    s_min, s_max = den.sigma_range()
    z = s_max * start(10_000, seed=12)
    for fn, N in [(sample_dpmpp_2m, 40), (sample_heun, 40)]:
        check_mixture(fn(den.sigma_model(), z, karras_sigmas(N, s_min, s_max)), MIX, rel_tol=0.02)


def test_flow_matching_model_through_the_sigma_adapter() -> None:
    """A flow-matching velocity network (analytic, OT path) sampled by Heun in sigma space from its clipped t = 1e-3."""
    path = OTPath()
    den = Denoiser(PathNet(MIX, path, "velocity"), "velocity", path)
    s_min, s_max = den.sigma_range()
    x = sample_heun(den.sigma_model(), s_max * start(10_000, seed=13), karras_sigmas(40, s_min, s_max))
    check_mixture(x, MIX, rel_tol=0.02)
