"""How the training step t is drawn: uniformly, or by importance sampling for L_vlb (iDDPM section 3.3).

L_vlb = sum_t L_t has terms of very different size (the first few dominate), so its one-sample
estimate T * L_t with t ~ U{1..T} is very noisy. Nichol & Dhariwal draw t with
p_t ∝ sqrt(E[L_t^2]), estimated from the last 10 values of each term, and weight the loss by
1 / (T p_t) so that the estimate stays unbiased; until every term has 10 values, t is uniform.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError


class LossSecondMomentSampler:
    """Importance sampler of t in 1..T with p_t ∝ sqrt(mean of the last `history` values of L_t^2)."""

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        self.T, self.history, self.uniform_prob = T, history, uniform_prob
        self.values = torch.zeros(T + 1, history, dtype=torch.float64)  # row t: last losses at step t
        self.counts = torch.zeros(T + 1, dtype=torch.long)

    @property
    def warmed_up(self) -> bool:
        """Whether every term 1..T has a full history (before that, t is drawn uniformly)."""
        return bool((self.counts[1:] >= self.history).all())

    def probabilities(self) -> Tensor:
        """p_t for t = 1..T (a (T,) tensor summing to 1)."""
        if not self.warmed_up:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        p = (self.values[1:] ** 2).mean(1).sqrt()
        p = p / p.sum()
        # A little uniform mass keeps every term reachable (their uniform_prob).
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, batch: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw t (batch,) and the unbiasing weights 1 / (T p_t)."""
        p = self.probabilities()
        t = torch.multinomial(p, batch, replacement=True, generator=generator) + 1
        return t, (1.0 / (self.T * p[t - 1])).float()

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record the per-example losses observed at steps t (all processes' values, in a fixed order)."""
        for ti, li in zip(t.tolist(), losses.detach().double().tolist()):
            if self.counts[ti] >= self.history:
                self.values[ti] = torch.roll(self.values[ti], -1)
                self.values[ti, -1] = li
            else:
                self.values[ti, self.counts[ti]] = li
            self.counts[ti] += 1

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, saved with every checkpoint so a resumed run draws the same t."""
        return {"T": self.T, "history": self.history, "values": self.values.tolist(), "counts": self.counts.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        if state.get("T") != self.T or state.get("history") != self.history:
            raise CheckpointError("the checkpoint's timestep-sampler state does not match this run's T")
        self.values = torch.tensor(state["values"], dtype=torch.float64)
        self.counts = torch.tensor(state["counts"], dtype=torch.long)
