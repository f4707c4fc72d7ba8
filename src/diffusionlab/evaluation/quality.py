"""Sample-quality report: FID, KID, precision/recall and Inception Score of generated images vs real ones.

Every report names its feature extractor, and `real_floor` gives the same report for real training images
against real test images: the value a perfect generator would get with this extractor and sample size
(FID is biased upwards at finite n), to be printed beside every generated-sample number.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ..data.dataset import ImageDataset
from ..errors import DataError
from .extractors import FeatureExtractor, reference_features
from .metrics import fid_from_features, inception_score, kernel_inception_distance, precision_recall


def report_from_features(name: str, fake: np.ndarray, fake_logits: np.ndarray | None, real: np.ndarray,
                         k: int = 3, kid_subsets: int = 100, kid_subset_size: int = 1000,
                         is_splits: int = 10, seed: int = 0) -> dict[str, Any]:
    """The quality report for precomputed features of generated (fake) and real images."""
    if len(fake) < 2 or len(real) < 2:
        raise DataError(f"a quality report needs at least 2 generated and 2 real images, "
                        f"got {len(fake)} and {len(real)}")
    # Subsets of at most half of each set: a subset as large as the set would be the same set every
    # draw, and the reported spread would be a meaningless 0.
    size = min(kid_subset_size, max(2, min(len(fake), len(real)) // 2))
    kid_mean, kid_std = kernel_inception_distance(fake, real, subsets=kid_subsets, subset_size=size, seed=seed)
    precision, recall = precision_recall(real, fake, k=k)
    score = None
    if fake_logits is not None:
        # IS is a property of the generated set alone: confident and diverse class predictions.
        score = inception_score(fake_logits, splits=min(is_splits, len(fake_logits)))
    return {
        "extractor": name,
        "n_fake": int(len(fake)),
        "n_real": int(len(real)),
        "fid": fid_from_features(fake, real),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": size,
        "precision": precision,
        "recall": recall,
        "k": k,
        "inception_score": score,
    }


def quality_report(extractor: FeatureExtractor, fake_images_uint8: torch.Tensor | np.ndarray,
                   real_ref: tuple[np.ndarray, np.ndarray | None], k: int = 3,
                   kid_subsets: int = 100) -> dict[str, Any]:
    """FID, KID, precision/recall (k-NN) and IS of generated uint8 images against real reference features."""
    fake, fake_logits = extractor(fake_images_uint8)
    real, _ = real_ref
    return report_from_features(extractor.name, fake, fake_logits, np.asarray(real, np.float64), k=k,
                                kid_subsets=kid_subsets)


def real_floor(extractor: FeatureExtractor, train_ds: ImageDataset, test_ds: ImageDataset, n: int, seed: int = 0,
               cache_dir: str | os.PathLike | None = None, k: int = 3, kid_subsets: int = 100) -> dict[str, Any]:
    """The same report for n real TRAIN images (as 'generated') against n real TEST images: the real-data floor."""
    train_feats, train_logits = reference_features(extractor, train_ds, n, seed, cache_dir)
    test_feats, _ = reference_features(extractor, test_ds, n, seed, cache_dir)
    report = report_from_features(extractor.name, train_feats, train_logits, test_feats, k=k, kid_subsets=kid_subsets)
    report["floor"] = f"{n} real images of {train_ds.name} vs {n} of {test_ds.name}"
    return report


def summary(r: dict[str, Any]) -> str:
    """One line of a quality report: FID, KID, precision, recall (and IS when there is one)."""
    is_ = f" | IS {r['inception_score'][0]:.2f} ± {r['inception_score'][1]:.2f}" if r.get("inception_score") else ""
    return (f"FID {r['fid']:.3f} | KID {r['kid_mean']:.4f} ± {r['kid_std']:.4f} | precision {r['precision']:.3f} | "
            f"recall {r['recall']:.3f}{is_}")


def describe(how: str, q: dict[str, Any], split: str, k: int) -> str:
    """The lines `evaluate --fid` prints: what was measured, the metrics, the real-data floor, the extractor."""
    return (f"sample quality of {how}\n  {summary(q)}\n  real-data floor (train vs {split}): {summary(q['floor'])}\n"
            f"  [extractor: {q['extractor']}; {q['n_fake']} samples vs {q['n_real']} {split} images; k = {k}]")
