"""Averages of the weights used for sampling: the exponential moving average (Ho et al. 2020, App. B) and the
power-function EMA of EDM2 (Karras et al. 2024, section 3) whose snapshots let the averaging length be chosen after
training (docs/maths.md section 13; the reconstruction is posthoc_ema.py)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# gamma >= 0 keeps sigma_rel a decreasing function of gamma, from 1/sqrt(12) (gamma = 0: a uniform average of all
# of training) down to 0 (gamma -> infinity: the raw weights).
SIGMA_REL_MAX = 1 / math.sqrt(12)


class EMA:
    """Shadow copy of a model's floating-point state; warm-up decay min(decay, (1 + n) / (10 + n)).

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) stops the average
    from being dominated by the random initial weights in short CPU runs. It telescopes to a power profile:
    for the first 9 decay / (1 - decay) - 1 updates this is PowerEMA with gamma = 8 (sigma_rel 0.09; docs/maths.md
    section 13), which is why a CPU-length run's EMA already has the length post-hoc EMA would pick.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay used by the next update."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- d * shadow + (1 - d) * weights (integer buffers are copied)."""
        d = self.current_decay()
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.lerp_(v.detach().to(s.dtype), 1 - d)
            else:
                s.copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow weights (a model state dict)."""
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore the shadow weights and the update count."""
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise KeyError(f"EMA state does not match the model: {sorted(missing)[:3]}")
        self.shadow = {k: v.clone() for k, v in state.items()}
        self.num_updates = num_updates


class PowerEMA(EMA):
    """EDM2's power-function EMA: update t (1-based) uses decay beta_t = (1 - 1/t)^(gamma + 1).

    The average after t updates weighs the weights after update tau by (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1)
    (`profile`), a discrete tau^gamma: its width grows with t, so one gamma is the same relative length
    sigma_rel at every point of training (docs/maths.md section 13).
    """

    def __init__(self, model: nn.Module, sigma_rel: float):
        super().__init__(model, decay=0.0, warmup=False)
        self.sigma_rel = sigma_rel
        self.gamma = sigma_rel_to_gamma(sigma_rel)

    def current_decay(self) -> float:
        """beta_t for the next update t = num_updates + 1 (0 at t = 1: the average starts at the weights)."""
        t = self.num_updates + 1
        return (1 - 1 / t) ** (self.gamma + 1)


def gamma_to_sigma_rel(gamma: float) -> float:
    """The relative standard deviation of the profile tau^gamma on [0, 1]: sqrt((g+1) / ((g+2)^2 (g+3)))."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma >= 0 whose profile has relative width sigma_rel (the root of a cubic); ValueError if none."""
    if not 0 < sigma_rel <= SIGMA_REL_MAX:
        raise ValueError(f"sigma_rel must be in (0, {SIGMA_REL_MAX:.4f}] (1/sqrt(12): the uniform average of all of "
                         f"training), got {sigma_rel!r}")
    # sigma_rel^2 (g+2)^2 (g+3) - (g+1) = 0, expanded in powers of g; the largest real root is the one >= 0.
    s2 = sigma_rel**2
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    real = [float(r.real) for r in roots if abs(r.imag) < 1e-9 * max(1.0, abs(r))]
    return max(0.0, max(real))


def profile(t: int, gamma: float, taus: np.ndarray) -> np.ndarray:
    """Weight of the weights after update tau (1 <= tau <= t) in the power EMA after t updates; 0 for tau > t."""
    taus = np.asarray(taus, dtype=np.float64)
    w = (np.minimum(taus, t) / t) ** (gamma + 1) - (np.minimum(taus - 1, t) / t) ** (gamma + 1)
    return np.where(taus <= t, w, 0.0)


__all__ = ["EMA", "SIGMA_REL_MAX", "PowerEMA", "gamma_to_sigma_rel", "profile", "sigma_rel_to_gamma"]
