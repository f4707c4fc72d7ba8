"""The probability-flow ODE likelihood (Song et al. 2021, appendix D.2) against closed forms.

For Gaussian data N(mu, S^2 I) and the exact denoiser, the PF-ODE from sigma_min to sigma_max is affine,
x -> mu + (x - mu) k with k = sqrt((S^2 + smax^2) / (S^2 + smin^2)), and its divergence integral is D log k; so
the model's log-density is known in closed form, prior mismatch included, and the solver's error is measured
against it. The model's NLL of the data then equals the closed-form NLL of the Gaussian up to that mismatch
(the KL between q_{sigma_max} and the prior: 1e-4 nats here). Hutchinson's estimate is checked for bias in SE.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.errors import ConfigError
from diffusionlab.evaluation.ode_likelihood import BIN_WIDTH, data_log_likelihood, ode_bits_per_dim, ode_log_likelihood
from diffusionlab.processes import GaussianDiffusion
from test_samplers import _one_thread  # noqa: F401 (autouse fixture)

F64 = torch.float64
MU, S = (0.7, -0.3), 0.5
GAUSS = GaussianMixture.isotropic(list(MU), S)
MIX = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.8, -0.4], [0.6, 0.5]]), torch.tensor([0.15, 0.25]) ** 2)
SMIN, SMAX = 1e-3, 80.0


def ve(data: GaussianMixture):
    return lambda x, sigma: data.posterior_x0(x, 1.0, sigma)


def model_log_density_gaussian(x: torch.Tensor) -> torch.Tensor:
    """The exact log p of the ODE model on Gaussian data: log N(x_end; 0, (1 + smax^2) I) + D log k."""
    k = math.sqrt((S**2 + SMAX**2) / (S**2 + SMIN**2))
    mu = torch.tensor(MU, dtype=F64)
    x_end = mu + (x - mu) * k
    var = 1 + SMAX**2
    return -0.5 * (x_end**2).sum(1) / var - math.log(2 * math.pi * var) + 2 * math.log(k)


def test_exact_divergence_matches_the_closed_form_flow() -> None:
    """RK4 in log sigma: max error over 300 points 4.5e-2 nats at 20 steps, falling ~16x per doubling."""
    x, _ = GAUSS.sample(300, generator=torch.Generator().manual_seed(0))
    target = model_log_density_gaussian(x)
    errs = []
    for steps in [20, 40]:
        logp, nfe = ode_log_likelihood(ve(GAUSS), x, SMIN, SMAX, steps=steps, method="rk4", divergence="exact")
        assert nfe == 4 * steps
        errs.append((logp - target).abs().max().item())
    assert errs[0] < 0.06 and errs[1] < errs[0] / 10, errs


@pytest.mark.parametrize("method,steps", [("rk4", 40), ("adaptive", 1)])
def test_nll_of_gaussian_data_equals_the_closed_form(method: str, steps: int) -> None:
    """Mean NLL over 500 data points within 0.003 bits/dim of the Gaussian's own log-density (no dequantization)."""
    x, _ = GAUSS.sample(500, generator=torch.Generator().manual_seed(1))
    logp, _ = ode_log_likelihood(ve(GAUSS), x, SMIN, SMAX, steps=steps, method=method, rtol=1e-6, divergence="exact")
    exact = GAUSS.log_prob(x)
    bpd, bpd_exact = -logp.mean() / (2 * math.log(2)), -exact.mean() / (2 * math.log(2))
    assert abs(float(bpd - bpd_exact)) < 0.003, (float(bpd), float(bpd_exact))
    # per point, only the prior mismatch remains: |mu . x_end| / smax^2-sized terms, at most ~0.03 nats here
    assert float((logp - exact).abs().max()) < 0.05


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_on_the_mixture(probe: str) -> None:
    """Against the exact divergence on the same points: the mean difference is within 4 SE (one probe per point),
    and the exact-divergence model agrees with the mixture's closed-form log-density."""
    x, _ = MIX.sample(600, generator=torch.Generator().manual_seed(2))
    exact_div, _ = ode_log_likelihood(ve(MIX), x, SMIN, SMAX, steps=20, method="rk4", divergence="exact")
    assert abs(float((exact_div - MIX.log_prob(x)).mean())) < 0.01
    est, nfe = ode_log_likelihood(ve(MIX), x, SMIN, SMAX, steps=20, method="rk4", probe=probe,
                                  generator=torch.Generator().manual_seed(3))
    d = est - exact_div
    assert nfe == 80 and float(d.std()) > 0  # an estimate, not the exact trace
    assert abs(float(d.mean())) < 4 * float(d.std()) / math.sqrt(len(d)), (float(d.mean()), float(d.std()))
    again, _ = ode_log_likelihood(ve(MIX), x, SMIN, SMAX, steps=20, method="rk4", probe=probe,
                                  generator=torch.Generator().manual_seed(3))
    assert torch.equal(est, again)  # seeded


