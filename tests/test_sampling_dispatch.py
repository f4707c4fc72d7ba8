"""`sampling.generate` runs every sampler name on every model family through the same dispatch.

Driven by exact networks: a DDPM eps network (discrete path) and a flow-matching velocity network (continuous
OT path), on a two-component mixture inside [-1, 1]. Every sampler must reproduce the mixture's mean and
component weights and report its NFE exactly; the ode-* samplers refuse the discrete path with a one-line error.
"""

from __future__ import annotations

import math
import pytest
import torch

from analytic_paths import OTPath, PathNet
from diffusionlab.analytic import AnalyticNet, GaussianMixture
from diffusionlab.errors import ConfigError
from diffusionlab.paths import vp_schedule
from diffusionlab.processes import FlowMatching, GaussianDiffusion
from diffusionlab.sampling import SAMPLER_NAMES, SamplerOptions, generate, sigma_grid
from test_samplers import _one_thread, nearest_component_fraction  # noqa: F401 (autouse fixture)

MIX = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.5, -0.3], [0.4, 0.3]]), torch.tensor([0.1, 0.15]) ** 2)
SHAPE = (1, 1, 2)  # "images" of 2 pixels: the mixture's two dimensions
N = 4000
# steps and NFE per sample for each sampler (langevin: T = 60 steps per level; at T = 30 its component weights
# came out 0.330 against 0.3 on the flow model: annealed Langevin needs its steps to balance the modes; pc at
# N = 50 on sigma in [1e-4, 80] gave 0.331, at N = 100 it is within its 4 SE)
PLAN = {"ddpm": (100, 100), "ddim": (50, 50), "euler": (100, 100), "heun": (40, 79), "dpmpp2m": (40, 40),
        "dpmpp2m-sde": (100, 100),
        "sde": (200, 200), "pc": (100, 200), "langevin": (20, 20 * 60 + 1), "ode-euler": (100, 100),
        "ode-midpoint": (20, 40), "ode-heun": (20, 40), "ode-rk4": (10, 40), "ode-adaptive": (1, None)}


def flow_process() -> FlowMatching:
    """A flow-matching model's process: the OT path with sigma_min = 1e-4 (`OTPath`)."""
    return FlowMatching()


def check(images: torch.Tensor) -> None:
    """Mean within 4 SE + 2% of the std, weights within 4 SE of a proportion (nearest-mean labels)."""
    x = images.reshape(len(images), 2).double()
    se = x.std(0) / math.sqrt(len(x))
    assert bool(((x.mean(0) - MIX.mean()).abs() < 4 * se + 0.02 * x.std(0)).all()), x.mean(0)
    assert bool(((x.std(0) - MIX.covariance().diagonal().sqrt()).abs() < 0.06 * x.std(0)).all()), x.std(0)
    frac = nearest_component_fraction(x, MIX)[0].item()
    assert abs(frac - 0.3) < 4 * math.sqrt(0.21 / len(x)), frac


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_on_a_flow_matching_model(sampler: str) -> None:
    process = flow_process()
    steps, nfe = PLAN[sampler]
    n = N // 2 if sampler == "langevin" else N  # 1201 NFE per sample: half the samples, the time of the others
    options = SamplerOptions(corrector_steps=60 if sampler == "langevin" else None, rtol=1e-4)
    res = generate(process.denoiser(PathNet(MIX, process.path, "velocity")), process, SHAPE, n, sampler, steps,
                   options=options, seed=1, batch_size=N)
    check(res.images)
    assert res.nfe == nfe if nfe is not None else res.nfe > 10


@pytest.mark.parametrize("sampler", [s for s in SAMPLER_NAMES if not s.startswith("ode-")])
def test_every_sampler_on_a_ddpm_model(sampler: str) -> None:
    gd = GaussianDiffusion("linear", 1000, "eps")
    steps, nfe = PLAN[sampler]
    n = N // 2 if sampler == "langevin" else N
    res = generate(gd.denoiser(AnalyticNet(MIX, gd.schedule, "eps")), gd, SHAPE, n, sampler, steps,
                   options=SamplerOptions(corrector_steps=60 if sampler == "langevin" else None), seed=2, batch_size=N)
    check(res.images)
    assert res.nfe == nfe


