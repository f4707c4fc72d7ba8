"""Feature extractors for the sample-quality metrics: Inception-v3 pool3, or a CNN trained on the domain.

FID / KID / precision-recall compare feature statistics, so the number means nothing without the network
that produced the features: every extractor carries a `name` that is printed next to every number.

  InceptionExtractor  the standard FID Inception-v3 ("inception-v3-pool3", 2048-d, 1008 logits).
  DomainExtractor     a small CNN classifier trained here on the labelled training split of the data set
                      (the usual stand-in for small grayscale sets such as MNIST or the 8x8 digits, where
                      ImageNet features are a poor fit). Features = its 128-d pre-logit embedding.

Trained extractors and reference features are cached on disk (safetensors + JSON / npz, written atomically,
nothing pickled), keyed by a hash of the training data and the settings, so a change in either retrains.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_write_bytes
from ..data.dataset import ImageDataset
from ..errors import ConfigError, DataError
from .cache import cache_dir, cache_root
from .inception import FEATURE_DIM, FID_WEIGHTS_FILE, load_inception, preprocess, sha256_file

# Bump when the architecture, preprocessing or training loop changes: every cached extractor is retrained.
CODE_VERSION = 1

DEFAULT_SETTINGS: dict[str, Any] = {
    "arch": "cnn3-bn",     # [conv-BN-ReLU](w)-pool-(2w)-pool-(4w)-avgpool(2x2)-linear(feature_dim)-linear(classes)
    "width": 32,
    "feature_dim": 128,
    "epochs": None,        # None: enough epochs for at least `min_steps` optimiser steps, and at least 2
    "min_steps": 600,
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 1e-4,
    "max_shift": None,     # random-translation augmentation in pixels; None: max(1, size // 16)
    "seed": 0,
}


class FeatureExtractor(Protocol):
    """uint8 images (N, C, H, W) -> (features float64 (N, D), class logits float64 (N, K) or None)."""

    name: str
    feature_dim: int

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]: ...


def _as_uint8_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Images as a uint8 torch tensor (N, C, H, W), or a one-line DataError."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if hasattr(images, "shape") else type(images).__name__
        raise DataError(f"feature extractors take uint8 images (N, C, H, W), got {got}")
    return images


def dataset_hash(ds: ImageDataset) -> str:
    """sha256 of a dataset's content: image shape and bytes, labels and number of classes."""
    h = hashlib.sha256()
    h.update(json.dumps({"shape": list(ds.images.shape), "num_classes": ds.num_classes,
                         "labelled": ds.labels is not None}).encode())
    h.update(ds.images.contiguous().numpy().tobytes())
    if ds.labels is not None:
        h.update(ds.labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------------
# Inception-v3
# --------------------------------------------------------------------------------------------------------

class InceptionExtractor:
    """FID Inception-v3 pool3 features (2048-d) and its 1008-way logits for the Inception Score."""

    feature_dim = FEATURE_DIM

    def __init__(self, weights_path: str | os.PathLike | None = None, download: bool = False,
                 batch_size: int = 32, progress: bool = False) -> None:
        path = Path(weights_path).expanduser() if weights_path is not None else cache_dir() / FID_WEIGHTS_FILE
        self.model = load_inception(path, download=download)
        self.weights_sha256 = sha256_file(path)  # identifies the weights in the reference-feature cache key
        self.name = "inception-v3-pool3"
        self.cache_key = f"inception-v3-pool3@{self.weights_sha256[:16]}"
        self.batch_size = batch_size
        self.progress = progress  # a bar (with ETA) over the images: 299x299 Inception passes are slow on a CPU

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """pool3 features (N, 2048) and logits (N, 1008) of uint8 images, in batches."""
        from tqdm.auto import tqdm

        images = _as_uint8_images(images)
        feats, logits = [], []
        starts = range(0, len(images), self.batch_size)
        # shown after half a second, like the sampling bar: a small call prints nothing
        for start in tqdm(starts, desc="Inception features", unit="batch", disable=not self.progress, delay=0.5):
            f, z = self.model(preprocess(images[start:start + self.batch_size]))
            feats.append(f.double().numpy())
            logits.append(z.double().numpy())
        return _stack(feats, FEATURE_DIM), _stack(logits, self.model.fc.out_features)


def _stack(parts: list[np.ndarray], dim: int) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros((0, dim))


# --------------------------------------------------------------------------------------------------------
# Domain CNN
# --------------------------------------------------------------------------------------------------------

class DomainCNN(nn.Module):
    """Small classifier for 8x8..32x32 images, 1 or 3 channels: returns (pre-logit embedding, class logits)."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        w = width
        # BatchNorm matters: without it the same budget reaches 97.6% instead of 99.1% on MNIST (2 epochs).
        self.body = nn.Sequential(
            nn.Conv2d(channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),  # any input size -> 2x2, keeping coarse position information
        )
        self.embed = nn.Linear(4 * w * 4, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x float in [-1, 1] (N, C, H, W) -> (features (N, feature_dim), logits (N, num_classes))."""
        # Features are taken before the ReLU: a continuous embedding with no dead (constant-zero)
        # coordinates, so the covariance in FID stays well-conditioned.
        h = self.embed(self.body(x).flatten(1))
        return h, self.head(F.relu(h))


def _to_input(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.to(torch.float32) / 127.5 - 1.0


def _random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2 (edge pixels replicated)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), mode="replicate")
    dy = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for oy in range(2 * s + 1):  # one slice per distinct offset instead of one per image
        for ox in range(2 * s + 1):
            m = (dy == oy) & (dx == ox)
            if m.any():
                out[m] = padded[m, :, oy:oy + h, ox:ox + w]
    return out