def test_ddpm_model_through_the_sigma_adapter() -> None:
    """An analytic DDPM eps model (linear schedule) on its own range [0.010, 157]: x = alpha_1 x~ at the data end.
    Its density is that of x_1 = alpha_1 x0 + sigma_1 eps, N(alpha_1 mu, alpha_1^2 S^2 + sigma_1^2), up to the prior."""
    gd = GaussianDiffusion("linear", 1000, "eps")
    den = gd.denoiser(AnalyticNet(GAUSS, gd.schedule, "eps"))
    x, _ = GAUSS.sample(500, generator=torch.Generator().manual_seed(4))
    logp, _ = data_log_likelihood(den, x, steps=40, method="rk4", divergence="exact")
    a1 = gd.schedule.alpha_bar[1].sqrt().item()
    q1 = GAUSS.log_prob(x, a1, math.sqrt(1 - a1**2))
    assert abs(float((logp - q1).mean())) < 2e-3
    assert abs(float((logp - GAUSS.log_prob(x)).mean())) < 2e-3  # and the data's own density: sigma_1 = 0.01 << S


def test_dequantized_bits_per_dim_of_8bit_images() -> None:
    """uint8 'images' of 4 pixels from a discretized Gaussian: bits/dim = (-log p(x + u) - D log w) / (D ln 2)
    matches the exact discrete NLL sum_k -log P(k) (P by the normal CDF over each bin) within 4 SE + 0.01."""
    mean, std = 0.1, 0.3
    data = GaussianMixture.isotropic(mean, std, dim=4)
    g = torch.Generator().manual_seed(5)
    cont = (mean + std * torch.randn(400, 4, generator=g, dtype=F64)).clamp(-1, 1)
    u8 = ((cont + 1) * 127.5).round().to(torch.uint8)
    images = u8.reshape(400, 1, 2, 2)

    class Ident:
        """A Denoiser stand-in on the VE path x~ = x (alpha = 1): sigma_range, time_range, path and sigma_model."""

        path = type("P", (), {"alpha": staticmethod(lambda t: torch.ones_like(t))})()

        def sigma_range(self):
            return SMIN, SMAX

        def time_range(self):
            return 1.0, 0.0

        def sigma_model(self, y=None):
            return lambda x, s: data.posterior_x0(x.reshape(len(x), 4), 1.0, s).reshape(x.shape)

    res = ode_bits_per_dim(Ident(), images, steps=40, method="rk4", divergence="exact", seed=0, batch_size=200)
    centre = u8.double() / 127.5 - 1
    normal = torch.distributions.Normal(mean, std)
    p_bin = normal.cdf(centre + BIN_WIDTH / 2) - normal.cdf(centre - BIN_WIDTH / 2)
    exact_bpd = float((-p_bin.log().sum(1) / (4 * math.log(2))).mean())
    assert res.n_images == 400 and res.nfe_per_image == 160
    assert abs(res.bits_per_dim - exact_bpd) < 4 * res.std_error + 0.01, (res.bits_per_dim, exact_bpd, res.std_error)


def test_arguments_are_checked() -> None:
    x = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(ConfigError):
        ode_log_likelihood(ve(GAUSS), x, SMIN, SMAX, divergence="trace")
    with pytest.raises(ConfigError):
        ode_log_likelihood(ve(GAUSS), x, SMIN, SMAX, probe="sphere")
    with pytest.raises(ConfigError):
        ode_log_likelihood(ve(GAUSS), x, 0.0, SMAX)
    with pytest.raises(ConfigError):
        ode_bits_per_dim(None, torch.zeros(2, 1, 2, 2))  # not uint8


def test_ode_nll_is_comparable_with_the_ddpm_bound() -> None:
    """The setting of test_vlb's bound test: 8-bit N(0.1, 0.2^2) images of 16 pixels and the exact DDPM eps model
    (linear, T = 1000). The dequantized ODE NLL lands on the closed-form discrete NLL, the number the tight
    (learned-variance) bound reaches, while the fixed-beta~ bound of the same model is 0.73 bits/dim looser.
    Measured: ODE 6.7274 +- 0.0167 (Hutchinson and exact divergence agree: the Jacobian is a multiple of I, where
    a Rademacher probe is exact), closed form 6.7298, fixed-beta~ bound 7.467 (64 images)."""
    from diffusionlab.evaluation.likelihood import variational_bound

    mu, s = 0.1, 0.2
    x = mu + s * torch.randn(256, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    centre = images.double() / 127.5 - 1
    exact = float((0.5 * math.log(2 * math.pi * s * s) + (centre - mu) ** 2 / (2 * s * s) - math.log(BIN_WIDTH)).mean()
                  / math.log(2))
    data = GaussianMixture.isotropic(torch.full((16,), mu, dtype=F64), s)
    gd = GaussianDiffusion("linear", 1000, "eps")
    den = gd.denoiser(AnalyticNet(data, gd.schedule))
    res = ode_bits_per_dim(den, images, steps=20, method="rk4", seed=0)
    assert abs(res.bits_per_dim - exact) < 4 * res.std_error + 0.01, (res.bits_per_dim, exact, res.std_error)
    loose = variational_bound(den, gd, images[:16], clip_x0=False)
    assert loose.bits_per_dim > res.bits_per_dim + 0.3, (loose.bits_per_dim, res.bits_per_dim)
