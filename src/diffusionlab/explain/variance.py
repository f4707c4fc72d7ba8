"""The learned reverse variance of an Improved DDPM run over t (Nichol & Dhariwal 2021, section 3.1; docs/maths.md
section 2): the network's second output v, mapped to [0, 1], interpolates the log-variance between the lower bound
beta~_t and the upper bound beta_t, Sigma_t = exp(v log beta_t + (1 - v) log beta~_t) (their eq. 15).

The v drawn here is the network's own at x_t = alpha(t) x0 + sigma(t) eps for a batch of real test images, one
eps per image shared by every t, at many steps of the full T-step chain; its mean over the batch and pixels, and its
spread (per-image means and the 10th to 90th percentile of the pixels), show where the model moved off the fixed
variances: the paper finds v near the beta~ end except at the first steps, where the two bounds differ most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..processes.vlb import reverse_log_variance
from ..runs import LoadedRun
from .forward import path_sample

DEFAULT_POINTS = 50


def variance_times(T: int, points: int = DEFAULT_POINTS) -> Tensor:
    """At most `points` integer steps of 1..T (all of them for T <= points), float64: half spread evenly, half
    geometrically, since the two bounds of the variance part only over the first steps (iDDPM Fig. 1)."""
    if T <= points:
        return torch.arange(1, T + 1, dtype=torch.float64)
    half = points // 2
    even = torch.linspace(1, T, points - half, dtype=torch.float64)
    geometric = torch.logspace(0, math.log10(T), half, dtype=torch.float64)
    return torch.cat([even, geometric]).round().clamp(1, T).unique()


@dataclass
class VarianceCurve:
    """v = (network output + 1) / 2 of the variance channels at each step t, over a batch of real images."""

    t: np.ndarray  # (M,) integer steps
    v: np.ndarray  # (M, N): each image's mean v over its pixels
    q10: np.ndarray  # (M,) 10th percentile of v over all pixels of all images
    q90: np.ndarray  # (M,) 90th percentile
    log_sigma: np.ndarray  # (M,) mean of the learned log Sigma_t (eq. 15)
    log_beta: np.ndarray  # (M,) the upper end of the interpolation, log beta_t (v = 1)
    log_beta_tilde: np.ndarray  # (M,) the lower end, log beta~_t (v = 0; log beta~_2 at t = 1, where beta~_1 = 0)
    x0: Tensor  # (N, C, h, w) the images in the model's space
    eps: Tensor  # (N, C, h, w)

    @property
    def mean(self) -> np.ndarray:
        """Mean v at each t over the images."""
        return self.v.mean(axis=1)


@torch.no_grad()
def variance_interpolation(run: LoadedRun, x0: Tensor, y: Tensor | None = None, points: int = DEFAULT_POINTS,
                           seed: int = 0, batch_size: int = 256) -> VarianceCurve:
    """The v curve of a learned-variance run at `variance_times(T, points)` for images x0 (model space), labels or
    token ids y (a conditional run), eps drawn from `seed`."""
    process = run.process
    if not process.learned_variance or process.T is None:
        raise ValueError("the v curve needs a discrete run with a learned variance (iDDPM)")
    schedule = process.vp_schedule(process.T)  # steps = T: the schedule it was trained on
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)
    times = variance_times(process.T, points)
    per_image, q10, q90, log_sigma, log_beta, log_tilde = [], [], [], [], [], []
    for t in times:
        vs, logs = [], []
        for i in range(0, len(x0), batch_size):
            x, e = x0[i : i + batch_size], eps[i : i + batch_size]
            k = t.expand(len(x))
            x_t = path_sample(process.path, x, k, e)
            var_frac = run.denoiser(x_t, k, None if y is None else y[i : i + batch_size]).var_frac
            vs.append(var_frac.float())
            logs.append(reverse_log_variance(schedule, k, x_t, "learned", var_frac.double()))
        v = torch.cat(vs)
        per_image.append(v.flatten(1).mean(1).numpy())
        q10.append(float(np.percentile(v.numpy(), 10)))
        q90.append(float(np.percentile(v.numpy(), 90)))
        log_sigma.append(float(torch.cat(logs).mean()))
        # the two ends of eq. 15's interpolation: v = 1 (log beta_t) and v = 0 (log beta~_t)
        for out, end in ((log_beta, 1.0), (log_tilde, 0.0)):
            out.append(float(reverse_log_variance(schedule, t.view(1), x0[:1], "learned", torch.tensor(end)).mean()))
    return VarianceCurve(times.numpy(), np.stack(per_image), np.array(q10), np.array(q90), np.array(log_sigma),
                         np.array(log_beta), np.array(log_tilde), x0, eps)


__all__ = ["DEFAULT_POINTS", "VarianceCurve", "variance_interpolation", "variance_times"]
