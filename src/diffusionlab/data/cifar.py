"""CIFAR-10 from its binary or python (pickled) distribution, unpickled through a strict allow-list."""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffusionlab.data.dataset import ImageDataset, adapt, images_tensor, labels_tensor
from diffusionlab.errors import DataError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_RECORD = 1 + 3 * 32 * 32  # binary format: one label byte, then R, G, B planes of 32x32
_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_TEST = ["test_batch"]


def _np_reconstruct() -> Callable[..., Any]:
    """numpy's ndarray pickle reconstructor, wherever this numpy version keeps it."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# The only globals a CIFAR batch pickle may reference: ndarray reconstruction (under numpy 1.x and 2.x module
# names) and codecs.encode, which protocol-2 pickles written by Python 3 use to rebuild bytes objects.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the allow-listed globals and rejects everything else."""

    def __init__(self, file: io.BytesIO, path: Path) -> None:
        # encoding="bytes" is what the original Python 2 CIFAR pickles need: str payloads stay bytes.
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global, or raise DataError before anything else is imported or called."""
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise DataError(f"{self._path}: refusing to unpickle: it references {module}.{name}, "
                            "which a CIFAR batch never needs")
        return factory()


def safe_unpickle(path: Path) -> Any:
    """Unpickle a CIFAR python-format file, allowing only the globals a CIFAR batch needs."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return _CifarUnpickler(io.BytesIO(data), path).load()
    except DataError:
        raise
    except Exception as e:  # a malformed pickle can fail in many ways; all of them mean "bad file"
        raise DataError(f"{path}: not a valid CIFAR pickle ({type(e).__name__}: {e})") from None


def _get(d: dict, key: str) -> Any:
    """Look up a key stored as bytes (Python 2 pickles) or str (Python 3 pickles)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one python-format batch into (images (N, 3, 32, 32), labels (N,))."""
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict batch, got {type(batch).__name__}")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072), got {got}")
    try:
        labels_arr = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' is not a list of integers") from None
    if labels_arr.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels_arr.size} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), labels_arr


def _read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary-format batch into (images (N, 3, 32, 32), labels (N,))."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) == 0 or len(raw) % _RECORD:
        raise DataError(f"{path}: size {len(raw)} is not a whole number of {_RECORD}-byte CIFAR-10 records "
                        "(truncated or not a CIFAR-10 binary batch)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _class_names(directory: Path, fmt: str) -> list[str]:
    """Class names from batches.meta(.txt) when present, else the standard CIFAR-10 list."""
    if fmt == "python" and (directory / "batches.meta").is_file():
        meta = safe_unpickle(directory / "batches.meta")
        names = _get(meta, "label_names") if isinstance(meta, dict) else None
        if isinstance(names, list) and len(names) == 10:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if fmt == "binary" and (directory / "batches.meta.txt").is_file():
        names = [ln.strip() for ln in (directory / "batches.meta.txt").read_text().splitlines() if ln.strip()]
        if len(names) == 10:
            return names
    return list(CIFAR10_CLASSES)


def _detect(data_dir: Path) -> tuple[Path, str]:
    """Find the directory and format ("binary" or "python") of the CIFAR-10 batches."""
    for directory in (data_dir, data_dir / "cifar-10-batches-bin", data_dir / "cifar-10-batches-py"):
        if any((directory / f"{n}.bin").is_file() for n in _TRAIN + _TEST):
            return directory, "binary"
        if any((directory / n).is_file() for n in _TRAIN + _TEST):
            return directory, "python"
    raise DataError(f"no CIFAR-10 batches in {data_dir} (expected data_batch_1..5[.bin] and test_batch[.bin], "
                    "or a cifar-10-batches-bin / cifar-10-batches-py subdirectory)")


def load_cifar10(data_dir: Path, split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """Load CIFAR-10 ("train" = 50k, "test" = 10k, "all") from its binary or python batches in data_dir."""
    directory, fmt = _detect(data_dir)
    names = {"train": _TRAIN, "test": _TEST, "all": _TRAIN + _TEST}[split]
    suffix, reader = (".bin", _read_binary_batch) if fmt == "binary" else ("", _read_python_batch)
    parts = []
    for name in names:
        path = directory / f"{name}{suffix}"
        if not path.is_file():
            raise DataError(f"missing {path.name} in {directory} (CIFAR-10 {fmt} format)")
        parts.append(reader(path))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{directory}: CIFAR-10 labels outside 0..9 (min {labels.min()}, max {labels.max()})")
    images = adapt(images, image_size, channels)
    return ImageDataset(images=images_tensor(images), labels=labels_tensor(labels), num_classes=10,
                        name=f"cifar10:{split}", class_names=_class_names(directory, fmt))
