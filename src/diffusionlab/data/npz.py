"""Images (and optional labels) stored as arrays in a numpy .npz file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from diffusionlab.data.dataset import ImageDataset, adapt, images_tensor, labels_tensor
from diffusionlab.errors import DataError

_CHANNEL_COUNTS = (1, 3, 4)


def to_nchw(images: np.ndarray, path: Path) -> np.ndarray:
    """Bring (N, H, W), (N, H, W, C) or (N, C, H, W) images (C in 1, 3, 4) to (N, C, H, W) with C in 1, 3."""
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        last, second = images.shape[3] in _CHANNEL_COUNTS, images.shape[1] in _CHANNEL_COUNTS
        if last:
            # Channels-last wins when both readings are possible: it is numpy's / Pillow's convention.
            images = images.transpose(0, 3, 1, 2)
        elif not second:
            raise DataError(f"{path}: 'images' shape {images.shape} has no channel axis of size 1, 3 or 4 "
                            "(expected (N, H, W), (N, H, W, C) or (N, C, H, W))")
    else:
        raise DataError(f"{path}: 'images' must be (N, H, W), (N, H, W, C) or (N, C, H, W), got {images.shape}")
    if images.shape[1] == 4:
        images = images[:, :3]  # drop alpha: the models see RGB
    return images


def to_uint8(images: np.ndarray, path: Path) -> np.ndarray:
    """Convert uint8, integer 0..255, or float images in [0, 1] or [0, 255] to uint8."""
    if images.dtype == np.uint8:
        return images
    if images.size == 0:
        return images.astype(np.uint8)
    if images.dtype == np.bool_:
        return images.astype(np.uint8) * 255  # a binary mask: True = white
    if np.issubdtype(images.dtype, np.integer):
        lo, hi = int(images.min()), int(images.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{path}: integer 'images' must lie in 0..255, got {lo}..{hi}")
        return images.astype(np.uint8)
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise DataError(f"{path}: 'images' contains NaN or infinite values")
        lo, hi = float(images.min()), float(images.max())
        if lo < 0.0 or hi > 255.0:
            raise DataError(f"{path}: float 'images' must lie in [0, 1] or [0, 255], got {lo:g}..{hi:g}")
        # A max of at most 1 can only sensibly mean the [0, 1] convention.
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.rint(images * scale).clip(0, 255).astype(np.uint8)
    raise DataError(f"{path}: 'images' has unsupported dtype {images.dtype}")


def load_npz(path: Path, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """Load key 'images' (and optional 'labels', 'class_names') from an .npz file."""
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist")
    if split == "test":
        raise DataError(f"npz file {path} has no test split (use split 'train' or 'all')")
    try:
        # allow_pickle=False: an .npz may carry object arrays, which would mean unpickling untrusted data.
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if "images" not in keys:
                raise DataError(f"{path}: no 'images' array (keys: {', '.join(keys) or 'none'})")
            images = archive["images"]
            labels = archive["labels"] if "labels" in keys else None
            class_names = archive["class_names"] if "class_names" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read npz ({e})") from None

    images = to_uint8(to_nchw(images, path), path)
    if labels is not None:
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{path}: {labels.shape[0]} labels for {images.shape[0]} images")
        if labels.size and labels.min() < 0:
            raise DataError(f"{path}: 'labels' contains negative values")
    num_classes = int(labels.max()) + 1 if labels is not None and labels.size else None
    names = [str(n) for n in class_names.tolist()] if class_names is not None and labels is not None else None
    if names is not None and num_classes is not None:
        if len(names) < num_classes:
            raise DataError(f"{path}: {len(names)} class_names but labels go up to {num_classes - 1}")
        num_classes = len(names)  # a class may be absent from the labels yet still exist
    images = adapt(images, image_size, channels)
    return ImageDataset(images=images_tensor(images), labels=labels_tensor(labels), num_classes=num_classes,
                        name=f"npz:{path.stem}", class_names=names)
