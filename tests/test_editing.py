"""SDEdit (Meng et al. 2022) with the exact denoiser of Gaussian data x0 ~ N(mu, s^2 I).

Strength 0 must return the input bit for bit; strength 1 is ordinary sampling from (almost) pure noise,
so the outputs must follow the data distribution whatever the inputs were -- even inputs far outside it
-- and be uncorrelated with them. In between, DDIM (eta = 0) is affine in (x_guide, eps) for Gaussian
data, so the correlation with the input is a real, non-zero quantity.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffusionlab.analytic import AnalyticNet
from diffusionlab.editing import sdedit, start_step
from diffusionlab.errors import ConfigError
from diffusionlab.schedules import spaced_timesteps
from test_samplers import _one_thread  # noqa: F401  (autouse: one thread for these tiny tensors)
from test_samplers import GAUSS, MU, PROCESSES, S, check_gaussian_moments, ddim_affine, ddpm_moments, x_T

GD = PROCESSES["linear"]
MODEL = GD.denoiser(AnalyticNet(GAUSS, GD.schedule))
SCHED = GD.schedule.respace(spaced_timesteps(1000, 50, "uniform"))
N = 20_000


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_strength_0_returns_the_input(sampler: str) -> None:
    x = x_T(64, seed=1)
    assert torch.equal(sdedit(MODEL, x, SCHED, 0.0, sampler=sampler), x)
    assert start_step(SCHED, 0.009) == 0  # rounds to no step at all on 50 steps


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_strength_1_ignores_the_input(sampler: str) -> None:
    # Inputs nowhere near the data: +-3 at random (mean 0, so x_T = sqrt(abar_T) x + sqrt(1 - abar_T) eps has
    # mean 0 and variance 1 + 8 abar_T = 1 + 3e-4, i.e. N(0, I) for the sampler).
    sign = torch.randint(0, 2, (N, 2), generator=torch.Generator().manual_seed(3)).double() * 2 - 1
    far = 3 * sign + 0.3 * x_T(N, seed=3)
    out = sdedit(MODEL, far, SCHED, 1.0, sampler=sampler, generator=torch.Generator().manual_seed(4))
    # The outputs follow what the sampler makes from pure noise: its exact 50-step moments (test_samplers).
    if sampler == "ddim":
        exact = [(B, A**2) for A, B in (ddim_affine(SCHED, m, S**2) for m in MU)]
    else:
        exact = [ddpm_moments(SCHED, m, S**2, "beta_tilde") for m in MU]
    check_gaussian_moments(out, [m for m, _ in exact], [v for _, v in exact], 0.002)
    for d in range(2):  # and are uncorrelated with the input: |r| < 4 / sqrt(N)
        assert abs(corr(out[:, d], far[:, d])) < 4 / math.sqrt(N)


@pytest.mark.parametrize("strength", [0.1, 0.3, 0.6])
def test_intermediate_strength_keeps_exactly_the_expected_part_of_the_input(strength: float) -> None:
    """DDIM (eta = 0) maps x_{k0} = a x + b eps affinely per dimension, so corr(output, x) = corr(x_{k0}, x)
    = a s / sqrt(a^2 s^2 + b^2) for inputs x of standard deviation s: exact, and falling with the strength."""
    x = torch.tensor(MU) + S * x_T(N, seed=5)
    out = sdedit(MODEL, x, SCHED, strength, generator=torch.Generator().manual_seed(6))
    abar = SCHED.alpha_bar[start_step(SCHED, strength)].item()
    r = math.sqrt(abar) * S / math.sqrt(abar * S**2 + 1 - abar)
    for d in range(2):
        assert abs(corr(out[:, d], x[:, d]) - r) < 4 * (1 - r**2) / math.sqrt(N), (corr(out[:, d], x[:, d]), r)


def test_same_seed_same_edit() -> None:
    x = x_T(256, seed=7)
    a, b = (sdedit(MODEL, x, SCHED, 0.5, sampler="ddpm", generator=torch.Generator().manual_seed(8)) for _ in range(2))
    assert torch.equal(a, b)


def test_strength_outside_0_1_is_an_error() -> None:
    for s in (-0.1, 1.5):
        with pytest.raises(ConfigError, match="strength must be in"):
            sdedit(MODEL, x_T(4), SCHED, s)
