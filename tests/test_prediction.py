"""Exact conversions between what a network can predict (docs/maths.md section 1), the model contract, and the
analytic Bayes-optimal denoiser (Tweedie's formula) that the exact-target sampler tests rely on."""

from __future__ import annotations

import math

import pytest
import torch

from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.denoiser import Denoiser
from diffusionlab.errors import ConfigError
from diffusionlab.prediction import PredictionType, Prediction, from_prediction, to_prediction
from diffusionlab.processes import DiscreteVPPath
from diffusionlab.schedules import make_schedule

KINDS = [PredictionType.EPS, PredictionType.X0, PredictionType.V, PredictionType.SCORE]
F64 = torch.float64


def _draw(seed: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=gen, dtype=F64), torch.randn(n, 3, generator=gen, dtype=F64)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["vp", "ve", "scaled"])
def test_round_trip_exact(kind: PredictionType, path: str) -> None:
    """to_prediction(from_prediction(x0, eps)) == (x0, eps) at float64 precision, on VP and non-VP paths."""
    x0, eps = _draw(1)
    gen = torch.Generator().manual_seed(2)
    if path == "vp":  # alpha^2 + sigma^2 = 1
        alpha = torch.rand(64, 1, generator=gen, dtype=F64) * 0.98 + 0.01
        sigma = (1 - alpha**2).sqrt()
    elif path == "ve":  # alpha = 1, sigma up to 80 (NCSN / EDM range)
        alpha, sigma = torch.ones(64, 1, dtype=F64), torch.exp(torch.rand(64, 1, generator=gen, dtype=F64) * 8 - 4)
    else:  # arbitrary positive pair
        alpha, sigma = torch.rand(64, 1, generator=gen, dtype=F64) + 0.1, torch.rand(64, 1, generator=gen, dtype=F64) + 0.1
    x_t = alpha * x0 + sigma * eps
    out = from_prediction(Prediction(x0, eps), kind, alpha, sigma)
    back = to_prediction(out, kind, x_t, alpha, sigma)
    assert torch.allclose(back.x0, x0, rtol=1e-11, atol=1e-11 * float(sigma.max() / alpha.min()))
    assert torch.allclose(back.eps, eps, rtol=1e-11, atol=1e-11 * float(alpha.max() / sigma.min()))
    # and the outputs mean what their names say
    expected = {
        PredictionType.EPS: eps,
        PredictionType.X0: x0,
        PredictionType.V: alpha * eps - sigma * x0,  # Salimans & Ho 2022
        PredictionType.SCORE: -(x_t - alpha * x0) / sigma**2,  # grad log N(x_t; alpha x0, sigma^2 I)
    }[kind]
    assert torch.allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_score_is_the_gradient_of_the_conditional_log_density() -> None:
    """s = -eps / sigma is grad_{x_t} log q(x_t | x0), checked by autograd."""
    x0, eps = _draw(3)
    alpha, sigma = torch.tensor(0.6, dtype=F64), torch.tensor(0.8, dtype=F64)
    x_t = (alpha * x0 + sigma * eps).requires_grad_(True)
    logq = (-0.5 * (x_t - alpha * x0) ** 2 / sigma**2).sum()
    (grad,) = torch.autograd.grad(logq, x_t)
    assert torch.allclose(from_prediction(Prediction(x0, eps), PredictionType.SCORE, alpha, sigma), grad, rtol=1e-12)


def test_v_is_the_angular_derivative_of_a_vp_path() -> None:
    """With alpha = cos(phi), sigma = sin(phi): v = d x_phi / d phi (Salimans & Ho 2022, section 4)."""
    x0, eps = _draw(4)
    phi, h = 0.7, 1e-5
    x = lambda p: math.cos(p) * x0 + math.sin(p) * eps  # noqa: E731
    fd = (x(phi + h) - x(phi - h)) / (2 * h)
    v = from_prediction(Prediction(x0, eps), PredictionType.V, torch.tensor(math.cos(phi), dtype=F64), torch.tensor(math.sin(phi), dtype=F64))
    assert torch.allclose(v, fd, rtol=0, atol=1e-9)


@pytest.mark.parametrize("path", ["trig", "ot"])
def test_velocity_round_trip_on_a_continuous_path(path: str) -> None:
    """Velocity u = alpha' x0 + sigma' eps = d x_t / dt; exact round trip, and equals a finite difference."""
    x0, eps = _draw(5)
    sigma_min = 1e-4
    if path == "trig":
        al = lambda t: math.cos(math.pi * t / 2)  # noqa: E731
        sg = lambda t: math.sin(math.pi * t / 2)  # noqa: E731
        dal = lambda t: -math.pi / 2 * math.sin(math.pi * t / 2)  # noqa: E731
        dsg = lambda t: math.pi / 2 * math.cos(math.pi * t / 2)  # noqa: E731
    else:  # flow matching (docs/maths.md section 6): x_t = t x1 + (1 - (1 - sigma_min) t) x0, data x1 plays "x0" here
        al, sg = (lambda t: t), (lambda t: 1 - (1 - sigma_min) * t)
        dal, dsg = (lambda t: 1.0), (lambda t: -(1 - sigma_min))
    for t in [0.05, 0.3, 0.77, 0.95]:
        a, s, da, ds = (torch.tensor(f(t), dtype=F64) for f in (al, sg, dal, dsg))
        x_t = a * x0 + s * eps
        u = from_prediction(Prediction(x0, eps), PredictionType.VELOCITY, a, s, da, ds)
        h = 1e-6
        fd = ((al(t + h) * x0 + sg(t + h) * eps) - (al(t - h) * x0 + sg(t - h) * eps)) / (2 * h)
        assert torch.allclose(u, fd, atol=1e-8, rtol=0)
        if path == "ot":  # the conditional flow-matching target x1 - (1 - sigma_min) x0_noise
            assert torch.allclose(u, x0 - (1 - sigma_min) * eps, rtol=1e-14, atol=1e-14)
        back = to_prediction(u, PredictionType.VELOCITY, x_t, a, s, da, ds)
        assert torch.allclose(back.x0, x0, rtol=1e-11, atol=1e-11)
        assert torch.allclose(back.eps, eps, rtol=1e-11, atol=1e-11)


