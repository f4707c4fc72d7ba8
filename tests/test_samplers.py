"""Exact-target tests of the DDPM and DDIM samplers (docs/maths.md sections 1 and 3).

For x0 ~ N(mu, s^2 I) and for a Gaussian mixture the Bayes-optimal noise predictor E[eps | x_t] is known in
closed form (`diffusionlab.analytic`), so a sampler driven by it must reproduce the data distribution up to
its own discretisation error. For Gaussian data every step is affine in (x, z), so that discretisation error
is itself computed exactly here by scalar recursions written from the formulas of docs/maths.md; Monte Carlo moments are
then compared with tolerances in multiples of their standard errors (SE).
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.errors import ConfigError
from diffusionlab.processes import GaussianDiffusion
from diffusionlab.samplers import NFECounter, ddim_invert, sample_ddim, sample_ddpm
from diffusionlab.samplers.common import predict
from diffusionlab.schedules import NoiseSchedule, make_schedule, spaced_timesteps

F64 = torch.float64
N = 20_000  # samples per moment test: SE(mean) = s / 141, SE(var) = 1% of var for Gaussian data
MU, S = (0.7, -0.3), 0.5
GAUSS = GaussianMixture.isotropic(list(MU), S)
# Two well separated components (mean distance 1.66 = 11 s_0 = 6.7 s_1): nearest-mean labels are ~99.97% right.
MIX = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.8, -0.4], [0.6, 0.5]]), torch.tensor([0.15, 0.25]) ** 2)
PROCESSES = {name: GaussianDiffusion(name, 1000, "eps") for name in ("linear", "cosine")}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """(20000, 2) tensors are too small for intra-op threads to pay; on a shared 2-core box they cost 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_for(data: GaussianMixture, name: str = "linear"):
    """model(x_t, t) -> Prediction for the Bayes-optimal eps network, through the real Denoiser."""
    gd = PROCESSES[name]
    return gd.denoiser(AnalyticNet(data, gd.schedule, "eps"))


def x_T(n: int = N, seed: int = 0, standardise: bool = False) -> torch.Tensor:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
    if standardise:  # exact zero mean, unit variance per dimension: removes Monte Carlo error from the start
        x = (x - x.mean(0)) / x.std(0, unbiased=False)
    return x


# ---- exact discretised moments for Gaussian data (scalar recursions, one dimension of mean m0, var s2) ----


def _eps_affine(schedule: NoiseSchedule, k: int, m0: float, s2: float) -> tuple[float, float, float, float]:
    """a, b at step k and E[eps | x_t] = c x_t + d for N(m0, s2) data: b (x - a m0) / (a^2 s2 + b^2)."""
    ab = schedule.alpha_bar[k].item()
    a, b = math.sqrt(ab), math.sqrt(1 - ab)
    v = ab * s2 + (1 - ab)
    return a, b, b / v, -b * a * m0 / v


def ddim_affine(schedule: NoiseSchedule, m0: float, s2: float) -> tuple[float, float]:
    """DDIM (eta = 0) maps x_T to A x_T + B: x' = sqrt(abar') x0_hat + sqrt(1 - abar') eps_hat (Song et al. eq. 12)."""
    A, B = 1.0, 0.0
    for k in range(schedule.T, 0, -1):
        a, b, c, d = _eps_affine(schedule, k, m0, s2)
        ap, bp = math.sqrt(schedule.alpha_bar[k - 1].item()), math.sqrt(1 - schedule.alpha_bar[k - 1].item())
        e = bp - ap * b / a  # x' = (ap / a) x + (bp - ap b / a) eps_hat
        A, B = (ap / a + e * c) * A, (ap / a + e * c) * B + e * d
    return A, B


