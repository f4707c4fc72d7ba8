"""Sample quality against cost: FID against the network evaluations per sample (NFE) for each sampler a run was
evaluated with (docs/maths.md section 10; the figure of DDIM's Table 1, DPM-Solver's and EDM's comparisons).

The points come from the run's own evaluation results (RUN/eval/**/*.json, pages/eval_results.py). FIDs are
comparable only at the same checkpoint, extractor, sample count and reference set (FID is biased upwards at small
counts), so one such group is drawn (the largest; the newest checkpoint on a tie) and the others are listed. Without
any result, `how_to_measure` gives the commands that make them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..pages.eval_results import EvalResult, FidPoint
from ..processes.base import Process

STEPS = (10, 20, 50)


@dataclass
class FidNfe:
    """The plotted points (one comparable group, by sampler then NFE), the floor FID, and the points left out."""

    points: list[FidPoint]
    floor: float | None
    left_out: list[FidPoint]

    @property
    def labels(self) -> list[str]:
        """The samplers (with options), in order of first appearance."""
        return list(dict.fromkeys(p.label for p in self.points))


def fid_nfe(results: Sequence[EvalResult]) -> FidNfe | None:
    """The FID-against-NFE data of a run's evaluation results, or None when none scored generated samples."""
    points = [p for r in results if (p := r.fid_point()) is not None]
    if not points:
        return None
    groups: dict[tuple, list[FidPoint]] = {}
    for p in points:
        groups.setdefault(p.group, []).append(p)
    best = max(groups, key=lambda g: (len(groups[g]), -1 if g[0] is None else g[0]))
    chosen = sorted(groups[best], key=lambda p: (p.label, p.nfe))
    floors = [p.floor for p in chosen if p.floor is not None]
    return FidNfe(chosen, floors[0] if floors else None, [p for p in points if p.group != best])


def how_to_measure(run_dir: str | Path, process: Process) -> list[str]:
    """`diffusionlab evaluate` commands that score the run's default sampler at a few step counts."""
    sampler = process.default_sampler
    steps = sorted({min(k, process.T) for k in STEPS} if process.T is not None else set(STEPS))
    run = shlex.quote(str(run_dir))
    return [f"diffusionlab evaluate {run} --fid --n 1000 --sampler {sampler} --steps {k}" for k in steps]


__all__ = ["FidNfe", "fid_nfe", "how_to_measure"]
