"""The model families' Gaussian paths and losses against closed forms (docs/maths.md sections 5-6; Song et al. 2021).

Flow matching (OT path), the VP and VE score SDEs and NCSN are all x_t = alpha(t) x0 + sigma(t) eps with a
regression target. For Gaussian data x0 ~ N(m, s^2 I) the best network output E[target | x_t] is affine in
x_t and known exactly (`diffusionlab.analytic`), so the least-squares minimiser of each loss over many
draws must match it within its standard error (SE); and DDIM on each path's discretisation, driven by
the Bayes-optimal network, must reproduce the data's moments.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusionlab.analytic import GaussianMixture
from diffusionlab.denoiser import Denoiser
from diffusionlab.paths import expand_like
from diffusionlab.errors import ConfigError
from diffusionlab.processes import NCSN, VESDE, VPSDE, FlowMatching, OTFlowPath, VESDEPath, VPSDEPath
from diffusionlab.samplers import sample_ddim
from diffusionlab.paths import vp_schedule
from diffusionlab.training.config import ProcessConfig, RunConfig, merge_config, preset_config

from analytic_paths import PathNet

F64 = torch.float64
N = 20_000  # draws per statistical test: SE(mean) = s / 141, SE(var) = 1% of var
MU, S = (0.7, -0.3), 0.5
GAUSS = GaussianMixture.isotropic(list(MU), S)
PROCESSES = {
    "flow": FlowMatching(1e-4),
    "vpsde": VPSDE(),
    "vesde": VESDE(0.01, 10.0),
    "ncsn": NCSN(0.01, 10.0, 22),
}
PATHS = {
    "flow": OTFlowPath(1e-4),
    "flow-sigma_min-0": OTFlowPath(0.0),
    "vpsde": VPSDEPath(),
    "vpsde-constant-beta": VPSDEPath(1.0, 1.0),
    "vesde": VESDEPath(0.01, 50.0),
    "ncsn": PROCESSES["ncsn"].path,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_draws(seed: int = 0, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws x0 ~ N(MU, S^2 I) and eps ~ N(0, I), float64, shape (n, 2)."""
    g = torch.Generator().manual_seed(seed)
    x0, _ = GAUSS.sample(n, g)
    return x0, torch.randn(n, 2, generator=g, dtype=F64)


def grid(path, n: int = 9) -> torch.Tensor:
    """n times strictly inside the path's range (t = 0 is excluded: flow's sigma/alpha is infinite there)."""
    lo, hi = sorted((path.t_data, path.t_noise))
    return torch.linspace(lo + 0.01 * (hi - lo), hi - 0.01 * (hi - lo), n, dtype=F64)


# ---- the paths ----


def test_flow_path_endpoints_are_the_noise_and_the_data():
    proc = PROCESSES["flow"]
    x0, eps = gaussian_draws(n=8)
    zero, one = torch.zeros(8, dtype=F64), torch.ones(8, dtype=F64)
    assert proc.path.t_noise == 0.0 and proc.path.t_data == 1.0  # docs/maths.md section 6: t = 0 noise, t = 1 data
    assert torch.equal(proc.x_t(x0, zero, eps), eps)  # psi_0(x0) = x0 (the noise, docs/maths.md section 6)
    assert torch.allclose(proc.x_t(x0, one, eps), x0 + 1e-4 * eps, atol=1e-15)  # psi_1 = x1 + sigma_min x0


@pytest.mark.parametrize("t", [0.2, 0.5, 0.9])
def test_flow_marginal_matches_closed_form_for_gaussian_data(t: float):
    proc = PROCESSES["flow"]
    x0, eps = gaussian_draws(seed=1)
    x_t = proc.x_t(x0, torch.full((N,), t, dtype=F64), eps)
    # x_t = t x1 + (1 - (1 - sigma_min) t) x0: mean t m, variance t^2 s^2 + (1 - (1 - sigma_min) t)^2.
    mean, var = t * torch.tensor(MU, dtype=F64), t**2 * S**2 + (1 - (1 - 1e-4) * t) ** 2
    se_mean, se_var = math.sqrt(var / N), var * math.sqrt(2 / N)
    assert (x_t.mean(0) - mean).abs().max() < 4 * se_mean
    assert (x_t.var(0) - var).abs().max() < 4 * se_var