def test_ode_samplers_refuse_the_discrete_path_and_options_are_checked() -> None:
    gd = GaussianDiffusion("linear", 100, "eps")
    den = gd.denoiser(AnalyticNet(MIX, gd.schedule, "eps"))
    with pytest.raises(ConfigError, match="continuous-time path"):
        generate(den, gd, SHAPE, 4, "ode-rk4", 5)
    with pytest.raises(ConfigError, match="unknown sampler"):
        generate(den, gd, SHAPE, 4, "rk45", 5)
    with pytest.raises(ConfigError, match="corrector"):
        generate(den, gd, SHAPE, 4, "langevin", 5, options=SamplerOptions(corrector_steps=0))


def test_seeded_batches_and_trajectories() -> None:
    """Same seed, same images (stochastic samplers included); a trajectory records the frames asked for."""
    process = flow_process()
    den = process.denoiser(PathNet(MIX, process.path, "velocity"))
    for sampler in ["sde", "heun", "ode-rk4", "ddim"]:
        a = generate(den, process, SHAPE, 64, sampler, 8, seed=3, batch_size=16, trajectory_frames=4)
        b = generate(den, process, SHAPE, 64, sampler, 8, seed=3, batch_size=16)
        c = generate(den, process, SHAPE, 64, sampler, 8, seed=4, batch_size=16)
        assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
        assert len(a.trajectory_xt) == 4 and a.trajectory_xt[0].shape == (16, *SHAPE)
        # Frame labels say where each frame is: sigma falling to 0 in sigma space, flow time rising to the data end.
        name, values = zip(*(label.split("=") for label in a.trajectory_labels))
        values = [float(v) for v in values]
        if sampler in ("sde", "heun"):
            assert set(name) == {"sigma"} and values == sorted(values, reverse=True) and values[-1] == 0.0, a.trajectory_labels
        else:
            assert set(name) == {"t"} and values == sorted(values) and len(set(values)) == 4, a.trajectory_labels
            assert values[-1] == pytest.approx(1.0, abs=1e-3) and values[0] < 0.5, a.trajectory_labels


def test_vp_schedule_is_the_vp_view_of_a_continuous_path() -> None:
    sched = vp_schedule(OTPath(), 10)
    t = sched.timesteps[1:]
    assert math.isclose(float(t[-1]), 1e-3, rel_tol=1e-9) and float(t[0]) < 1 and bool((t[1:] < t[:-1]).all())
    a, s = t, 1 - (1 - 1e-4) * t
    assert torch.allclose(sched.alpha_bar[1:], a**2 / (a**2 + s**2), rtol=1e-12) and sched.alpha_bar[0] == 1


@pytest.mark.parametrize("sampler", ["heun", "dpmpp2m"])
def test_few_step_samplers_on_a_cosine_ddpm_model(sampler: str) -> None:
    """EDM's setting, 18 steps, on an exact cosine-schedule eps model of N(0.1, 0.3^2) in 64 dims. The cosine
    path reaches sigma~ = 2e4 at t = T; the grid starts at 80. Measured std 0.313-0.319 for 0.300 (the 18-step
    error; SE 0.002), against 0.43 for Heun from 2e4; tolerance 8%."""
    gd = GaussianDiffusion("cosine", 1000, "eps")
    den = gd.denoiser(AnalyticNet(GaussianMixture.isotropic(0.1, 0.3, dim=64), gd.schedule))
    res = generate(den, gd, (1, 8, 8), 256, sampler, 18, options=SamplerOptions(clip_x0=False), seed=5)
    x = res.images.reshape(256, 64).double()
    assert res.nfe == (35 if sampler == "heun" else 18)
    assert abs(float(x.mean()) - 0.1) < 0.01 and abs(float(x.std()) - 0.3) < 0.08 * 0.3, (x.mean(), x.std())


