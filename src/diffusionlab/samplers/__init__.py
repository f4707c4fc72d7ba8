"""Samplers: plain functions `sample_*(model, x, schedule, ...)` around the contract model(x_t, t) -> Prediction.

`schedule` is the (possibly respaced) `NoiseSchedule` to walk from step K down to 0; the network is
told `schedule.timesteps[k]` at step k. Every sampler returns the final x and counts network
evaluations in an `NFECounter` if one is given.
"""

from .common import NFECounter, StepCallback
from .ddim import ddim_invert, sample_ddim
from .ddpm import sample_ddpm

SAMPLERS = ("ddpm", "ddim")

__all__ = ["NFECounter", "SAMPLERS", "StepCallback", "ddim_invert", "sample_ddim", "sample_ddpm"]
