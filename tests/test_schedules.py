"""Noise schedules against their closed forms (docs/maths.md section 1; Ho et al. 2020, Nichol & Dhariwal 2021)."""

from __future__ import annotations

import math

import pytest
import torch

from diffusionlab.errors import ConfigError
from diffusionlab.schedules import NoiseSchedule, cosine_betas, linear_betas, make_schedule, spaced_timesteps


@pytest.mark.parametrize("T", [1000, 500, 200, 4000])
def test_linear_endpoints_scale_with_1000_over_T(T: int) -> None:
    betas = make_schedule("linear", T).betas
    assert betas[0] == 0  # index 0 is the clean data
    scale = 1000 / T
    assert betas[1].item() == pytest.approx(1e-4 * scale, rel=1e-12)
    assert betas[T].item() == pytest.approx(0.02 * scale, rel=1e-12)
    # linear in t: constant increments
    diffs = betas[2:] - betas[1:-1]
    assert torch.allclose(diffs, torch.full_like(diffs, (0.02 - 1e-4) * scale / (T - 1)), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 100])
def test_alpha_bar_is_the_cumulative_product(name: str, T: int) -> None:
    s = make_schedule(name, T)
    assert s.T == T and s.alpha_bar.shape == (T + 1,) and s.alpha_bar.dtype == torch.float64
    betas = linear_betas(T) if name == "linear" else cosine_betas(T)
    prod = 1.0
    expected = [1.0]
    for b in betas.tolist():  # an independent float loop: abar_t = prod_{i <= t} (1 - beta_i)
        prod *= 1 - b
        expected.append(prod)
    assert torch.allclose(s.alpha_bar, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    assert torch.allclose(s.betas[1:], betas, rtol=1e-9, atol=1e-15)
    assert torch.allclose(s.alphas, 1 - s.betas, rtol=0, atol=1e-15)
    assert bool((s.alpha_bar[1:] < s.alpha_bar[:-1]).all())  # strictly decreasing
    assert torch.allclose(s.snr[1:], s.alpha_bar[1:] / (1 - s.alpha_bar[1:]), rtol=1e-15, atol=0)
    assert math.isinf(s.snr[0].item())


@pytest.mark.parametrize("T", [1000, 4000, 50])
def test_cosine_matches_f_t_over_f_0_where_not_clipped(T: int) -> None:
    s_off = 0.008
    f = lambda t: math.cos(((t / T) + s_off) / (1 + s_off) * math.pi / 2) ** 2  # noqa: E731
    sched = make_schedule("cosine", T)
    betas = sched.betas
    assert float(betas[1:].max()) <= 0.999 + 1e-15
    clipped = [t for t in range(1, T + 1) if 1 - f(t) / f(t - 1) > 0.999]
    first_clipped = min(clipped) if clipped else T + 1
    assert first_clipped == T  # only the singular last step is clipped
    assert betas[T].item() == pytest.approx(0.999, abs=1e-12)
    for t in range(0, first_clipped):
        assert sched.alpha_bar[t].item() == pytest.approx(f(t) / f(0), rel=1e-11, abs=1e-15)
    for t in range(1, first_clipped):
        assert betas[t].item() == pytest.approx(1 - f(t) / f(t - 1), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_coefficients_closed_form(name: str) -> None:
    s = make_schedule(name, 1000)
    ab, b = s.alpha_bar.tolist(), s.betas.tolist()
    for t in [1, 2, 3, 10, 500, 999, 1000]:
        alpha = 1 - b[t]
        # DDPM eq. 7: beta~_t, and the x0 / x_t coefficients of mu~_t
        assert s.posterior_variance[t].item() == pytest.approx((1 - ab[t - 1]) / (1 - ab[t]) * b[t], rel=1e-12, abs=0)
        assert s.posterior_mean_coef1[t].item() == pytest.approx(math.sqrt(ab[t - 1]) * b[t] / (1 - ab[t]), rel=1e-12)
        assert s.posterior_mean_coef2[t].item() == pytest.approx(
            math.sqrt(alpha) * (1 - ab[t - 1]) / (1 - ab[t]), rel=1e-12, abs=1e-15
        )
    assert s.posterior_variance[1].item() == 0.0  # q(x_0 | x_1, x0) is a point mass at x0
    assert s.posterior_mean_coef1[1].item() == pytest.approx(1.0, rel=1e-12)
    assert s.posterior_mean_coef2[1].item() == pytest.approx(0.0, abs=1e-12)
    # iDDPM: the log-variance at t = 1 is clipped to log beta~_2 instead of -inf
    lv = s.posterior_log_variance_clipped
    assert torch.isfinite(lv).all()
    assert lv[1].item() == pytest.approx(math.log(s.posterior_variance[2].item()), rel=1e-12)
    assert torch.allclose(lv[2:], s.posterior_variance[2:].log(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_respacing_keeps_alpha_bar_and_its_betas_reproduce_it(name: str, spacing: str) -> None:
    s = make_schedule(name, 1000)
    keep = spaced_timesteps(1000, 50, spacing)
    r = s.respace(keep)
    assert r.T == 50
    assert torch.equal(r.alpha_bar[1:], s.alpha_bar[keep])
    assert r.alpha_bar[0] == 1
    assert torch.equal(r.timesteps, torch.cat([torch.zeros(1, dtype=torch.float64), keep.to(torch.float64)]))
    # beta'_k = 1 - abar'_k / abar'_{k-1}, and chaining them rebuilds abar' at the kept steps
    assert torch.allclose(r.betas[1:], 1 - r.alpha_bar[1:] / r.alpha_bar[:-1], rtol=1e-14, atol=0)
    rebuilt = NoiseSchedule.from_betas(r.betas[1:])
    # rtol 1e-9, not 1e-15: the cosine step into abar_T ~ 2e-9 has beta' = 1 - 2.5e-6, and 1 - beta'
    # keeps only ~10 significant digits of abar'_T / abar'_{T-1}.
    assert torch.allclose(rebuilt.alpha_bar, r.alpha_bar, rtol=1e-9, atol=0)
    # respacing with every step is the identity; respacing a respaced schedule composes the network times
    assert torch.equal(s.respace(list(range(1, 1001))).alpha_bar, s.alpha_bar)
    rr = r.respace([1, 10, 50])
    assert torch.equal(rr.timesteps[1:], r.timesteps[[1, 10, 50]])
    assert torch.equal(rr.alpha_bar[1:], s.alpha_bar[r.timesteps[[1, 10, 50]].long()])


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_spaced_timesteps_distinct_sorted_include_T(spacing: str) -> None:
    for T in [1, 2, 10, 100, 1000, 4000]:
        for K in sorted({1, 2, 3, 7, 10, 25, 50, 100, 999, T // 2, T - 1, T} & set(range(1, T + 1))):
            steps = spaced_timesteps(T, K, spacing)
            assert steps.dtype == torch.long and steps.shape == (K,)
            assert bool((steps[1:] > steps[:-1]).all()), (T, K, steps)
            assert int(steps[0]) >= 1 and int(steps[-1]) == T
            if K == T:
                assert torch.equal(steps, torch.arange(1, T + 1))
    if spacing == "uniform":
        gaps = spaced_timesteps(1000, 10, spacing).diff()
        assert int(gaps.max() - gaps.min()) <= 1  # evenly spaced up to rounding
    else:
        steps = spaced_timesteps(1000, 50, spacing)
        gaps = steps.diff()
        assert int(steps[0]) == 1 and bool((gaps[1:] >= gaps[:-1]).all())  # denser near t = 1
        assert int(gaps[0]) < int(gaps[-1]) // 10


def test_bad_inputs_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        make_schedule("sigmoid", 1000)
    with pytest.raises(ConfigError):
        make_schedule("linear", 0)
    with pytest.raises(ConfigError):
        make_schedule("linear", 20)  # 0.02 * 1000 / 20 = 1: beta_T would not be in (0, 1)
    for bad in [torch.tensor([]), torch.tensor([0.1, 0.0]), torch.tensor([0.5, 1.0]), torch.full((2, 2), 0.1)]:
        with pytest.raises(ConfigError):
            NoiseSchedule.from_betas(bad)
    s = make_schedule("linear", 100)
    for keep in [[], [0, 5], [5, 101], [3, 3, 7]]:
        with pytest.raises(ConfigError):
            s.respace(keep)
    for K in [0, 101, -1]:
        with pytest.raises(ConfigError):
            spaced_timesteps(100, K)
    with pytest.raises(ConfigError):
        spaced_timesteps(100, 10, "log")
