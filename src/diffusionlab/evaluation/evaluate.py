"""What `diffusionlab evaluate` computes: the NLL bound of a run, and FID / KID / precision / recall / IS
of its samples (or of a samples .npz) with the real-data floor beside them (docs/maths.md section 10).

Every number carries what it was measured with: the extractor's name, the sample and reference
counts, the split, the NFE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import ImageDataset, load_dataset
from ..errors import ConfigError, DataError
from ..runs import LoadedRun
from ..training.config import DataConfig
from .likelihood import require_bound, variational_bound
from .ode_likelihood import ode_bits_per_dim


def load_split(data: DataConfig, split: str) -> ImageDataset:
    """The split `split` of a run's dataset, with the run's resizing and channel settings."""
    return load_dataset(data.source, data.data_dir, split, data.image_size, data.channels)


def nll_images(run: LoadedRun, split: str, n: int, seed: int) -> tuple[ImageDataset, torch.Tensor, torch.Tensor | None]:
    """A fixed, seeded subset of n images of a split (and their labels for a class-conditional model, their captions'
    token ids for a text model: the bound of log p(x | caption))."""
    data = load_split(run.config.data, split)
    if data.shape != run.image_shape:
        raise DataError(f"split {split} has images {data.shape}, the model makes {run.image_shape}")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[: min(n, len(data))]
    y = None
    if run.config.model.get("num_classes"):
        if data.labels is None:
            raise DataError(f"the model is class-conditional and split {split} has no labels")
        y = data.labels[idx]
    if run.tokenizer is not None:
        if data.captions is None:
            raise DataError(f"the model is text-conditional and split {split} has no captions")
        y = run.tokenizer.encode([data.captions[int(i)] for i in idx])
    return data, data.images[idx], y


def _describe(run: LoadedRun, data: ImageDataset, split: str, y: torch.Tensor | None) -> dict[str, Any]:
    return {"dataset": data.name, "split": split, "trained_on_split": run.config.data.split,
            "checkpoint_step": run.step, "class_conditional": y is not None and y.ndim == 1,
            "text_conditional": y is not None and y.ndim == 2}


def nll_report(run: LoadedRun, *, split: str = "test", n: int = 256, steps: int | None = None, spacing: str = "uniform",
               variance: str | None = None, clip_x0: bool = True, batch_size: int = 256, seed: int = 0,
               progress: bool = False) -> dict[str, Any]:
    """The variational bound in bits/dim on the first n images of a split (a fixed, seeded subset)."""
    require_bound(run.process)
    data, images, y = nll_images(run, split, n, seed)
    res = variational_bound(run.denoiser, run.process, images, steps=steps, spacing=spacing, variance=variance,
                            clip_x0=clip_x0, batch_size=batch_size, seed=seed, y=y, codec=run.codec, progress=progress)
    return {**res.to_dict(), **_describe(run, data, split, y)}


def ode_nll_report(run: LoadedRun, *, split: str = "test", n: int = 256, steps: int = 25, method: str = "rk4",
                   rtol: float = 1e-5, divergence: str = "hutchinson", batch_size: int = 256, seed: int = 0,
                   progress: bool = False) -> dict[str, Any]:
    """The probability-flow ODE NLL in bits/dim (dequantized) on the same seeded subset as `nll_report`."""
    data, images, y = nll_images(run, split, n, seed)
    res = ode_bits_per_dim(run.denoiser, images, steps=steps, method=method, rtol=rtol, divergence=divergence,
                           seed=seed, batch_size=batch_size, y=y, codec=run.codec, progress=progress)
    return {**res.to_dict(), **_describe(run, data, split, y)}


EXTRACTORS = ("auto", "domain", "inception")


def build_extractor(kind: str, train: ImageDataset, test: ImageDataset | None, *, inception_weights: str | None = None,
                    download: bool = False, cache_dir: Path | None = None, progress: bool = False) -> Any:
    """The feature extractor: 'inception' (FID weights from a local file) or 'domain' (a classifier we train)."""
    from .extractors import InceptionExtractor, domain_extractor

    if kind == "auto":
        kind = "inception" if (inception_weights or download) else "domain"
    if kind == "inception":
        if not (inception_weights or download):
            raise ConfigError("the Inception extractor needs --inception-weights FILE (or --download-inception when online)")
        return InceptionExtractor(inception_weights, download=download, progress=progress)
    if kind == "domain":
        return domain_extractor(train, test, cache_dir=cache_dir, progress=progress)
    raise ConfigError(f"unknown extractor {kind!r}; choose from {', '.join(EXTRACTORS)}")


def quality_with_floor(fake: torch.Tensor, train: ImageDataset, test: ImageDataset, extractor: Any, *, k: int = 3,
                       seed: int = 0, cache_dir: Path | None = None) -> dict[str, Any]:
    """FID/KID/precision/recall/IS of uint8 samples against the test split, and the real train-vs-test floor at the same count."""
    from .extractors import reference_features
    from .quality import quality_report, real_floor

    if fake.shape[1:] != test.images.shape[1:]:
        raise DataError(f"samples have shape {tuple(fake.shape[1:])}, the reference data {tuple(test.images.shape[1:])}")
    n = min(len(fake), len(test), len(train))
    if n < 2 * k + 2:
        raise ConfigError(f"too few images for the metrics ({n}); use at least {2 * k + 2}")
    ref = reference_features(extractor, test, n, seed, cache_dir)
    fake = fake[torch.randperm(len(fake), generator=torch.Generator().manual_seed(seed))[:n]]
    report = quality_report(extractor, fake, ref, k=k)
    report["floor"] = real_floor(extractor, train, test, n, seed, cache_dir)
    report["reference"] = f"{test.name} test split"
    return report


def npz_to_images(arr: np.ndarray) -> torch.Tensor:
    """A samples .npz array ((N, H, W) or (N, H, W, C), uint8) as a uint8 (N, C, H, W) tensor."""
    if arr.dtype != np.uint8:
        raise DataError(f"samples must be uint8 images, got {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3):
        arr = arr.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"samples must have shape (N, H, W) or (N, H, W, C), got {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr))
