"""IDX files (the MNIST / Fashion-MNIST format), parsed with numpy, gzip-compressed or raw."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from diffusionlab.data.dataset import ImageDataset, adapt, images_tensor, labels_tensor
from diffusionlab.errors import DataError

# IDX type code (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def read_maybe_gzip(path: Path) -> bytes:
    """Read a file's bytes, transparently gunzipping it if it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    # Sniff the content rather than trusting the name: people gunzip files and keep ".gz", or vice versa.
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse the bytes of one IDX file into a native-endian numpy array; `path` is only for messages."""
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{data[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({ndim} dimensions, {len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    # Python integers: a lying header (e.g. 2^31 x 2^31 x 4) would wrap around in int64 and pass as 0 bytes.
    expected = math.prod(dims) * dtype.itemsize
    payload = len(data) - header
    if payload < expected:
        raise DataError(f"{path}: truncated: header says {dims[0]} items of shape {dims[1:]} "
                        f"({expected} bytes) but only {payload} bytes follow")
    if payload > expected:
        raise DataError(f"{path}: {payload - expected} unexpected bytes after the {dims} IDX payload")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz) into a numpy array."""
    path = Path(path)
    return parse_idx(read_maybe_gzip(path), path)


def _find(directory: Path, stem: str) -> Path | None:
    """Locate an IDX file by its standard stem, accepting .gz or raw and the common '.idx' spelling variant."""
    variants = [stem, stem.replace("-idx", ".idx")]  # some mirrors ship "train-images.idx3-ubyte"
    for name in variants:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _resolve_dir(data_dir: Path, source: str) -> Path:
    """Pick the directory holding the IDX files: data_dir itself or torchvision's <Name>/raw layout."""
    sub = "FashionMNIST" if source == "fashion-mnist" else "MNIST"
    for directory in (data_dir, data_dir / "raw", data_dir / sub / "raw"):
        if _find(directory, "train-images-idx3-ubyte") or _find(directory, "t10k-images-idx3-ubyte"):
            return directory
    return data_dir


def _load_split(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one (images, labels) pair, e.g. prefix "train" or "t10k"."""
    found: dict[str, Path] = {}
    for kind, stem in (("images", f"{prefix}-images-idx3-ubyte"), ("labels", f"{prefix}-labels-idx1-ubyte")):
        path = _find(directory, stem)
        if path is None:
            raise DataError(f"missing {stem}[.gz] in {directory}")
        found[kind] = path
    images = read_idx(found["images"])
    labels = read_idx(found["labels"])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{found['images']}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{found['labels']}: expected labels (N,), got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{found['labels']}: {labels.shape[0]} labels but {found['images'].name} "
                        f"has {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{found['labels']}: labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    return images, labels


def load_idx_dataset(source: str, data_dir: Path, split: str, image_size: int | None,
                     channels: int | None) -> ImageDataset:
    """Load MNIST or Fashion-MNIST ("train", "test" or "all") from the four IDX files in data_dir."""
    directory = _resolve_dir(data_dir, source)
    prefixes = ["train", "t10k"] if split == "all" else [_SPLIT_PREFIX[split]]
    parts = [_load_split(directory, p) for p in prefixes]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    images = adapt(images[:, None], image_size, channels)
    class_names = FASHION_MNIST_CLASSES if source == "fashion-mnist" else MNIST_CLASSES
    return ImageDataset(images=images_tensor(images), labels=labels_tensor(labels), num_classes=10,
                        name=f"{source}:{split}", class_names=list(class_names))
