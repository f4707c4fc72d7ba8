"""Super-resolution (SR3, Saharia et al. 2021; cascaded diffusion models, Ho et al. 2022): the degradation a model
learns to invert, the low-resolution condition it is given, and upsampling with any sampler.

The model is an ordinary denoiser of the high-resolution image x0 (in pixels or in an autoencoder's latents) whose
network also sees the low-resolution image, concatenated with x_t (models/lowres.py). Training degrades each image
on the fly:

    lowres = down_r(blur_b(x0))                      bicubic, anti-aliased, by the factor r (2 or 4)
    z_s    = sqrt(1 - s^2) lowres + s n,  n ~ N(0, I), s ~ U[0, s_max]

z_s is CDM's conditioning augmentation (Ho et al. 2022, section 4.1; docs/maths.md section 11): the forward process
q(z_s | z) of a VP path applied to the condition, sqrt(abar_s) lowres + sqrt(1 - abar_s) n, written with the level
s = sqrt(1 - abar_s), the noise's standard deviation. The network is told s (a constant channel of y). At sampling
the level is fixed (`aug_level`); a little noise hides the difference between real low-resolution images and a
base model's samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .codecs import Codec
from .denoiser import Denoiser
from .errors import ConfigError
from .processes.base import Process
from .sampling import SampleResult, SamplerOptions, generate
from .training.determinism import generator

FACTORS = (2, 4)  # the downsampling factors of the cascades in the seeds (GLIDE 64 -> 256 is 4, CDM's 2 and 4)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x (B, C, H, W) convolved with a normalised Gaussian of std `sigma` pixels (separable, reflected borders)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # an image smaller than the kernel: zero-extend the reflected border
        x = F.pad(x, (pad,) * 4, mode="reflect")
        x = F.pad(x, (radius - pad,) * 4)
    else:
        x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def degrade(x: Tensor, factor: int, blur: float = 0.0) -> Tensor:
    """The low-resolution image down_r(blur_b(x)): anti-aliased bicubic downsampling by `factor` (linear in x)."""
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ConfigError(f"factor {factor} does not divide the image size {h}x{w}")
    x = gaussian_blur(x, blur)
    return F.interpolate(x, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)


def augment(lowres: Tensor, level: Tensor, noise: Tensor) -> Tensor:
    """z_s = sqrt(1 - s^2) lowres + s n: CDM's Gaussian conditioning augmentation at levels s (B,) in [0, 1)."""
    s = level.to(lowres).view(-1, 1, 1, 1)
    return (1 - s**2).sqrt() * lowres + s * noise.to(lowres)


def condition(lowres: Tensor, level: Tensor) -> Tensor:
    """The network's condition y: the (augmented) low-resolution image and a constant channel holding its level s."""
    s = level.to(lowres).view(-1, 1, 1, 1).expand(-1, 1, *lowres.shape[-2:])
    return torch.cat([lowres, s], dim=1)


def bicubic_upsample(lowres: Tensor, factor: int) -> Tensor:
    """The baseline: bicubic interpolation by `factor`, clamped to [-1, 1]."""
    return F.interpolate(lowres, scale_factor=factor, mode="bicubic", align_corners=False).clamp(-1, 1)


@dataclass(frozen=True)
class SuperResolution:
    """A run's super-resolution task: the factor r, the blur b, the training law of the level s and its sampling value."""

    factor: int
    blur: float = 0.0
    aug_max: float = 0.0
    aug_level: float = 0.0

    @staticmethod
    def from_config(task: Any) -> "SuperResolution | None":
        """The task of a run's `task` section (None for a plain generative run)."""
        if task.kind != "superres":
            return None
        return SuperResolution(task.factor, task.blur, task.aug_max, task.aug_level)

    def lowres_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(C, H / r, W / r) of the condition of images of `shape`; one-line error when r does not divide H and W."""
        c, h, w = shape
        if h % self.factor or w % self.factor:
            raise ConfigError(f"super-resolution factor {self.factor} does not divide the image size {h}x{w}")
        return (c, h // self.factor, w // self.factor)

    def training_condition(self, x0_pixels: Tensor, uniform: Tensor, noise: Tensor) -> Tensor:
        """y for a training batch of pixel images: degraded, augmented at s = aug_max * uniform (draws in [0, 1))."""
        level = self.aug_max * uniform
        return condition(augment(degrade(x0_pixels, self.factor, self.blur), level, noise), level)


def check_lowres(lowres: Tensor, shape: tuple[int, int, int], what: str = "low-resolution images") -> None:
    """One-line error unless `lowres` (N, C, h, w) has the shape (C, h, w) a super-resolution model takes."""
    if lowres.ndim != 4 or tuple(lowres.shape[1:]) != tuple(shape):
        got = "x".join(map(str, lowres.shape[1:])) if lowres.ndim == 4 else f"shape {tuple(lowres.shape)}"
        raise ConfigError(f"{what} are {got} (CxHxW); this super-resolution model takes {'x'.join(map(str, shape))}")


def upsample(model: Denoiser, process: Process, shape: tuple[int, int, int], lowres: Tensor, sampler: str = "ddim",
             steps: int | None = None, *, level: float = 0.0, seed: int = 0, options: SamplerOptions | None = None,
             codec: Codec | None = None, batch_size: int = 256, progress: bool = False, trajectory_frames: int = 0,
             on_batch: Callable[[Tensor], None] | None = None) -> SampleResult:
    """High-resolution samples (of the model's `shape`) given low-resolution images in [-1, 1], one per image, with
    the condition augmented at `level` (noise drawn from `seed`); any sampler, as `sampling.generate`."""
    if not 0.0 <= level < 1.0:
        raise ConfigError(f"the augmentation level must be in [0, 1), got {level}")
    n = lowres.shape[0]
    s = torch.full((n,), float(level))
    noise = torch.randn(lowres.shape, generator=generator(seed, 2), dtype=lowres.dtype)
    y = condition(augment(lowres, s, noise), s)
    return generate(model, process, shape, n, sampler, steps, options=options, seed=seed, y=y, codec=codec,
                    batch_size=batch_size, progress=progress, trajectory_frames=trajectory_frames, on_batch=on_batch)


__all__ = ["FACTORS", "SuperResolution", "augment", "bicubic_upsample", "check_lowres", "condition", "degrade",
           "gaussian_blur", "upsample"]