def ddpm_moments(schedule: NoiseSchedule, m0: float, s2: float, variance: str) -> tuple[float, float]:
    """Output mean and variance of Algorithm 2 from x_T ~ N(0, 1), written in the posterior form
    x_{t-1} = mu~_t(x0_hat, x_t) + sigma_t z (DDPM eq. 7), which equals the eps form of line 4."""
    m, V = 0.0, 1.0
    for k in range(schedule.T, 0, -1):
        a, b, c, d = _eps_affine(schedule, k, m0, s2)
        ab, ab_prev = a * a, schedule.alpha_bar[k - 1].item()
        beta = 1 - ab / ab_prev
        c1, c2 = math.sqrt(ab_prev) * beta / (1 - ab), math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
        # x0_hat = (x - b eps_hat) / a = ((1 - b c) x - b d) / a
        A, B = c1 * (1 - b * c) / a + c2, -c1 * b * d / a
        sigma2 = beta if variance == "beta" else (1 - ab_prev) / (1 - ab) * beta
        m, V = A * m + B, A * A * V + sigma2
    return m, V


def se_mean(x: torch.Tensor) -> torch.Tensor:
    return x.std(0) / math.sqrt(len(x))


def se_var(x: torch.Tensor) -> torch.Tensor:
    """SE of the sample variance, from the spread of (x - mean)^2 (valid for non-Gaussian data too)."""
    return ((x - x.mean(0)) ** 2).std(0) / math.sqrt(len(x))


def check_gaussian_moments(x: torch.Tensor, mean, var, var_rel_tol: float) -> None:
    """Mean within 4 SE of `mean`; variance within 4 SE + var_rel_tol * var of `var` (per dimension)."""
    mean, var = torch.as_tensor(mean, dtype=F64), torch.as_tensor(var, dtype=F64)
    assert bool(((x.mean(0) - mean).abs() < 4 * se_mean(x)).all()), (x.mean(0), mean, se_mean(x))
    assert bool(((x.var(0) - var).abs() < 4 * se_var(x) + var_rel_tol * var).all()), (x.var(0), var, se_var(x))


def nearest_component_fraction(x: torch.Tensor, data: GaussianMixture) -> torch.Tensor:
    """Fraction of samples whose nearest component mean is k, shape (K,)."""
    k = torch.cdist(x, data.means).argmin(1)
    return torch.bincount(k, minlength=data.n_components).to(F64) / len(x)


def expected_fraction_two_components(data: GaussianMixture) -> float:
    """P(nearest mean = component 0) under the exact mixture: misassignment past the bisector is Phi(-d / 2 s_k)."""
    d = (data.means[0] - data.means[1]).norm().item()
    miss = [0.5 * math.erfc(d / 2 / math.sqrt(v) / math.sqrt(2)) for v in data.variances.tolist()]
    w = data.weights.tolist()
    return w[0] * (1 - miss[0]) + w[1] * miss[1]


def check_mixture(x: torch.Tensor, data: GaussianMixture, rel_tol: float) -> None:
    """Mean (4 SE), covariance entries (4 SE + rel_tol of the scale) and weights (4 SE of a proportion)."""
    n = len(x)
    assert bool(((x.mean(0) - data.mean()).abs() < 4 * se_mean(x) + rel_tol * x.std(0)).all()), (x.mean(0), data.mean())
    cov_true = data.covariance()
    xc = x - x.mean(0)
    for i in range(2):
        for j in range(2):
            prod = xc[:, i] * xc[:, j]
            se = prod.std().item() / math.sqrt(n)
            scale = math.sqrt(cov_true[i, i].item() * cov_true[j, j].item())
            assert abs(prod.mean().item() - cov_true[i, j].item()) < 4 * se + rel_tol * scale, (i, j, prod.mean(), cov_true)
    p = expected_fraction_two_components(data)
    frac = nearest_component_fraction(x, data)[0].item()
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n), (frac, p)


