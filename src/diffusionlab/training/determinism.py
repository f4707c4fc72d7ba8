"""Step-derived randomness: every random draw of training step s comes from a generator seeded by (seed, s).

This is what makes a resumed run continue exactly (nothing to replay) and what makes N processes
with per-process batch B/N train the same model as one process with batch B: each process draws the
whole global batch's noise from the same generator and keeps its own rows.
"""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence hashing, so nearby keys give unrelated streams)."""
    words = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


def generator(*keys: int) -> torch.Generator:
    """A CPU torch.Generator seeded by `derive_seed(*keys)`."""
    return torch.Generator().manual_seed(derive_seed(*keys))


class BatchStream:
    """An endless stream of dataset indices: a fresh permutation each epoch, seeded by (seed, epoch)."""

    _EPOCH_KEY = 0x5EED

    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.clear()
            self._cache[epoch] = torch.randperm(self.n, generator=generator(self.seed, self._EPOCH_KEY, epoch))
        return self._cache[epoch]

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """Indices of global batch `step` (1-based): positions (step-1)*B .. step*B-1 of the stream."""
        pos = torch.arange((step - 1) * batch_size, step * batch_size)
        epochs, offsets = pos // self.n, pos % self.n
        out = torch.empty(batch_size, dtype=torch.long)
        for e in torch.unique(epochs).tolist():
            mask = epochs == e
            out[mask] = self._perm(int(e))[offsets[mask]]
        return out
