"""How well an upsampler restores held-out images, beside bicubic interpolation: PSNR and SSIM against the originals,
and the domain FID of the restored set (SR3, Saharia et al. 2021, Table 1; CDM, Ho et al. 2022, section 4.2).

The test images are degraded exactly as in training (superres.degrade, no augmentation noise), then restored by the
model (one sample each, at the given augmentation level and sampler) and by bicubic interpolation. SSIM is
`pytorch_msssim`'s (Wang et al. 2004, Gaussian window of std 1.5); its window is 11 pixels, or the largest odd size
that fits a smaller image. The FID is the usual one against a seeded subset of the same test split, beside the
train-against-test floor; restorations of test images can come close to that floor, since each one starts from the
information in its original.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from pytorch_msssim import ssim as ms_ssim

from ..data import ImageDataset, from_model_range, to_model_range
from ..runs import LoadedRun
from ..sampling import SamplerOptions
from ..superres import bicubic_upsample, degrade, upsample
from .reconstruction import psnr


def ssim_window(height: int, width: int) -> int:
    """SSIM's window: 11 pixels (Wang et al. 2004), or the largest odd size that fits the image."""
    side = min(11, height, width)
    return side if side % 2 else side - 1


def ssim(restored: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of uint8 images (N, C, H, W) against the originals (pytorch_msssim, data range 255)."""
    win = ssim_window(*images.shape[-2:])
    return ms_ssim(restored.double(), images.double(), data_range=255.0, size_average=False, win_size=win)


def fidelity(restored: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """Mean and median PSNR (dB) and mean SSIM of uint8 restorations against the originals."""
    p, s = psnr(restored, images).tolist(), ssim(restored, images).tolist()
    return {"psnr_mean": statistics.fmean(p), "psnr_median": statistics.median(p), "ssim_mean": statistics.fmean(s)}


def superres_report(run: LoadedRun, train: ImageDataset, test: ImageDataset, extractor: Any, *, n: int = 1000,
                    sampler: str = "ddim", steps: int | None = None, level: float = 0.0, seed: int = 0,
                    options: SamplerOptions | None = None, batch_size: int = 256, progress: bool = False,
                    quality: bool = True) -> dict[str, Any]:
    """PSNR, SSIM and FID (with KID, precision, recall and the floor) of the model's and of bicubic restorations of
    the first n images of `test`."""
    from .evaluate import quality_with_floor

    sr = run.superres
    assert sr is not None, "superres_report needs a super-resolution run"
    images = test.images[:n]
    lowres = degrade(to_model_range(images), sr.factor, sr.blur)
    t0 = time.perf_counter()
    res = upsample(run.denoiser, run.process, run.model_shape, lowres, sampler, steps, level=level, seed=seed,
                   options=options, codec=run.codec, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    restored = {"model": from_model_range(res.images), "bicubic": from_model_range(bicubic_upsample(lowres, sr.factor))}
    report: dict[str, Any] = {"n": len(images), "factor": sr.factor, "blur": sr.blur, "aug_level": level,
                              "sampler": sampler, "steps": steps, "nfe": res.nfe,
                              "seconds_per_image": seconds / len(images), "checkpoint_step": run.step,
                              "ssim_window": ssim_window(*images.shape[-2:])}
    for name, x in restored.items():
        report[name] = fidelity(x, images)
        if quality:
            report[name]["quality"] = quality_with_floor(x, train, test, extractor, seed=seed)
    return report


__all__ = ["fidelity", "ssim", "ssim_window", "superres_report"]