def test_flow_target_is_the_time_derivative_of_the_conditional_path():
    proc = PROCESSES["flow"]
    x0, eps = gaussian_draws(n=16)
    t = torch.linspace(0.05, 0.95, 16, dtype=F64)
    h = 1e-6
    d_psi = (proc.x_t(x0, t + h, eps) - proc.x_t(x0, t - h, eps)) / (2 * h)
    target = proc.target(x0, t, eps)
    assert torch.allclose(target, d_psi, atol=1e-8)
    # docs/maths.md section 6 in its own names (x1 = data = our x0, x0 = noise = our eps): x1 - (1 - sigma_min) x0.
    assert torch.allclose(target, x0 - (1 - 1e-4) * eps, atol=1e-15)


def test_vp_sde_alpha_matches_the_numerical_integral_of_beta():
    path = VPSDEPath(0.1, 20.0)
    for t in (0.001, 0.1, 0.5, 1.0):
        s = torch.linspace(0, t, 20_001, dtype=F64)
        integral = torch.trapezoid(path.beta(s), s)  # int_0^t beta(s) ds
        alpha = path.alpha(torch.tensor(t, dtype=F64))
        # Song et al. 2021 eq. 33: the VP kernel's mean coefficient is exp(-1/2 int_0^t beta).
        assert alpha.item() == pytest.approx(math.exp(-0.5 * integral.item()), rel=1e-9)
        assert (alpha**2 + path.sigma(torch.tensor(t, dtype=F64)) ** 2).item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("name", list(PATHS))
def test_path_derivatives_match_finite_differences(name: str):
    path = PATHS[name]
    t, h = grid(path), 1e-6
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        fd = (f(t + h) - f(t - h)) / (2 * h)
        assert torch.allclose(df(t), fd, rtol=1e-6, atol=1e-8), f"{name}: {df.__name__}"


@pytest.mark.parametrize("name", list(PATHS))
def test_t_from_ratio_inverts_sigma_over_alpha(name: str):
    path = PATHS[name]
    t = grid(path, 25)
    r = path.sigma(t) / path.alpha(t)  # the EDM noise level of each time
    assert torch.allclose(path.t_from_ratio(r), t, rtol=1e-10, atol=1e-12)


# ---- the losses: their minimisers are the Bayes-optimal outputs ----


def _least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-dimension affine fit y = c x + d: slopes, intercepts and their standard errors (OLS), all (D,)."""
    xm, ym = x.mean(0), y.mean(0)
    sxx = ((x - xm) ** 2).sum(0)
    c = ((x - xm) * (y - ym)).sum(0) / sxx
    d = ym - c * xm
    resid_var = ((y - c * x - d) ** 2).sum(0) / (x.shape[0] - 2)
    se_c = (resid_var / sxx).sqrt()
    se_d = (resid_var * (1 / x.shape[0] + xm**2 / sxx)).sqrt()
    return c, d, se_c, se_d


def bayes_output(proc, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[target | x_t = x] for GAUSS data: the exact posterior (x0, eps) mapped to the process's output meaning."""
    return PathNet(GAUSS, proc.path, proc.prediction.value)(x, t)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_loss_minimiser_on_gaussian_data_is_the_bayes_optimal_output(name: str):
    proc = PROCESSES[name]
    level = float(proc.times[8]) if name == "ncsn" else 0.4  # NCSN trains only at its ladder's times
    t = torch.full((N,), level, dtype=F64)
    x0, eps = gaussian_draws(seed=2)
    x_t, target = proc.x_t(x0, t, eps), proc.target(x0, t, eps)
    c, d, se_c, se_d = _least_squares(x_t, target)  # the affine network minimising the loss on these draws
    # The Bayes-optimal output is affine in x_t: read its slope and intercept off two points.
    f0 = bayes_output(proc, torch.zeros(1, 2, dtype=F64), t[:1])[0]
    f1 = bayes_output(proc, torch.ones(1, 2, dtype=F64), t[:1])[0]
    assert ((c - (f1 - f0)).abs() < 4 * se_c).all(), (c, f1 - f0, se_c)
    assert ((d - f0).abs() < 4 * se_d).all(), (d, f0, se_d)


