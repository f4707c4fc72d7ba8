"""The forward process drawn on a real image: x_t = alpha(t) x0 + sigma(t) eps over t, from the data to the noise end
of the run's own path (docs/maths.md section 1, DDPM eq. 4; every family's path, `paths.py`).

For DDPM the columns are integer steps 0..T and alpha(t)^2 is the schedule's discrete alpha_bar_t; a continuous
family's columns spread over its path from the data end to the noise end (flow matching: t = 1 to 0). Column 0 is
the data itself (alpha = 1, sigma = 0). One eps per image is shared by all columns, so the strip shows the image
fading into one fixed noise. A latent run noises z0 = E(x0) and decodes each column; its column 0 is the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..codecs import Codec
from ..data import from_model_range, to_model_range
from ..paths import GaussianPath, expand_like
from ..processes.base import Process


def path_sample(path: GaussianPath, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t = alpha(t) x0 + sigma(t) eps for times t (B,) or one time (a draw from q(x_t | x0))."""
    return expand_like(path.alpha(t), x0) * x0 + expand_like(path.sigma(t), x0) * eps


def strip_times(process: Process, columns: int) -> tuple[Tensor, list[str]]:
    """`columns` times from the data end to the noise end (float64) and their labels: integer steps 0..T for a
    discrete family, else column 0 for the data and the rest evenly over the path's [t_data, t_noise]."""
    if process.T is not None:
        t = torch.linspace(0, process.T, columns, dtype=torch.float64).round().unique()
        return t, [f"t={int(x)}" for x in t]
    path = process.path
    t = torch.linspace(float(path.t_data), float(path.t_noise), columns, dtype=torch.float64)
    return t, ["data"] + [f"t={float(x):.2f}" for x in t[1:]]


@dataclass
class ForwardStrip:
    """The forward strip's data: per column its label, t, alpha and sigma; per image x0, eps and every x_t (in the
    model's space) and the picture shown (uint8, decoded)."""

    labels: list[str]
    t: np.ndarray  # (K,)
    alpha: np.ndarray  # (K,); alpha[0] = 1
    sigma: np.ndarray  # (K,); sigma[0] = 0
    x0: Tensor  # (N, C, h, w): the images (or their latents)
    eps: Tensor  # (N, C, h, w)
    x_t: Tensor  # (N, K, C, h, w)
    images: Tensor  # (N, K, C, H, W) uint8: x_t / sqrt(alpha^2 + sigma^2), decoded
    latent: bool


@torch.no_grad()
def forward_strip(process: Process, codec: Codec, images: Tensor, columns: int = 10, seed: int = 0) -> ForwardStrip:
    """The strip of uint8 `images` (N, C, H, W) under the run's process and codec, eps drawn from `seed`."""
    t, labels = strip_times(process, columns)
    # clone: a path may hand back t itself (flow matching's alpha(t) = t), and column 0 is set below
    alpha, sigma = process.path.alpha(t).double().clone(), process.path.sigma(t).double().clone()
    alpha[0], sigma[0] = 1.0, 0.0  # column 0: the data (DDPM's alpha_bar_0 = 1 already)
    pixels = to_model_range(images)
    x0 = codec.encode(pixels)  # the posterior mean for a latent codec: the image's own latent
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)
    k = len(t)
    x_t = (alpha.view(1, k, 1, 1, 1) * x0.double().unsqueeze(1) +
           sigma.view(1, k, 1, 1, 1) * eps.double().unsqueeze(1)).to(x0.dtype)
    # Shown at the VP scale x_t / sqrt(alpha^2 + sigma^2) (1 on a VP path), so a VE path's x0 + 50 eps or flow
    # matching's middle stays within the data range, as in the sampling frames (sampling/generate.py).
    scale = (alpha**2 + sigma**2).sqrt().to(x0.dtype).view(1, k, 1, 1, 1)
    shown = codec.decode((x_t / scale).flatten(0, 1))
    shown = from_model_range(shown).view(len(images), k, *images.shape[1:])
    if not codec.pixel_space:  # the decoder's reconstruction is not the image: column 0 shows the image itself
        shown[:, 0] = images
    return ForwardStrip(labels, t.numpy(), alpha.numpy(), sigma.numpy(), x0, eps, x_t, shown, not codec.pixel_space)


__all__ = ["ForwardStrip", "forward_strip", "path_sample", "strip_times"]
