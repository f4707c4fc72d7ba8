"""Classifier-free guidance on a flow-matching model's velocity (docs/maths.md sections 4 and 6).

`ClassifierFreeGuidance` combines x0_hat and eps_hat; on any Gaussian path the velocity is linear in them at
fixed (x_t, t) (v = alpha'(t) x0_hat + sigma'(t) eps_hat), so the guided velocity must be exactly
v_null + S (v_c - v_null), the rule flow-matching papers use. With the exact class-conditional network of a
two-class Gaussian mixture on the OT path, S = 1 integrates each class's own flow, whose end point is known
in closed form per sample (x(1) = m_k + x(0) sqrt(s_k^2 + sigma_min^2)); S = 0 gives the whole mixture.
The end-to-end test trains a tiny class-conditional flow run through the CLI and samples it with guidance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from analytic_paths import PathNet
from diffusionlab.analytic import GaussianMixture
from diffusionlab.cli import main
from diffusionlab.denoiser import Denoiser
from diffusionlab.guidance import ClassifierFreeGuidance
from diffusionlab.processes.flow import OTFlowPath
from diffusionlab.samplers import NFECounter, solve_ode
from helpers import TINY_NET
from test_samplers import _one_thread, check_mixture  # noqa: F401 (autouse fixture)

F64 = torch.float64
MIX = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.8, -0.4], [0.6, 0.5]]), torch.tensor([0.15, 0.25]) ** 2)
PATH = OTFlowPath()
NULL = 2  # the null label K


class ConditionalVelocityNet:
    """The exact velocity of class y's component (label < K) or of the whole mixture (null label or None)."""

    def __init__(self) -> None:
        self.mixture = PathNet(MIX, PATH, "velocity")
        self.classes = [PathNet(GaussianMixture(torch.ones(1), MIX.means[k : k + 1], MIX.variances[k : k + 1]), PATH,
                                "velocity") for k in range(2)]

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        out = self.mixture(x, t)
        if y is None:
            return out
        t = torch.as_tensor(t, dtype=F64).expand(len(x))
        for k, net in enumerate(self.classes):
            rows = (y == k).nonzero()[:, 0]
            if len(rows):
                out[rows] = net(x[rows], t[rows])
        return out


NET = ConditionalVelocityNet()
BASE = Denoiser(NET, "velocity", PATH)


def noise(n: int, seed: int) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def guided_field(S: float, y: Tensor):
    """dx/dt of the CFG-guided flow for labels y."""
    guided = ClassifierFreeGuidance(BASE, S, NULL)
    return lambda x, t: guided.velocity(x, t, y)


def test_guided_velocity_is_the_linear_combination_of_velocities() -> None:
    """v_bar = v_null + S (v_c - v_null) at random (x_t, t), mixed labels, to rounding."""
    x, t = noise(64, seed=1), torch.rand(64, generator=torch.Generator().manual_seed(2), dtype=F64) * 0.98 + 0.01
    y = torch.arange(64) % 2
    v_c, v_u = NET(x, t, y), NET(x, t, None)
    for S in (0.0, 1.0, 3.0):
        v_bar = ClassifierFreeGuidance(BASE, S, NULL).velocity(x, t, y)
        assert torch.allclose(v_bar, v_u + S * (v_c - v_u), atol=1e-10), S


def test_cfg_scale_1_integrates_each_class_flow_exactly() -> None:
    """S = 1, rk4 with 64 steps: every sample lands on its class's closed-form end point (max error < 1e-6)."""
    n = 400
    x0, y = noise(n, seed=3), torch.arange(n) % 2
    f = NFECounter(guided_field(1.0, y))
    x1 = solve_ode(f, x0, torch.linspace(0, 1, 65, dtype=F64), "rk4")
    scale = torch.sqrt(MIX.variances[y] + PATH.sigma_min**2).to(F64)[:, None]
    exact = MIX.means[y].to(F64) + x0 * scale
    assert (x1 - exact).abs().max() < 1e-6, (x1 - exact).abs().max()
    assert f.nfe == 4 * 64  # one NFE per guided call: S = 1 needs only the conditional pass


def test_cfg_scale_0_reproduces_the_unconditional_mixture() -> None:
    x = solve_ode(guided_field(0.0, torch.zeros(10_000, dtype=torch.long)), noise(10_000, seed=4),
                  torch.linspace(0, 1, 21, dtype=F64), "heun")
    check_mixture(x, MIX, rel_tol=0.03)  # 3%: heun with 20 steps on this mixture (test_ode_solvers)


def test_cfg_scale_above_1_sharpens_toward_the_class() -> None:
    """S = 4 pushes class-0 samples away from class 1 and shrinks their spread (the fidelity/diversity trade).

    Measured (4000 samples, heun 40 steps): mean (-0.80, -0.40) / variance sum 0.045 at S = 1 (the component);
    (-1.03, -0.55) / 0.029 at S = 4, i.e. 0.26 further along m0 - m1.
    """
    x0, y = noise(4000, seed=5), torch.zeros(4000, dtype=torch.long)
    grid = torch.linspace(0, 1, 41, dtype=F64)
    out = {S: solve_ode(guided_field(S, y), x0, grid, "heun") for S in (1.0, 4.0)}
    away = (MIX.means[0] - MIX.means[1]).to(F64)
    away = away / away.norm()
    shift = ((out[4.0].mean(0) - out[1.0].mean(0)) @ away).item()
    assert shift > 0.15, shift
    assert out[4.0].var(0).sum() < 0.8 * out[1.0].var(0).sum()


def test_class_conditional_flow_run_samples_with_guidance(tmp_path: Path, capsys) -> None:
    """Train a tiny class-conditional flow run; `sample --class --guidance-scale` drives its velocity."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_NET))
    run = tmp_path / "flow"
    assert main(["train", "--preset", "digits-flow", "--config", str(cfg), "--class-conditional", "--steps", "4",
                 "--out", str(run), "--progress", "lines"]) == 0, capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["model"]["num_classes"] == 10

    def sample(name: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"{name}.npz"
        code = main(["sample", str(run), "--n", "6", "--steps", "3", "--sampler", "ode-rk4", "--seed", "7",
                     "--out", str(out), *extra])
        assert code == 0, capsys.readouterr().err
        assert "NFE 12 per sample" in capsys.readouterr().out  # rk4: 4 evaluations per step
        with np.load(out, allow_pickle=False) as f:
            return f["images"]

    plain = sample("plain")
    s0 = sample("s0", "--class", "all", "--guidance-scale", "0")
    s1 = sample("s1", "--class", "all", "--guidance-scale", "1")
    s3 = sample("s3", "--class", "all", "--guidance-scale", "3")
    np.testing.assert_array_equal(s0, plain)  # S = 0 is the unconditional model, draw for draw
    assert not np.array_equal(s1, s0) and not np.array_equal(s3, s1)  # the label and the scale both act
    assert main(["sample", str(run), "--n", "2", "--class", "10", "--out", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert "class 10 is out of range" in err and err.count("\n") == 1, err