@pytest.mark.parametrize("name", ["ncsn", "vesde"])
def test_dsm_minimiser_matches_the_analytic_score(name: str):
    """The brief's check in score form: on the VE path, s*(x) = -(x - m) / (s^2 + sigma^2)."""
    proc = PROCESSES[name]
    t = torch.full((N,), float(proc.times[5]) if name == "ncsn" else 0.3, dtype=F64)
    sigma = float(proc.path.sigma(t[:1]))
    x0, eps = gaussian_draws(seed=3)
    x_t = proc.x_t(x0, t, eps)
    c, d, se_c, se_d = _least_squares(x_t, proc.target(x0, t, eps))

    def fitted(x: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:
        return c * x + d

    x = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-2.0, 3.0]], dtype=F64)
    score = proc.denoiser(fitted).score(x, t[:3])
    exact = -(x - torch.tensor(MU, dtype=F64)) / (S**2 + sigma**2)
    assert torch.allclose(exact, GAUSS.score(x, 1.0, sigma))  # the closed form is the analytic module's
    # score = -(c x + d) / sigma: its error is the fit's, in SE, divided by sigma.
    assert ((score - exact).abs() <= 4 * (se_c * x.abs() + se_d) / sigma).all(), (score, exact)


@pytest.mark.parametrize("name", ["ncsn", "vpsde", "vesde"])
def test_dsm_loss_is_the_sigma_squared_weighted_score_matching_loss(name: str):
    """docs/maths.md section 5: sigma^2 || s_theta(x_t) + eps / sigma ||^2 with s_theta = -eps_theta / sigma (per example)."""
    proc = PROCESSES[name]
    x0, eps = gaussian_draws(seed=4, n=64)
    t = proc.draw_t(64, torch.Generator().manual_seed(0))
    w = torch.tensor([[0.3, -0.2], [0.1, 0.9]], dtype=F64)

    def net(x: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:  # any network will do
        return torch.tanh(x @ w) + t_[:, None]

    sigma = expand_like(proc.path.sigma(t), x0)
    score = proc.denoiser(net).score(proc.x_t(x0, t, eps), t)
    weighted = (sigma**2 * (score + eps / sigma) ** 2).mean(1)
    assert torch.allclose(proc.loss(net, x0, t, eps), weighted, rtol=1e-10)


def test_ncsn_ladder_is_geometric_and_levels_are_drawn_uniformly():
    proc = NCSN(0.01, 10.0, 22)
    sig = proc.sigmas
    assert sig[0].item() == pytest.approx(10.0) and sig[-1].item() == pytest.approx(0.01)
    ratios = sig[:-1] / sig[1:]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))  # constant ratio gamma = sigma_i / sigma_{i+1}
    t = proc.draw_t(N, torch.Generator().manual_seed(5))
    counts = torch.stack([(t == ti).sum() for ti in proc.times]).double()
    assert counts.sum() == N  # every draw is a level of the ladder
    p = 1 / 22
    assert ((counts / N - p).abs() < 4 * math.sqrt(p * (1 - p) / N)).all()


def test_continuous_t_is_uniform_on_the_training_range():
    for proc in (PROCESSES["flow"], PROCESSES["vpsde"]):
        t = proc.draw_t(N, torch.Generator().manual_seed(6))
        lo, hi = sorted((proc.path.t_data, proc.path.t_noise))
        assert lo <= t.min() and t.max() <= hi
        # U[lo, hi]: mean (lo + hi) / 2, SE (hi - lo) / sqrt(12 N)
        assert abs(t.mean().item() - (lo + hi) / 2) < 4 * (hi - lo) / math.sqrt(12 * N)


# ---- the discretisation that the ddpm/ddim samplers walk ----