def test_time_uniform_sigma_grid_is_uniform_in_the_models_time_below_sigma_80() -> None:
    """On a DDPM, the `time` grid is sigma~ at t = t0 (1 - i / N), i = 0..N-1, with t0 = t(sigma~ = 80): EDM's cap, so
    it is NOT diffusers' grid (that is `linspace`, below); between integer steps log sigma~ is the path's own
    interpolation. On the OT path it is uniform in t from t(sigma~ = 80) to one step before t_data = 1."""
    gd = GaussianDiffusion("linear", 1000, "eps")  # sigma~(T) = 156 > 80: capped
    den = gd.denoiser(AnalyticNet(MIX, gd.schedule, "eps"))
    grid = sigma_grid(gd, 10, "time")
    t0 = float(den.path.t_from_ratio(torch.tensor([80.0], dtype=torch.float64))[0])
    t = t0 * (1 - torch.arange(10, dtype=torch.float64) / 10)
    assert len(grid) == 11 and grid[-1] == 0 and math.isclose(float(grid[0]), 80.0, rel_tol=1e-9)
    for i in range(1, 10):  # between integer steps log(sigma~) is linear in t (the path's own interpolation)
        lo, hi = math.floor(float(t[i])), math.ceil(float(t[i]))
        r = lambda k: math.sqrt((1 - float(gd.schedule.alpha_bar[k])) / float(gd.schedule.alpha_bar[k]))  # noqa: E731
        w = float(t[i]) - lo
        expect = math.exp((1 - w) * math.log(r(lo)) + w * math.log(r(hi))) if hi > lo else r(lo)
        assert math.isclose(float(grid[i]), expect, rel_tol=1e-9), i
    g = sigma_grid(FlowMatching(), 4, "time")
    t_fm = 1 / 81 + torch.arange(4, dtype=torch.float64) / 4 * (1 - 1 / 81)  # OT, sigma_min 1e-4: t(80) ~ 1/81
    assert torch.allclose(g[:-1], (1 - (1 - 1e-4) * t_fm) / t_fm, rtol=1e-3) and g[-1] == 0
    with pytest.raises(ConfigError, match="sigma spacing"):
        sigma_grid(gd, 10, "cosine")


def test_linspace_grid_is_diffusers_default_timesteps_exactly() -> None:
    """`linspace` is diffusers' default `timestep_spacing="linspace"` of a T-step DDPM: numpy's
    round(linspace(0, T - 1, N + 1)) reversed without its last entry, + 1 for our 1-based steps (so T = 1000, N = 10
    gives 1000, 900, ..., 600, 501, 401, ..., 101: the lower half one step above the `time` grid's), sigma~ at those
    steps from the schedule's alpha_bar, uncapped, then 0. A continuous path has no such grid: a one-line error."""
    import numpy as np

    gd = GaussianDiffusion("linear", 1000, "eps")
    abar = gd.schedule.alpha_bar.numpy()
    for n in (1, 7, 10, 20, 50):
        steps = np.linspace(0, 999, n + 1).round()[::-1][:-1].astype(int) + 1
        expect = np.concatenate([((1 - abar[steps]) / abar[steps]) ** 0.5, [0.0]])
        np.testing.assert_allclose(sigma_grid(gd, n, "linspace").numpy(), expect, rtol=1e-12)
    assert (np.linspace(0, 999, 11).round()[::-1][:-1].astype(int) + 1).tolist() == [1000, 900, 800, 700, 600, 501, 401,
                                                                                      301, 201, 101]
    assert float(sigma_grid(gd, 10, "linspace")[0]) > 150  # sigma~(T) = 156: no cap at 80
    with pytest.raises(ConfigError, match="linspace grid is diffusers' grid of a discrete DDPM"):
        sigma_grid(FlowMatching(), 10, "linspace")


@pytest.mark.parametrize("spacing", ["time", "loguniform", "linspace"])
@pytest.mark.parametrize("sampler", ["dpmpp2m", "heun", "euler"])
def test_sigma_samplers_on_every_grid_reproduce_the_mixture(sampler: str, spacing: str) -> None:
    """The same exact DDPM and flow models as above, on the non-default grids: moments and weights must hold."""
    steps, nfe = PLAN[sampler]
    gd = GaussianDiffusion("linear", 1000, "eps")
    res = generate(gd.denoiser(AnalyticNet(MIX, gd.schedule, "eps")), gd, SHAPE, N, sampler, steps,
                   options=SamplerOptions(sigma_spacing=spacing), seed=3, batch_size=N)
    check(res.images)
    assert res.nfe == nfe
    if spacing == "linspace":  # diffusers' grid is a discrete DDPM's
        return
    process = flow_process()
    res = generate(process.denoiser(PathNet(MIX, process.path, "velocity")), process, SHAPE, N, sampler, steps,
                   options=SamplerOptions(sigma_spacing=spacing), seed=4, batch_size=N)
    check(res.images)