# ---- DDPM, full chain ----


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_full_reproduces_gaussian(variance: str) -> None:
    sched = PROCESSES["linear"].schedule
    x = sample_ddpm(model_for(GAUSS), x_T(), sched, variance=variance, generator=torch.Generator().manual_seed(1))
    exact = [ddpm_moments(sched, m, S**2, variance) for m in MU]
    # The discretised chain itself: mean exact to 1e-5; variance 0.2509 (beta, +0.3%) and 0.2461 (beta~, -1.5%):
    # the two choices bracket s^2 = 0.25, the upper and lower bounds of Ho et al. section 3.2.
    for (m, V), mu in zip(exact, MU):
        assert abs(m - mu) < 1e-5
        assert (V > S**2) if variance == "beta" else (V < S**2)
        assert abs(V - S**2) < 0.02 * S**2
    check_gaussian_moments(x, [m for m, _ in exact], [V for _, V in exact], 0.0)  # MC vs exact chain: 4 SE
    check_gaussian_moments(x, MU, [S**2, S**2], 0.02)  # MC vs the target: 4 SE + the 2% chain bias bound


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_full_reproduces_mixture(variance: str) -> None:
    x = sample_ddpm(model_for(MIX), x_T(), PROCESSES["linear"].schedule, variance=variance, generator=torch.Generator().manual_seed(2))
    check_mixture(x, MIX, rel_tol=0.02)  # 2%: the chain bias measured on Gaussian data (above) is <= 1.6%


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_respaced_ddpm_reaches_target(variance: str) -> None:
    """Strided DDPM (iDDPM section 4) with 250 of 1000 steps: beta'_k = 1 - abar'_k / abar'_{k-1}."""
    sched = PROCESSES["linear"].schedule.respace(spaced_timesteps(1000, 250, "uniform"))
    x = sample_ddpm(model_for(GAUSS), x_T(), sched, variance=variance, generator=torch.Generator().manual_seed(3))
    exact = [ddpm_moments(sched, m, S**2, variance) for m in MU]
    for (m, V), mu in zip(exact, MU):  # exact chain: std 0.5034 (beta) / 0.4858 (beta~)
        assert abs(m - mu) < 1e-5 and abs(V - S**2) < 0.06 * S**2
    check_gaussian_moments(x, [m for m, _ in exact], [V for _, V in exact], 0.0)
    check_gaussian_moments(x, MU, [S**2, S**2], 0.06)


# ---- DDIM ----


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim50_reproduces_gaussian(name: str, spacing: str) -> None:
    sched = PROCESSES[name].schedule.respace(spaced_timesteps(1000, 50, spacing))
    xT = x_T()
    x = sample_ddim(model_for(GAUSS, name), xT, sched)
    # For Gaussian data DDIM is an affine map of x_T, computed independently from eq. 12: exact agreement.
    AB = [ddim_affine(sched, m, S**2) for m in MU]
    for d, (A, B) in enumerate(AB):
        assert torch.allclose(x[:, d], A * xT[:, d] + B, rtol=1e-9, atol=1e-9)
    # Its discretisation error: DDIM is first order, the std comes out low by 5.6% (uniform) / 3.3% (quadratic)
    # on the linear schedule, 3.1% / 2.7% on cosine; the mean is off by <= 0.0023 because N(0, I) is not
    # exactly q(x_T) (sqrt(abar_T) mu = 0.0044 on the linear schedule), an offset that does not shrink with K.
    bound = 0.065 if spacing == "uniform" else 0.04
    for (A, B), mu in zip(AB, MU):
        assert abs(B - mu) < 0.003 and abs(abs(A) - S) < bound * S
    assert bool(((x.mean(0) - torch.tensor(MU, dtype=F64)).abs() < 4 * se_mean(x) + 0.003).all())
    assert bool(((x.std(0) - S).abs() < 4 * x.std(0) / math.sqrt(2 * N) + bound * S).all()), x.std(0)
    # quadratic spacing (more steps near t = 1) is the more accurate of the two; same x_T, so a sharp comparison
    other = sample_ddim(model_for(GAUSS, name), xT, PROCESSES[name].schedule.respace(spaced_timesteps(1000, 50, "uniform")))
    if spacing == "quadratic":
        assert bool(((x.std(0) - S).abs() < (other.std(0) - S).abs()).all())


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim_error_shrinks_as_one_over_K(spacing: str) -> None:
    """First-order convergence: with a moment-matched x_T the output std error is |A_K| - s exactly, and
    halving the step size halves it (measured K * error ~ 1.40 uniform, ~ 0.83 quadratic, linear schedule)."""
    xT = x_T(1000, seed=4, standardise=True)
    errs = []
    for K in [25, 50, 100, 200]:
        sched = PROCESSES["linear"].schedule.respace(spaced_timesteps(1000, K, spacing))
        x = sample_ddim(model_for(GAUSS), xT, sched)
        errs.append((x.std(0, unbiased=False) - S).abs().max().item())
    assert errs[-1] < 0.01
    for e_K, e_2K in zip(errs, errs[1:]):
        assert 0.4 < e_2K / e_K < 0.6, errs