def test_parameterization_errors() -> None:
    assert PredictionType.parse("v") is PredictionType.V
    with pytest.raises(ConfigError):
        PredictionType.parse("noise")
    x0, eps = _draw(6)
    one = torch.tensor(0.5, dtype=F64)
    with pytest.raises(ConfigError):
        to_prediction(x0, PredictionType.VELOCITY, x0, one, one)
    with pytest.raises(ConfigError):
        from_prediction(Prediction(x0, eps), PredictionType.VELOCITY, one, one)


MIX = GaussianMixture(
    torch.tensor([0.2, 0.5, 0.3]),
    torch.tensor([[-0.8, -0.4], [0.6, 0.5], [0.1, -0.9]]),
    torch.tensor([0.15, 0.25, 0.05]) ** 2,
)


@pytest.mark.parametrize("t", [1, 20, 200, 600, 1000])
def test_analytic_score_is_the_gradient_of_the_analytic_log_density(t: int) -> None:
    """Tweedie: grad log q_t = -E[eps | x_t] / b, and E[x0 | x_t] = (x_t + b^2 grad log q_t) / a; the
    gradient is taken by autograd of the closed-form marginal log q_t = log sum_k w_k N(x; a m_k, v_k I)."""
    sched = make_schedule("cosine", 1000)
    net = AnalyticNet(MIX, sched)
    gen = torch.Generator().manual_seed(t)
    x = (1.5 * torch.randn(256, 2, generator=gen, dtype=F64)).requires_grad_(True)
    tt = torch.full((256,), float(t), dtype=F64)
    (grad,) = torch.autograd.grad(net.log_prob(x, tt).sum(), x)
    x = x.detach()
    a, b = sched.alpha_bar[t].sqrt(), (1 - sched.alpha_bar[t]).sqrt()
    assert torch.allclose(net.score(x, tt), grad, rtol=1e-9, atol=1e-9)
    assert torch.allclose(net(x, tt), -b * grad, rtol=1e-9, atol=1e-9)  # the eps output
    x0 = AnalyticNet(MIX, sched, "x0")(x, tt)
    assert torch.allclose(x0, (x + b**2 * grad) / a, rtol=1e-8, atol=1e-8)


def test_analytic_log_density_is_normalised_and_handles_far_points() -> None:
    sched = make_schedule("linear", 1000)
    net = AnalyticNet(MIX, sched)
    g = torch.linspace(-7, 7, 1401, dtype=F64)  # +-7: q_300 has std < 1, so the mass outside is < 1e-10
    grid = torch.cartesian_prod(g, g)
    for t in [0, 5, 300]:
        # a Riemann sum of a Gaussian with >= 5 points per std is exact to far below 1e-9
        mass = net.log_prob(grid, torch.full((len(grid),), float(t))).exp().sum().item() * 0.01**2
        assert mass == pytest.approx(1.0, abs=1e-9)
    far = torch.tensor([[60.0, -80.0]], dtype=F64)  # every component density underflows: logsumexp must not
    lp = net.log_prob(far, torch.tensor([3.0]))
    assert torch.isfinite(lp).all() and torch.isfinite(net(far, torch.tensor([3.0]))).all()


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score"])
def test_denoiser_gives_the_same_prediction_for_every_output_kind(kind: str) -> None:
    """The Bayes-optimal network in any parameterization, read back through a Denoiser, gives the same
    (E[x0 | x_t], E[eps | x_t]), per-example times included."""
    sched = make_schedule("linear", 1000)
    path = DiscreteVPPath(sched)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(300, 2, generator=gen, dtype=F64)
    t = torch.randint(1, 1001, (300,), generator=gen).to(F64)
    pred = Denoiser(AnalyticNet(MIX, sched, kind), kind, path)(x, t)
    a = sched.alpha_bar[t.long()].sqrt()[:, None]
    b = (1 - sched.alpha_bar[t.long()]).sqrt()[:, None]
    assert torch.allclose(pred.eps, MIX.posterior_eps(x, a, b), rtol=1e-8, atol=1e-9)
    assert torch.allclose(pred.x0, MIX.posterior_x0(x, a, b), rtol=1e-8, atol=1e-8)
    assert torch.allclose(x, a * pred.x0 + b * pred.eps, rtol=1e-10, atol=1e-10)  # consistent with x_t
