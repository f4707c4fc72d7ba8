"""A continuous Gaussian path with derivatives and its Bayes-optimal network, for the time-space solver tests.

`OTPath` is flow matching's conditional OT path (`processes.flow.OTFlowPath`, docs/maths.md section 6: t = 0 noise,
t = 1 data): x_t = alpha(t) x1 + sigma(t) x0 with alpha(t) = t, sigma(t) = 1 - (1 - sigma_min) t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusionlab.analytic import GaussianMixture
from diffusionlab.paths import expand_like
from diffusionlab.prediction import PredictionType, from_prediction
from diffusionlab.processes.flow import OTFlowPath


# The library's OT path (float64 in, float64 out): the tests drive it with float64 times.
OTPath = OTFlowPath


class PathNet:
    """The Bayes-optimal network of kind `prediction` for `data` on a continuous `path`: net(x_t, t)."""

    def __init__(self, data: GaussianMixture, path: OTPath, prediction: str = "velocity"):
        self.data, self.path, self.prediction = data, path, PredictionType.parse(prediction)

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        t = t.to(torch.float64)
        p = self.path
        a, b = p.alpha(t).to(x.dtype), p.sigma(t).to(x.dtype)
        pred = self.data.posterior_mean(x, a, b)
        coef = [expand_like(c, x) for c in (a, b, p.d_alpha(t), p.d_sigma(t))]
        return from_prediction(pred, self.prediction, *coef)
