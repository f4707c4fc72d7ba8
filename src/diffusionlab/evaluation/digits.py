"""An independent judge for 8x8 digit samples: an RBF-SVM trained on the real UCI digits (scikit-learn).

The classifier shares nothing with the generator (different model family, trained separately), so
"it recognises the samples as digits of all ten classes, confidently" is evidence about the samples.
Its held-out accuracy on real digits and its confidence on real held-out digits are reported beside
every result, so a number on samples can be read against the real-data reference.
"""

from __future__ import annotations

import zipfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

THRESHOLD = 0.8  # a sample is recognised if the top class has probability >= this (and it is near real digits)


@lru_cache(maxsize=1)
def _classifier() -> tuple[Any, Any, float, float, float]:
    """(classifier, nearest-neighbour index, distance limit, held-out accuracy, real held-out recognised fraction)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits
    from sklearn.neighbors import NearestNeighbors
    from sklearn.svm import SVC

    d = load_digits()
    x, y = d.data / 16.0, d.target
    perm = np.random.default_rng(12345).permutation(len(x))
    tr, te = perm[:1400], perm[1400:]
    clf = CalibratedClassifierCV(SVC(gamma=0.02, C=10.0), ensemble=False).fit(x[tr], y[tr])  # calibrated probabilities
    acc = float((clf.predict(x[te]) == y[te]).mean())
    # Reject option: a calibrated classifier is still confident far from the data (uniform noise gets a
    # confident label), so an image must also lie as close to a real training digit as real held-out
    # digits do (99th percentile of their nearest-neighbour distances).
    nn = NearestNeighbors(n_neighbors=1).fit(x[tr])
    limit = float(np.quantile(nn.kneighbors(x[te])[0][:, 0], 0.99))
    real_ok = (clf.predict_proba(x[te]).max(1) >= THRESHOLD) & (nn.kneighbors(x[te])[0][:, 0] <= limit)
    return clf, nn, limit, acc, float(real_ok.mean())


def load_npz_images(path: Path) -> np.ndarray:
    """The `images` array of a .npz (no pickles), with a one-line error naming the file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a samples .npz file")
    if not path.is_file():
        raise DataError(f"samples file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is not an .npz archive (a bare .npy array?)")
        with archive as f:
            if "images" not in f:
                raise DataError(f"{path} has no 'images' array (keys: {', '.join(f.files) or 'none'})")
            return f["images"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        # An empty, truncated or non-zip file, or an object array (which would need unpickling untrusted data).
        reason = str(e).splitlines()[0][:100] if str(e) else type(e).__name__
        raise DataError(f"{path} is not a readable .npz file ({reason})") from None


def check_samples(images: np.ndarray, path: Path | str) -> np.ndarray:
    """`images` if they are what `sample` writes -- uint8 pixels 0..255, (N, H, W) or (N, H, W, C), N >= 1 -- else a
    one-line DataError: float images in [0, 1] would otherwise be read as 0..255 and judged as near-black."""
    if images.dtype != np.uint8:
        raise DataError(f"{path}: samples must be uint8 images 0..255 (as `diffusionlab sample` writes), got "
                        f"{images.dtype}" + (" (convert with np.rint(x * 255).astype(np.uint8))"
                                             if np.issubdtype(images.dtype, np.floating) else ""))
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] in (1, 3))):
        raise DataError(f"{path}: samples must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
    if 0 in images.shape:
        raise DataError(f"{path}: no samples in it (images of shape {images.shape})")
    return images


def load_samples(path: Path) -> np.ndarray:
    """The checked uint8 images of a samples .npz (`load_npz_images`, then `check_samples`)."""
    return check_samples(load_npz_images(path), path)


def predict_digits(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The judge's class and confidence (max probability) for each uint8 8x8 grayscale image (N, 8, 8)."""
    clf = _classifier()[0]
    proba = clf.predict_proba(images.reshape(len(images), -1).astype(np.float64) / 255.0)
    return clf.classes_[proba.argmax(1)], proba.max(1)


def classify_digits(images: np.ndarray) -> dict[str, Any]:
    """Classify uint8 8x8 grayscale images (N, 8, 8) and summarise which classes appear and how confidently."""
    check_samples(images, "samples")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise DataError(f"the digit check needs 8x8 grayscale images, got shape {tuple(images.shape)}")
    clf, nn, limit, acc, real_conf = _classifier()
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0  # same [0, 1] scale as the training data
    proba = clf.predict_proba(x)
    pred = clf.classes_[proba.argmax(1)]
    conf = proba.max(1)
    near = nn.kneighbors(x)[0][:, 0] <= limit
    ok = (conf >= THRESHOLD) & near
    counts = np.bincount(pred[ok], minlength=10)
    return {
        "n": int(len(images)),
        "class_counts": np.bincount(pred, minlength=10).tolist(),
        "confident_class_counts": counts.tolist(),
        "classes_found": int((counts > 0).sum()),
        "confident_fraction": float(ok.mean()),
        "near_real_fraction": float(near.mean()),
        "mean_confidence": float(conf.mean()),
        "threshold": THRESHOLD,
        "classifier": f"RBF-SVM on real UCI 8x8 digits, held-out accuracy {acc:.1%}, "
                      f"{real_conf:.0%} of real held-out digits recognised confidently "
                      f"(confident: p >= {THRESHOLD} and within the real digits' 99th-percentile nearest-neighbour distance)",
    }