@torch.no_grad()
def _forward_batched(model: DomainCNN, images: torch.Tensor,
                     batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        f, z = model(_to_input(images[start:start + batch_size]))
        feats.append(f)
        logits.append(z)
    return torch.cat(feats), torch.cat(logits)


def accuracy(model: DomainCNN, ds: ImageDataset) -> float:
    """Top-1 accuracy of the classifier on a labelled dataset."""
    if ds.labels is None:
        raise DataError(f"{ds.name} has no labels to measure accuracy on")
    _, logits = _forward_batched(model.eval(), ds.images)
    return float((logits.argmax(1) == ds.labels).double().mean())


def resolve_settings(settings: dict[str, Any], n: int, size: int) -> dict[str, Any]:
    """Fill the automatic settings (epochs, max_shift) for n training images of the given side length."""
    s = dict(settings)
    steps_per_epoch = math.ceil(n / s["batch_size"])
    if s["epochs"] is None:
        s["epochs"] = max(2, math.ceil(s["min_steps"] / steps_per_epoch))
    if s["max_shift"] is None:
        s["max_shift"] = max(1, size // 16)  # 1 px for 8..31 px images, 2 px at 32
    return s


def train_domain_cnn(train: ImageDataset, settings: dict[str, Any], progress: bool = False) -> DomainCNN:
    """Train the domain classifier (AdamW, cosine learning rate, random shifts); seeded and deterministic."""
    s = resolve_settings(settings, len(train), min(train.height, train.width))
    assert train.labels is not None and train.num_classes is not None
    # Seed a private generator for the data order / augmentation and fork the global RNG for the
    # initialisation, so training is reproducible and leaves the caller's random state untouched.
    gen = torch.Generator().manual_seed(int(s["seed"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(s["seed"]))
        model = DomainCNN(train.channels, train.num_classes, s["width"], s["feature_dim"])
    n, bs = len(train), int(s["batch_size"])
    total = s["epochs"] * math.ceil(n / bs)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1.0 + math.cos(math.pi * min(i, total) / total)))
    epochs = range(s["epochs"])
    if progress:
        from tqdm import tqdm
        epochs = tqdm(epochs, desc=f"training domain extractor on {train.name}", unit="epoch")
    model.train()
    for _ in epochs:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            x = _random_shift(_to_input(train.images[idx]), int(s["max_shift"]), gen)
            _, logits = model(x)
            loss = F.cross_entropy(logits, train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval().requires_grad_(False)


def _head(ds: ImageDataset, n: int) -> ImageDataset:
    """The first n images of a dataset (all of them if it is smaller)."""
    if len(ds) <= n:
        return ds
    labels = None if ds.labels is None else ds.labels[:n]
    return ImageDataset(ds.images[:n], labels, ds.num_classes, ds.name, ds.class_names)


class DomainExtractor:
    """A trained DomainCNN used as a feature extractor: pre-logit features and class logits."""

    def __init__(self, model: DomainCNN, info: dict[str, Any]) -> None:
        self.model = model.eval().requires_grad_(False)
        self.info = info
        self.feature_dim = int(info["settings"]["feature_dim"])
        self.image_shape = tuple(info["image_shape"])
        self.cache_key = f"domain-cnn@{info['key']}"
        self.name = info["name"]

    @property
    def test_accuracy(self) -> float | None:
        """Accuracy on the test split it was evaluated on (None if no test split was given)."""
        test = self.info.get("test")
        return None if test is None else float(test["accuracy"])

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Features (N, feature_dim) and logits (N, classes) of uint8 images shaped like the training data."""
        images = _as_uint8_images(images)
        if tuple(images.shape[1:]) != self.image_shape:
            raise DataError(f"{self.name} was trained on images of shape {self.image_shape}, "
                            f"got {tuple(images.shape[1:])}")
        feats, logits = _forward_batched(self.model, images)
        return feats.double().numpy(), logits.double().numpy()


def _display_name(train: ImageDataset, key: str, test_acc: float | None) -> str:
    base = train.name[:-len(":train")] if train.name.endswith(":train") else train.name
    acc = "no test split" if test_acc is None else f"test acc {test_acc:.1%}"
    return f"domain-cnn:{base}@{key[:8]} ({acc})"


def _load_cached(weights: Path, meta: Path, key: str) -> tuple[DomainCNN, dict[str, Any]] | None:
    """The cached (model, info) for `key`, or None if absent, incomplete or unreadable (then it is rebuilt)."""
    if not (weights.is_file() and meta.is_file()):
        return None
    from safetensors.torch import load_file
    try:
        info = json.loads(meta.read_text())
        if info.get("key") != key or info.get("code_version") != CODE_VERSION:
            return None
        s = info["settings"]
        model = DomainCNN(info["image_shape"][0], info["num_classes"], s["width"], s["feature_dim"])
        model.load_state_dict(load_file(str(weights)))
    except Exception:  # noqa: BLE001 - a damaged cache entry is simply retrained
        return None
    return model, info


def domain_extractor(train: ImageDataset, test: ImageDataset | None = None, cache_dir: str | os.PathLike | None = None,
                     progress: bool = False, **settings: Any) -> DomainExtractor:
    """The domain CNN for `train` (trained once, then loaded from the cache), with its accuracy on `test`."""
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown domain extractor settings {unknown}; known: {sorted(DEFAULT_SETTINGS)}")
    if train.labels is None or train.num_classes is None:
        raise DataError(f"{train.name} has no labels, so no domain classifier can be trained for it; "
                        "use the Inception-v3 extractor instead")
    if min(train.height, train.width) < 4:
        raise DataError(f"the domain extractor needs images of at least 4x4 pixels, got {train.height}x{train.width}")
    if test is not None and (test.shape != train.shape or test.labels is None or test.num_classes != train.num_classes):
        raise DataError(f"test split {test!r} does not match training split {train!r} (shape, labels, classes)")
    s = {**DEFAULT_SETTINGS, **settings}
    data = dataset_hash(train)
    key = _sha({"code_version": CODE_VERSION, "settings": s, "data": data})[:24]
    folder = cache_root(cache_dir) / "domain-extractors"
    weights, meta = folder / f"{key}.safetensors", folder / f"{key}.json"

    cached = _load_cached(weights, meta, key)
    test_hash = dataset_hash(test) if test is not None else None
    if cached is not None:
        model, info = cached
        if test is not None and (info.get("test") or {}).get("data_hash") != test_hash:
            acc = accuracy(model, test)  # same weights, different test split: re-measure (cheap)
            info = {**info, "test": {"name": test.name, "data_hash": test_hash, "accuracy": acc},
                    "name": _display_name(train, key, acc)}
            atomic_write_bytes(meta, json.dumps(info, indent=1).encode())
        return DomainExtractor(model, info)

    from safetensors.torch import save as save_safetensors
    t0 = time.perf_counter()
    model = train_domain_cnn(train, s, progress=progress)
    seconds = time.perf_counter() - t0
    acc = accuracy(model, test) if test is not None else None
    info = {
        "name": _display_name(train, key, acc),
        "key": key,
        "code_version": CODE_VERSION,
        "settings": s,
        "resolved_settings": resolve_settings(s, len(train), min(train.height, train.width)),
        "train": {"name": train.name, "data_hash": data, "n": len(train)},
        "test": None if test is None else {"name": test.name, "data_hash": test_hash, "accuracy": acc},
        "train_accuracy": accuracy(model, _head(train, 5000)),  # a subset: the full set costs ~25 s on MNIST
        "train_seconds": round(seconds, 3),
        "image_shape": list(train.shape),
        "num_classes": train.num_classes,
    }
    # Weights first, JSON last: the JSON's presence (with the matching key) marks a complete entry.
    atomic_write_bytes(weights, save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}))
    atomic_write_bytes(meta, json.dumps(info, indent=1).encode())
    return DomainExtractor(model, info)


# --------------------------------------------------------------------------------------------------------
# Reference features of real data
# --------------------------------------------------------------------------------------------------------

def extractor_key(extractor: FeatureExtractor) -> str:
    """A string identifying the extractor's weights (its cache_key if it has one, else its name)."""
    return str(getattr(extractor, "cache_key", None) or extractor.name)


def reference_features(extractor: FeatureExtractor, dataset: ImageDataset, n: int, seed: int = 0,
                       cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (and logits) of n images drawn without replacement (seeded) from a real dataset, cached."""
    if not 1 <= n <= len(dataset):
        raise DataError(f"asked for {n} reference images but {dataset.name} has {len(dataset)}")
    key = _sha({"extractor": extractor_key(extractor), "data": dataset_hash(dataset), "n": n, "seed": seed})[:24]
    path = cache_root(cache_dir) / "reference-features" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                feats = f["features"]
                logits = f["logits"] if "logits" in f else None
            if feats.shape == (n, extractor.feature_dim):
                return feats, logits
        except (OSError, ValueError, KeyError):
            pass  # damaged entry: recompute and overwrite
    idx = np.random.default_rng(seed).choice(len(dataset), size=n, replace=False)
    feats, logits = extractor(dataset.images[torch.from_numpy(idx)])
    buf = io.BytesIO()
    arrays = {"features": feats} if logits is None else {"features": feats, "logits": logits}
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return feats, logits
