"""The learning rate over a run: linear warm-up, then constant or decayed to 0 at the end of the budget.

The decay follows the fraction of the budget used: of the steps after warm-up with --steps, of the wall-clock time
with --minutes (whichever ends first when both are given). A step budget makes the schedule a function of the step,
so a resumed run continues bit-exactly; a time budget makes it follow the clock, like the step count it stops at.
"""

from __future__ import annotations

import math

LR_SCHEDULES = ("constant", "cosine", "linear")


def budget_fraction(step: int, warmup_steps: int, steps: int | None, elapsed: float, seconds: float | None) -> float:
    """The fraction in [0, 1] of the budget used after `step` steps and `elapsed` seconds."""
    fractions = []
    if steps is not None:
        fractions.append((step - warmup_steps) / max(1, steps - warmup_steps))
    if seconds is not None:
        fractions.append(elapsed / seconds)
    return min(1.0, max(0.0, max(fractions, default=0.0)))


def lr_factor(schedule: str, step: int, warmup_steps: int, fraction: float) -> float:
    """The factor on the peak learning rate at `step`: min(1, step / warm-up) times the decay at `fraction`."""
    warm = min(1.0, step / max(1, warmup_steps))
    if schedule == "cosine":  # Loshchilov & Hutter 2017 (SGDR) without restarts, down to 0
        return warm * 0.5 * (1 + math.cos(math.pi * fraction))
    if schedule == "linear":
        return warm * (1 - fraction)
    return warm


__all__ = ["LR_SCHEDULES", "budget_fraction", "lr_factor"]
