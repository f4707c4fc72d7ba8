"""Exact-target tests of classifier-free and classifier guidance (docs/maths.md section 4).

The data is a two-class Gaussian mixture whose components are the classes, so the class-conditional and
the unconditional optimal denoisers are both known in closed form (`ConditionalAnalyticNet`), and so is
the exact noisy classifier log p(y | x_t) = log r_y(x_t). With them:
- CFG at S = 1 is the conditional model, so sampling reproduces class y's component; S = 0 the mixture;
- classifier guidance at W = 1 turns the unconditional eps into the conditional one exactly, because
  grad log p(y | x_t) = grad log q_t(x_t | y) - grad log q_t(x_t) (Bayes' rule), so it too must reproduce
  the component. For a Gaussian component DDIM's output moments are computed exactly (test_samplers).
"""

from __future__ import annotations

import pytest
import torch

from diffusionlab.analytic import ConditionalAnalyticNet
from diffusionlab.errors import ConfigError
from diffusionlab.guidance import ClassifierFreeGuidance, ClassifierGuidance, check_labels
from diffusionlab.samplers import NFECounter, sample_ddim
from diffusionlab.schedules import spaced_timesteps
from test_samplers import _one_thread  # noqa: F401  (autouse: one thread for these tiny tensors)
from test_samplers import MIX, PROCESSES, check_gaussian_moments, check_mixture, ddim_affine, x_T

F64 = torch.float64
GD = PROCESSES["linear"]
NET = ConditionalAnalyticNet(MIX, GD.schedule)
BASE = GD.denoiser(NET)
SCHED = GD.schedule.respace(spaced_timesteps(1000, 100, "uniform"))
N = 20_000


def exact_classifier(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Logits of the exact noisy classifier: log r_y(x_t) (already normalised)."""
    return NET.class_log_probs(x, t)


def component_ddim_moments(k: int, sched=SCHED) -> tuple[list[float], list[float]]:
    """Exact mean and variance per dimension of DDIM (eta = 0) on component k's own optimal model, from x_T ~ N(0, I)."""
    s2 = MIX.variances[k].item()
    affine = [ddim_affine(sched, m, s2) for m in MIX.means[k].tolist()]
    return [B for _, B in affine], [A**2 for A, _ in affine]


def labels(k: int, n: int = N) -> torch.Tensor:
    return torch.full((n,), k, dtype=torch.long)


def test_cfg_is_the_linear_combination_in_one_batched_call() -> None:
    """eps_bar = eps_null + S (eps_c - eps_null), x0_bar consistent with it, mixed labels, one 2B network call."""
    calls = []

    def net(x, t, y=None):
        calls.append(len(x))
        return NET(x, t, y)

    guided = ClassifierFreeGuidance(GD.denoiser(net), 3.0, NET.null_label)
    x = x_T(64, seed=1)
    t = torch.randint(1, 1000, (64,)).to(F64)
    y = torch.arange(64) % 2
    pred = guided(x, t, y)
    assert calls == [128]
    c, u = BASE(x, t, y), BASE(x, t, None)
    assert torch.allclose(pred.eps, u.eps + 3.0 * (c.eps - u.eps), atol=1e-12)
    a, s = GD.path.alpha(t)[:, None], GD.path.sigma(t)[:, None]
    assert torch.allclose(pred.x0, (x - s * pred.eps) / a, atol=1e-9)
    # S = 1 and S = 0 are the plain conditional and unconditional models, one network pass each.
    assert torch.equal(ClassifierFreeGuidance(BASE, 1.0, 2)(x, t, y).eps, c.eps)
    assert torch.equal(ClassifierFreeGuidance(BASE, 0.0, 2)(x, t, y).eps, u.eps)


@pytest.mark.parametrize("k", [0, 1])
def test_cfg_scale_1_reproduces_the_class_conditional(k: int) -> None:
    model = NFECounter(ClassifierFreeGuidance(BASE, 1.0, NET.null_label).vp(labels(k)))
    x = sample_ddim(model, x_T(seed=10 + k), SCHED)
    mean, var = component_ddim_moments(k)
    # The exact 100-step DDIM moments of the component (its variance is 16% under the data's for k = 0: the
    # sampler's own discretisation error, which guidance must neither add to nor hide).
    check_gaussian_moments(x, mean, var, 0.0)
    assert model.nfe == 100


def test_cfg_scale_0_reproduces_the_unconditional_mixture() -> None:
    model = ClassifierFreeGuidance(BASE, 0.0, NET.null_label).vp(labels(0))
    x = sample_ddim(model, x_T(seed=12), SCHED)
    check_mixture(x, MIX, rel_tol=0.05)  # 5%: DDIM's own error with 50 steps on this mixture is 5-7% (test_samplers)
    assert torch.equal(x, sample_ddim(BASE.vp(None), x_T(seed=12), SCHED))  # draw for draw the unguided sampler


def test_cfg_scale_above_1_sharpens_the_class() -> None:
    """S > 1 moves samples toward the class (higher exact p(y | x0)) and shrinks their spread: the fidelity trade."""
    xT = x_T(4000, seed=13)
    out = {S: sample_ddim(ClassifierFreeGuidance(BASE, S, NET.null_label).vp(labels(0, 4000)), xT, SCHED) for S in (1.0, 4.0)}
    p1, p4 = (NET.class_log_probs(out[S], torch.zeros(4000))[:, 0].exp().mean().item() for S in (1.0, 4.0))
    assert p4 > p1
    assert out[4.0].var(0).sum() < 0.9 * out[1.0].var(0).sum()


def test_exact_classifier_gradient_turns_the_unconditional_eps_into_the_conditional() -> None:
    """W = 1: eps - sigma grad log r_y = eps_y to rounding, at random (x_t, t)."""
    guided = ClassifierGuidance(BASE, exact_classifier, 1.0)
    x = 2 * x_T(256, seed=2)
    t = torch.randint(1, 1000, (256,)).to(F64)
    y = torch.arange(256) % 2
    pred, target = guided(x, t, y), BASE(x, t, y)
    assert torch.allclose(pred.eps, target.eps, atol=1e-9), (pred.eps - target.eps).abs().max()
    assert torch.allclose(pred.x0, target.x0, atol=1e-6)


@pytest.mark.parametrize("k", [0, 1])
def test_classifier_guidance_scale_1_reproduces_the_class_conditional(k: int) -> None:
    model = NFECounter(ClassifierGuidance(BASE, exact_classifier, 1.0).vp(labels(k)))
    x = sample_ddim(model, x_T(seed=20 + k), SCHED)
    mean, var = component_ddim_moments(k)
    check_gaussian_moments(x, mean, var, 0.0)
    assert model.nfe == 100


def test_classifier_guidance_scale_0_is_the_unconditional_model() -> None:
    x, t = x_T(32, seed=3), torch.full((32,), 500.0, dtype=F64)
    assert torch.equal(ClassifierGuidance(BASE, exact_classifier, 0.0)(x, t, labels(1, 32)).eps, BASE(x, t).eps)


def test_bad_labels_give_clear_errors() -> None:
    with pytest.raises(ConfigError, match="class 10 is out of range"):
        check_labels(torch.tensor([3, 10]), 10)
    with pytest.raises(ConfigError, match="class -1 is out of range"):
        check_labels(torch.tensor([-1]), 10)
    with pytest.raises(ConfigError, match="unconditional"):
        check_labels(torch.tensor([0]), None)
    with pytest.raises(ConfigError, match="needs class labels"):
        ClassifierGuidance(BASE, exact_classifier, 1.0)(x_T(4), torch.ones(4))
