"""alpha_bar and log-SNR of the linear and the cosine schedule over t / T: Improved DDPM's Fig. 5 (Nichol & Dhariwal
2021; docs/maths.md sections 1-2), with the run's own noise level beside them.

The linear and cosine curves are `schedules.make_schedule`'s, at the run's T (T = 1000 for a continuous family, the
papers' T). The run's own curve is its discrete alpha_bar_t for DDPM, and for a continuous family its path in the
VP view, alpha_bar(t) = alpha^2 / (alpha^2 + sigma^2) (`paths.vp_alpha_bar`), over its time range from the data end
(t / T = 0) to the noise end (1). log-SNR = log(alpha_bar / (1 - alpha_bar)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..paths import time_range, vp_alpha_bar
from ..processes.base import Process
from ..schedules import SCHEDULES, make_schedule

PAPER_T = 1000  # the T of the papers' figures, for a family without discrete steps
CONTINUOUS_POINTS = 1000


def log_snr(alpha_bar: np.ndarray) -> np.ndarray:
    """log(alpha_bar / (1 - alpha_bar)), in float64 (+inf at alpha_bar = 1, -inf at 0)."""
    a = np.asarray(alpha_bar, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(a) - np.log1p(-a)


@dataclass
class ScheduleCurves:
    """alpha_bar_t of each named schedule at t = 1..T (over u = t / T), and the run's own curve over its own u."""

    T: int
    u: np.ndarray  # (T,) t / T for t = 1..T
    alpha_bar: dict[str, np.ndarray]  # "linear", "cosine" -> (T,)
    own_label: str
    own_u: np.ndarray
    own_alpha_bar: np.ndarray
    own_schedule: str | None  # the named schedule the run uses (its curve is that one), None for a continuous path


def schedule_curves(process: Process) -> ScheduleCurves:
    """The curves of the figure for a run's process."""
    T = process.T if process.T is not None else PAPER_T
    u = np.arange(1, T + 1, dtype=np.float64) / T
    curves = {name: make_schedule(name, T).alpha_bar[1:].numpy() for name in SCHEDULES}
    settings = process.config()
    if process.T is not None:
        own = process.vp_schedule(process.T).alpha_bar[1:].numpy()  # steps = T: the schedule itself
        name = settings.get("schedule")
        return ScheduleCurves(T, u, curves, f"this run: {name or 'its'} schedule, T = {T}", u, own,
                              name if name in SCHEDULES else None)
    t_noise, t_data = time_range(process.path)
    own_u = np.linspace(0.0, 1.0, CONTINUOUS_POINTS)
    t = torch.as_tensor(t_data + (t_noise - t_data) * own_u, dtype=torch.float64)
    own = vp_alpha_bar(process.path, t).numpy()
    return ScheduleCurves(T, u, curves, f"this run: the {process.method} path (VP view)", own_u, own, None)


__all__ = ["PAPER_T", "ScheduleCurves", "log_snr", "schedule_curves"]
