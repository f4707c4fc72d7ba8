"""How well an autoencoder reconstructs held-out images: PSNR on 8-bit pixels and rFID beside the real-data floor.

rFID is the FID of the reconstructions of test images against test images (Rombach et al. 2022, Table 8), with the
same extractor and floor as every other FID here (quality.py): it bounds the FID a latent model can reach.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ..data import ImageDataset, from_model_range, to_model_range
from ..models.autoencoder import AutoencoderKL


@torch.no_grad()
def reconstruct(model: AutoencoderKL, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """uint8 reconstructions D(mean of q(z | x)) of uint8 images."""
    return torch.cat([from_model_range(model.decode(model.encode(to_model_range(images[i : i + batch_size])).mean))
                      for i in range(0, len(images), batch_size)])


def psnr(reconstructed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8 images: 10 log10(255^2 / MSE) (inf-free: MSE floored at 1e-10)."""
    mse = ((reconstructed.double() - images.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse.clamp(min=1e-10))


def reconstruction_report(model: AutoencoderKL, train: ImageDataset, test: ImageDataset, extractor: Any, *,
                          n: int = 10000, seed: int = 0) -> dict[str, Any]:
    """PSNR (mean, median) and rFID/KID/precision/recall of the first n test images' reconstructions, with the floor."""
    from .evaluate import quality_with_floor

    images = test.images[:n]
    t0 = time.perf_counter()
    rec = reconstruct(model.eval(), images)
    seconds = time.perf_counter() - t0
    p = psnr(rec, images).tolist()
    q = quality_with_floor(rec, train, test, extractor, seed=seed)
    return {"n": len(images), "psnr_mean": statistics.fmean(p), "psnr_median": statistics.median(p), "quality": q,
            "seconds_per_image": seconds / len(images)}


__all__ = ["psnr", "reconstruct", "reconstruction_report"]
