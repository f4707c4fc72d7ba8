"""Time-space ODE solvers (euler, midpoint, heun, rk4, adaptive) on the flow-matching OT path (docs/maths.md section 6).

Driven by `Denoiser.velocity` of the exact network of Gaussian and mixture data on the OT path. For Gaussian data
the flow from t = 0 (x ~ N(0, I), exactly q_0) is x(1) = mu + x(0) sqrt(S^2 + sigma_min^2): the exact target,
with no prior mismatch, so each method's error is measured against a closed form and its order checked.
"""

from __future__ import annotations

import math

import pytest
import torch

from analytic_paths import OTPath, PathNet
from diffusionlab.analytic import GaussianMixture
from diffusionlab.denoiser import Denoiser
from diffusionlab.errors import ConfigError
from diffusionlab.samplers import NFECounter, solve_ode
from test_samplers import _one_thread, check_mixture  # noqa: F401 (autouse fixture)

F64 = torch.float64
MU, S = (0.7, -0.3), 0.5
GAUSS = GaussianMixture.isotropic(list(MU), S)
MIX = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.8, -0.4], [0.6, 0.5]]), torch.tensor([0.15, 0.25]) ** 2)
PATH = OTPath()
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def field(data: GaussianMixture, kind: str = "velocity"):
    """f(x, t) = d x_t / dt of the exact network of `data`, through the Denoiser of its output kind."""
    den = Denoiser(PathNet(data, PATH, kind), kind, PATH)
    return lambda x, t: den.velocity(x, t)


def z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def exact(x0: torch.Tensor) -> torch.Tensor:
    return torch.tensor(MU, dtype=F64) + x0 * math.sqrt(S**2 + PATH.sigma_min**2)


@pytest.mark.parametrize("method", list(ORDER))
def test_fixed_step_solvers_converge_at_their_order(method: str) -> None:
    """Max error against the exact flow falls by at least ~2^order per halving of the step (K = 8..64).

    Measured max errors at K = 8 / 16 / 32 / 64 (ratios): euler 0.268 / 0.139 / 0.071 / 0.036 (1.9-2.0);
    heun 7.7e-3 / 2.4e-3 / 6.6e-4 / 1.7e-4 (3.2-3.8); midpoint 7.0e-4 / 8.9e-5 / 1.1e-5 / 1.4e-6 (7.9-8.0: on this
    linear field its h^2 term cancels); rk4 2.1e-7 / 2.8e-7 / 2.7e-8 / 2.0e-9 (10.5, 13.6: reaching 16).
    """
    x0 = z(500)
    errs = []
    for K in [8, 16, 32, 64]:
        f = NFECounter(field(GAUSS))
        out = solve_ode(f, x0, torch.linspace(0, 1, K + 1, dtype=F64), method)
        assert f.nfe == STAGES[method] * K
        errs.append((out - exact(x0)).abs().max().item())
    ratios = [e / e2 for e, e2 in zip(errs, errs[1:])]
    p = 2 ** ORDER[method]
    assert ratios[-1] > 0.75 * p and all(r > 1.8 for r in ratios[1:]), (errs, ratios)
    assert errs[-1] < {"euler": 0.04, "midpoint": 2e-6, "heun": 2e-4, "rk4": 3e-9}[method], errs


def test_adaptive_solver_meets_its_tolerance() -> None:
    x0 = z(200, seed=1)
    errs, nfes = [], []
    for rtol in [1e-3, 1e-6]:
        f = NFECounter(field(GAUSS))
        out = solve_ode(f, x0, torch.tensor([0.0, 1.0], dtype=F64), "adaptive", rtol=rtol, atol=rtol)
        errs.append((out - exact(x0)).abs().max().item())
        nfes.append(f.nfe)
    # measured: 0.061 in 14 NFE at 1e-3, 3.2e-6 in 56 NFE at 1e-6 (the tolerances are local, per step)
    assert errs[0] < 0.1 and errs[1] < 1e-5 and nfes[1] > nfes[0], (errs, nfes)
    with pytest.raises(ConfigError):
        solve_ode(field(GAUSS), x0, torch.tensor([0.0, 1.0]), "adaptive", rtol=0.0)


@pytest.mark.parametrize("method,K,kind", [("euler", 100, "velocity"), ("midpoint", 20, "velocity"),
                                           ("heun", 20, "v"), ("rk4", 10, "x0"), ("adaptive", 1, "velocity")])
def test_solvers_reproduce_the_mixture(method: str, K: int, kind: str) -> None:
    """Flow matching sampling from t = 0 to 1 on the mixture, from networks of several output kinds (eps and score
    are singular at t = 0, where alpha = 0: x0 = (x - sigma eps) / alpha; the samplers start those at t = 1e-3)."""
    x = solve_ode(field(MIX, kind), z(10_000, seed=2), torch.linspace(0, 1, K + 1, dtype=F64), method, rtol=1e-4, atol=1e-4)
    check_mixture(x, MIX, rel_tol=0.03)


def test_decreasing_grid_integrates_backwards() -> None:
    """Integrating data -> noise on a decreasing grid inverts the sampler (the flow is a bijection)."""
    x0 = z(300, seed=3)
    x1 = solve_ode(field(MIX), x0, torch.linspace(0, 1, 41, dtype=F64), "rk4")
    back = solve_ode(field(MIX), x1, torch.linspace(1, 0, 41, dtype=F64), "rk4")
    assert (back - x0).abs().max() < 1e-3
    with pytest.raises(ConfigError):
        solve_ode(field(MIX), x0, torch.linspace(0, 1, 3), "rk45")
    with pytest.raises(ConfigError):
        solve_ode(field(MIX), x0, torch.tensor([0.0]), "rk4")


@pytest.mark.parametrize("method", [*ORDER, "adaptive"])
def test_sampling_keeps_no_autograd_graph(method: str) -> None:
    """A network field with trainable weights: the solution carries no graph (one across 50 steps of an MNIST UNet
    at batch 200 held 23 GB and was killed), while the ODE likelihood can still turn grad on inside its field."""
    net = torch.nn.Linear(2, 2).double()
    x = solve_ode(lambda x, t: net(x), z(8, seed=4), torch.linspace(0, 1, 6, dtype=F64), method)
    assert not x.requires_grad and x.grad_fn is None

    def divergence_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            out = net(x_in)
            (g,) = torch.autograd.grad(out.sum(), x_in)
        return g.detach()  # the Jacobian's column sums: computable only with grad on

    y = solve_ode(divergence_field, z(8, seed=5), torch.linspace(0, 1, 3, dtype=F64), method)
    assert torch.allclose(y - z(8, seed=5), net.weight.sum(0).detach().expand(8, 2), atol=1e-6)
