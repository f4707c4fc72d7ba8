"""Exponential moving average of the weights, used for sampling (Ho et al. 2020, App. B: decay 0.9999)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copy of a model's floating-point state; warm-up decay min(decay, (1 + n) / (10 + n)).

    The warm-up (as in TensorFlow's ExponentialMovingAverage with num_updates) stops the average
    from being dominated by the random initial weights in short CPU runs.
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
