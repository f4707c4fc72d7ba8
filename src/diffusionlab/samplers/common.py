"""Pieces shared by every sampler: NFE counting, the per-step callback, x0 clipping."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from ..denoiser import Model
from ..prediction import Prediction, eps_from_x0


# Called after each step with the step index k (K..1), the new x and the x0 prediction used.
StepCallback = Callable[[int, Tensor, Tensor], None]
# The range the x0 prediction is clipped to (the data range of the codec: [-1, 1] for pixels), or None: no clipping.
ClipRange = tuple[float, float] | None


class NFECounter:
    """Wraps a model (a `Model`, a `SigmaModel` or an ODE field f(x, t)) and counts its network function evaluations."""

    def __init__(self, model: Callable[[Tensor, Tensor], Any]):
        self.model = model
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> Any:
        self.nfe += 1
        return self.model(x, t)


def predict(model: Model, x: Tensor, t: float, alpha_bar: Tensor, clip: ClipRange = None) -> Prediction:
    """model(x, t) with t broadcast to the batch; with a `clip` range, clamp x0_hat to it and recompute eps_hat."""
    pred = model(x, torch.full((x.shape[0],), float(t), device=x.device))
    if clip is not None:
        # Ho et al.'s reference sampler clips x0 to the data range; eps must then agree with the clipped x0.
        x0 = pred.x0.clamp(*clip)
        pred = Prediction(x0, eps_from_x0(x, x0, alpha_bar.sqrt(), (1 - alpha_bar).sqrt()), pred.var_frac)
    return pred


def noop_callback(k: int, x: Tensor, x0_hat: Tensor) -> None:
    """The default StepCallback: do nothing."""
    return None


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) of x's shape and dtype, drawn on the CPU generator (the same numbers on every device)."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def ve_score(x: Tensor, x0_hat: Tensor, sigma: Tensor) -> Tensor:
    """grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2 in VE coordinates (Tweedie; Karras et al. 2022, eq. 3)."""
    return (x0_hat - x) / sigma**2