def test_ddim_error_shrinks_on_the_mixture() -> None:
    """Same x_T for every K: the std error of DDIM on the mixture falls by > 3x per 4x steps."""
    xT = x_T(5000, seed=5)
    target = MIX.covariance().diagonal().sqrt()
    errs = []
    for K in [10, 40, 160]:
        sched = PROCESSES["linear"].schedule.respace(spaced_timesteps(1000, K, "uniform"))
        errs.append((sample_ddim(model_for(MIX), xT, sched).std(0) - target).abs().max().item())
    assert errs[1] < errs[0] / 3 and errs[2] < errs[1] / 3, errs


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim50_reproduces_mixture(spacing: str) -> None:
    sched = PROCESSES["linear"].schedule.respace(spaced_timesteps(1000, 50, spacing))
    x = sample_ddim(model_for(MIX), x_T(seed=6), sched)
    # 5%: the 50-step std error on the Gaussian above is 3.3-5.6% (variance: twice that, so 10% there)
    check_mixture(x, MIX, rel_tol=0.05 if spacing == "quadratic" else 0.07)


@pytest.mark.parametrize("respaced", [False, True])
def test_ddim_eta1_is_ddpm_with_beta_tilde_draw_for_draw(respaced: bool) -> None:
    """eta = 1: sigma^2 = beta~_t and the mean equals mu~_t, and both samplers draw z at t = T..2 in the same
    order from the same generator (the model draws nothing), so the outputs agree to rounding."""
    sched = PROCESSES["linear"].schedule
    if respaced:
        sched = sched.respace(spaced_timesteps(1000, 50, "quadratic"))
    model = model_for(MIX)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    xT = x_T(512, seed=7)
    a = sample_ddim(model, xT, sched, eta=1.0, generator=g1)
    b = sample_ddpm(model, xT, sched, variance="beta_tilde", generator=g2)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), (a - b).abs().max()
    assert torch.equal(g1.get_state(), g2.get_state())  # the same number of draws
    c = sample_ddpm(model, xT, sched, variance="beta", generator=torch.Generator().manual_seed(9))
    assert not torch.allclose(a, c, atol=1e-3)  # ...and it is not the beta variance


