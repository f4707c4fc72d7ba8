"""A classifier-free guidance sweep: one row per guidance scale S, one column per class (or caption), every row from
the same seed, hence the same x_T (Ho & Salimans 2022, Fig. 1 and 3; docs/maths.md section 4). S = 0 is the
unconditional model, S = 1 plain conditional sampling, S > 1 trades diversity for fidelity to the condition. Each
row is exactly `Run.sample(classes=..., guidance_scale=S, seed=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..api import Run

DEFAULT_SCALES = (0.0, 1.0, 2.0, 4.0)
MAX_COLUMNS = 10


@dataclass
class GuidanceSweep:
    """The sweep's images (S, M, C, H, W) uint8, its scales (rows) and column names, and the NFE of one row."""

    scales: list[float]
    columns: list[str]
    images: Tensor
    nfe: list[int]


def guidance_sweep(run: Run, scales: Sequence[float], classes: Sequence[int] | None = None,
                   prompts: Sequence[str] | None = None, sampler: str | None = None, steps: int | None = None,
                   seed: int = 0) -> GuidanceSweep:
    """Rows of `Run.sample` at each scale, for `classes` (a class-conditional run) or `prompts` (a text run)."""
    if (classes is None) == (prompts is None):
        raise ValueError("a guidance sweep draws either classes or prompts")
    columns = [str(c) for c in classes] if classes is not None else list(prompts or [])
    rows, nfe = [], []
    for scale in scales:
        rows.append(run.sample(len(columns), sampler=sampler, steps=steps, seed=seed, guidance_scale=float(scale),
                               classes=None if classes is None else list(classes),
                               prompt=None if prompts is None else list(prompts)))
        nfe.append(run.last_nfe)
    return GuidanceSweep([float(s) for s in scales], columns, torch.stack(rows), nfe)


__all__ = ["DEFAULT_SCALES", "MAX_COLUMNS", "GuidanceSweep", "guidance_sweep"]