def ddim_moments(proc, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of DDIM-K on the path's K-step schedule (`paths.vp_schedule`), driven by the exact
    minimiser of the process's loss."""
    denoiser = Denoiser(PathNet(GAUSS, proc.path, proc.prediction.value), proc.prediction, proc.path)
    sched, model = vp_schedule(denoiser.path, K), denoiser.vp()
    # Start from the exact marginal at the noise end (in VP coordinates), with the noise standardised to exact
    # zero mean and unit variance: for Gaussian data every DDIM step is affine, so the output moments then
    # carry no Monte Carlo error, only the sampler's discretisation error.
    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    z = (z - z.mean(0)) / z.std(0, unbiased=False)
    abar_T = sched.alpha_bar[K]
    x = abar_T.sqrt() * torch.tensor(MU, dtype=F64) + (abar_T * S**2 + 1 - abar_T).sqrt() * z
    out = sample_ddim(model, x, sched)
    return out.mean(0), out.var(0, unbiased=False)


@pytest.mark.parametrize("name", list(PROCESSES))
def test_ddim_on_the_discretised_path_with_the_bayes_optimal_network_reproduces_the_data(name: str):
    errors = []
    for K in (50, 400):
        mean, var = ddim_moments(PROCESSES[name], K)
        assert (mean - torch.tensor(MU, dtype=F64)).abs().max() < 0.01
        errors.append((var / S**2 - 1).abs().max().item())
    # DDIM's error is O(1/K) (Song et al. 2021): 8x the steps must cut it at least 4x, and leave it under 2%.
    assert errors[1] < 0.25 * errors[0] and errors[1] < 0.02, errors


# ---- configuration ----


def _cfg(**process) -> RunConfig:
    return RunConfig.from_dict(merge_config(preset_config("digits"), {"process": process}))


def test_method_settings_are_filled_and_checked():
    cfg = _cfg(method="vpsde")
    assert (cfg.process["beta_min"], cfg.process["beta_max"], cfg.process["t_eps"]) == (0.1, 20.0, 1e-3)
    assert "sigma_min" not in cfg.process.settings  # not a vpsde setting
    assert cfg.process.build().config() == {"beta_min": 0.1, "beta_max": 20.0, "t_eps": 1e-3}
    assert cfg.to_dict()["process"] == {"method": "vpsde", "beta_min": 0.1, "beta_max": 20.0, "t_eps": 1e-3}
    assert _cfg(method="flow", sigma_min=0.01).process.build().path.sigma_min == 0.01
    assert isinstance(ProcessConfig(method="ncsn").build(), NCSN)  # the family's defaults
    bad = [
        ({"method": "gan"}, "unknown method"),
        ({"method": "flow", "beta_min": 0.2}, "beta_min is a setting of vpsde, not of method flow"),
        ({"method": "ddpm", "sigma_max": 5.0}, "not of method ddpm"),
        ({"method": "vesde", "sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min < sigma_max"),
        ({"method": "ncsn", "num_levels": 1}, "num_levels"),
        ({"method": "flow", "sigma_min": 1.0}, "sigma_min must be in"),
        ({"method": "vpsde", "t_eps": 0.0}, "t_eps"),
        ({"method": "vpsde", "beta_max": "x"}, "beta_max must be a finite number"),
        ({"method": "vpsde", "beta_max": float("inf")}, "beta_max must be a finite number"),
        ({"method": "ncsn", "num_levels": 2.5}, "num_levels must be a whole number"),
        ({"method": "flow", "variance": "learned"}, "variance is a setting of ddpm, not of method flow"),
        ({"method": "ncsn", "prediction": "v"}, "prediction is a setting of ddpm"),
        ({"method": "ddpm", "schedule": "sqrt"}, "schedule must be one of linear, cosine"),
    ]
    for process, message in bad:
        with pytest.raises(ConfigError, match=message) as e:
            _cfg(**process)
        assert "\n" not in str(e.value)


def test_family_presets_are_valid_and_name_their_method():
    for data in ("digits", "mnist"):
        for method in ("flow", "ncsn", "vpsde", "vesde"):
            cfg = RunConfig.from_dict(preset_config(f"{data}-{method}"))
            proc = cfg.process.build()
            assert proc.method == method and not proc.learned_variance and proc.out_channels(1) == 1
            assert isinstance(proc.default_sampler, str) and proc.default_steps(proc.default_sampler) >= 1
