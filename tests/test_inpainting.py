"""RePaint inpainting (Lugmayr et al. 2022) driven by the exact denoiser of a two-component mixture.

Known pixels must come back exactly; with dimension 0 known at component 0's mean, the exact conditional
of dimension 1 is component 0's N(-0.4, 0.15^2) (component 1 lies 5.6 of its standard deviations away
in dimension 0). Resampling (RePaint section 4.2) must move the generated dimension toward that
conditional: that is what it is for.
"""

from __future__ import annotations

import pytest
import torch

from diffusionlab.analytic import AnalyticNet
from diffusionlab.errors import ConfigError
from diffusionlab.inpainting import repaint_steps, sample_inpaint
from diffusionlab.schedules import spaced_timesteps
from test_samplers import _one_thread  # noqa: F401  (autouse: one thread for these tiny tensors)
from test_samplers import MIX, PROCESSES, se_mean, x_T

GD = PROCESSES["linear"]
MODEL = GD.denoiser(AnalyticNet(MIX, GD.schedule))
SCHED = GD.schedule.respace(spaced_timesteps(1000, 100, "uniform"))
N = 2000
KNOWN = torch.zeros(N, 2, dtype=torch.float64)
KNOWN[:, 0] = -0.8  # component 0's mean in dimension 0
MASK = torch.tensor([1.0, 0.0], dtype=torch.float64)  # 1 = known


def inpaint(**kw) -> torch.Tensor:
    return sample_inpaint(MODEL, x_T(N, seed=1), SCHED, KNOWN, MASK, generator=torch.Generator().manual_seed(0), **kw)


def test_repaint_steps_walk_down_with_jumps_back() -> None:
    assert repaint_steps(4) == [4, 3, 2, 1, 0]
    assert repaint_steps(3, 1, 2) == [3, 2, 3, 2, 1, 2, 1, 0]  # Algorithm 1 with U = 2: each step done twice
    s = repaint_steps(10, 2, 3)
    assert s[0] == 10 and s[-1] == 0 and all(abs(b - a) in (1, 2) for a, b in zip(s, s[1:]))
    assert sum(b - a == -1 for a, b in zip(s, s[1:])) == 10 + 2 * 2 * 4  # 4 jump points, 2 jumps of 2 steps each
    with pytest.raises(ConfigError, match="must be >= 1"):
        repaint_steps(10, 0, 1)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_known_pixels_are_returned_exactly(sampler: str) -> None:
    mask = (torch.rand(N, 2, generator=torch.Generator().manual_seed(5)) < 0.5).double()
    known = MIX.sample(N, torch.Generator().manual_seed(6))[0]
    x = sample_inpaint(MODEL, x_T(N, seed=2), SCHED, known, mask, sampler=sampler, resample=2)
    assert torch.equal(x[mask == 1], known[mask == 1])
    assert not torch.allclose(x[mask == 0], known[mask == 0], atol=1e-3)


def test_resampling_harmonises_toward_the_exact_conditional() -> None:
    plain, resampled = inpaint(resample=1), inpaint(resample=5)
    wrong = [(x[:, 1] > 0.05).double().mean().item() for x in (plain, resampled)]  # past the midpoint of -0.4 and 0.5
    assert wrong[1] < wrong[0] / 4, wrong  # measured: 2.2% -> 0.0%
    # E[x1 | x0 = -0.8] = -0.4 exactly; resampled RePaint within 4 SE + 0.01 (measured -0.3996; plain: -0.330).
    assert abs(resampled[:, 1].mean().item() + 0.4) < 4 * se_mean(resampled)[1].item() + 0.01
    assert abs(plain[:, 1].mean().item() + 0.4) > 0.05


def test_ddim_eta_1_inpainting_is_the_ddpm_beta_tilde_one_draw_for_draw() -> None:
    a = inpaint(sampler="ddpm", variance="beta_tilde", resample=2, jump=3)
    b = inpaint(sampler="ddim", eta=1.0, resample=2, jump=3)
    assert torch.allclose(a, b, atol=1e-10)


def test_same_seed_same_inpainting() -> None:
    assert torch.equal(inpaint(resample=2), inpaint(resample=2))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_repaint_on_a_flow_matching_model_through_its_vp_view(sampler: str) -> None:
    """RePaint and SDEdit walk any family's `vp_schedule` with the samplers' own step functions: on the exact
    flow-matching velocity model of the same mixture, known pixels come back exactly and the generated dimension
    follows the exact conditional, E[x1 | x0 = -0.8] = -0.4 (within 4 SE + 0.02 with 5 resamplings)."""
    from analytic_paths import PathNet
    from diffusionlab.editing import sdedit
    from diffusionlab.processes import FlowMatching

    fm = FlowMatching()
    model = fm.denoiser(PathNet(MIX, fm.path, "velocity")).vp()
    sched = fm.vp_schedule(100)
    x = sample_inpaint(model, x_T(N, seed=1), sched, KNOWN, MASK, sampler=sampler, resample=5,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(x[:, 0], KNOWN[:, 0])
    assert abs(x[:, 1].mean().item() + 0.4) < 4 * se_mean(x)[1].item() + 0.02, x[:, 1].mean()
    assert torch.equal(sdedit(model, KNOWN, sched, 0.0, sampler=sampler), KNOWN)  # strength 0: the input itself