def test_ddim_eta0_is_deterministic() -> None:
    sched = PROCESSES["cosine"].schedule.respace(spaced_timesteps(1000, 20, "uniform"))
    model, xT = model_for(MIX, "cosine"), x_T(256, seed=8)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    a = sample_ddim(model, xT, sched, eta=0.0, generator=g)
    assert torch.equal(g.get_state(), state)  # no noise drawn
    torch.manual_seed(123)
    b = sample_ddim(model, xT, sched, eta=0.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    c1 = sample_ddim(model, xT, sched, eta=0.5, generator=torch.Generator().manual_seed(1))
    c2 = sample_ddim(model, xT, sched, eta=0.5, generator=torch.Generator().manual_seed(2))
    assert not torch.allclose(c1, c2) and not torch.allclose(a, c1)


@pytest.mark.parametrize("data", ["gaussian", "mixture"])
def test_ddim_inversion_round_trip(data: str) -> None:
    """Encode data to x_T with the eta = 0 ODE, decode with the sampler: error below a stated bound at K = 50
    and shrinking ~ 1/K (first order: the encoder reuses eps at the start of each step).

    Measured (linear schedule, 2000 points), K = 10 / 50 / 250 / 1000:
      Gaussian RMS       0.176 / 0.039 / 0.0080 / 0.0020
      mixture median     0.088 / 0.022 / 0.0046 / 0.0012
    The mixture's RMS (0.135 / 0.042 / 0.015) is dominated by the few points between the modes, where the
    flow splits the two components and inversion is ill-conditioned (max error still 0.3 at K = 1000), so
    its bound is on the median."""
    dist = GAUSS if data == "gaussian" else MIX
    model = model_for(dist)
    x0, _ = dist.sample(2000, generator=torch.Generator().manual_seed(10))
    errs = {}
    for K in [10, 50, 250]:
        sched = PROCESSES["linear"].schedule.respace(spaced_timesteps(1000, K, "uniform"))
        latent = ddim_invert(model, x0, sched)
        err = (sample_ddim(model, latent, sched) - x0).abs()
        errs[K] = err.pow(2).mean().sqrt().item() if data == "gaussian" else err.median().item()
        if K == 250 and data == "gaussian":  # the encoding of data is (nearly) the N(0, I) prior
            assert bool(((latent.std(0) - 1).abs() < 0.05).all()) and bool((latent.mean(0).abs() < 0.1).all())
    bound = {"gaussian": 0.06, "mixture": 0.035}[data]
    assert errs[50] < bound, errs
    assert errs[250] < errs[50] / 3 < errs[10] / 9, errs


# ---- x0 clipping, NFE, network times, arguments ----


def test_clip_x0() -> None:
    sched = PROCESSES["linear"].schedule
    outside = GaussianMixture(torch.ones(1), torch.tensor([[1.5, -2.0]]), torch.zeros(1))  # a point mass off [-1, 1]
    model = model_for(outside)
    xT = x_T(64, seed=11)
    abar = sched.alpha_bar[300]
    pred = predict(model, xT, 300, abar, (-1.0, 1.0))
    assert torch.allclose(pred.x0, torch.tensor([[1.0, -1.0]], dtype=F64).expand(64, 2))
    assert torch.allclose(xT, abar.sqrt() * pred.x0 + (1 - abar).sqrt() * pred.eps, rtol=1e-12, atol=1e-12)
    resp = sched.respace(spaced_timesteps(1000, 20, "uniform"))
    target = torch.tensor([1.5, -2.0], dtype=F64)
    assert torch.allclose(sample_ddim(model, xT, resp), target.expand(64, 2), atol=1e-9)
    assert torch.allclose(sample_ddim(model, xT, resp, clip=(-1.0, 1.0)), torch.tensor([1.0, -1.0], dtype=F64).expand(64, 2), atol=1e-9)
    y = sample_ddpm(model, xT, resp, clip=(-1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(y, torch.tensor([1.0, -1.0], dtype=F64).expand(64, 2), atol=1e-9)
    # on data inside the range clipping is a no-op for DDIM's final x0_hat range: samples end in [-1, 1]
    g = sample_ddpm(model_for(GAUSS), x_T(2000, seed=12), resp, clip=(-1.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert float(g.abs().max()) <= 1 + 1e-9 and float(g.abs().max()) > 0.99


def test_nfe_counter_network_times_and_callback() -> None:
    keep = spaced_timesteps(1000, 37, "quadratic")
    sched = PROCESSES["linear"].schedule.respace(keep)
    model = model_for(GAUSS)
    seen_t: list[float] = []

    def spy(x: torch.Tensor, t: torch.Tensor):
        assert bool((t == t[0]).all())
        seen_t.append(float(t[0]))
        return model(x, t)

    steps: list[int] = []
    counter = NFECounter(spy)
    sample_ddim(counter, x_T(16), sched, callback=lambda k, x, x0: steps.append(k))
    assert counter.nfe == 37 and steps == list(range(37, 0, -1))
    assert seen_t == keep.flip(0).to(F64).tolist()  # the network is told the original (kept) times
    counter = NFECounter(model)
    sample_ddpm(counter, x_T(16), sched, generator=torch.Generator().manual_seed(0))
    assert counter.nfe == 37
    counter = NFECounter(model)
    ddim_invert(counter, x_T(16), sched)
    assert counter.nfe == 37


def test_sampler_argument_errors() -> None:
    model, sched = model_for(GAUSS), PROCESSES["linear"].schedule.respace([500, 1000])
    with pytest.raises(ConfigError):
        sample_ddim(model, x_T(4), sched, eta=1.5)
    with pytest.raises(ConfigError):
        sample_ddim(model, x_T(4), sched, eta=-0.1)
    with pytest.raises(ConfigError):
        sample_ddpm(model, x_T(4), sched, variance="learned")
    with pytest.raises(ConfigError):
        make_schedule("linear", 1000).respace([0])
