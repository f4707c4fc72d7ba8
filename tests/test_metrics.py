"""FID, KID, k-NN precision/recall and Inception Score: checked against closed forms and direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from diffusionlab.errors import DataError
from diffusionlab.evaluation.metrics import (fid_from_features, frechet_distance, gaussian_stats, inception_score,
                                             kernel_inception_distance, knn_radii, mmd2_unbiased, precision_recall)


# ---------------------------------------------------------------------------------------------- FID

def test_fid_of_a_set_with_itself_is_zero() -> None:
    f = np.random.default_rng(0).normal(size=(500, 16)) @ np.random.default_rng(1).normal(size=(16, 16))
    assert abs(fid_from_features(f, f)) < 1e-6


def test_frechet_distance_commuting_covariances_exact() -> None:
    # Diagonal covariances commute, so (S1 S2)^{1/2} = diag(sqrt(a b)) and
    # d^2 = ||mu1 - mu2||^2 + sum (sqrt(a) - sqrt(b))^2 exactly.
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([1.0, 1.0, 0.5, -1.0])
    a, b = np.array([1.0, 4.0, 0.25, 9.0]), np.array([4.0, 1.0, 1.0, 2.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_frechet_distance_general_covariances_matches_symmetric_formula() -> None:
    # Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}: an independent route through symmetric matrices.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    r1 = scipy.linalg.sqrtm(s1).real
    w = np.linalg.eigvalsh(r1 @ s2 @ r1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(w, 0, None)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_gaussian_samples_approaches_closed_form() -> None:
    rng = np.random.default_rng(0)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.0, -0.5, 0.25])
    l1, l2 = rng.normal(size=(d, d)) * 0.5 + np.eye(d), rng.normal(size=(d, d)) * 0.5 + np.eye(d)
    s1, s2 = l1 @ l1.T, l2 @ l2.T
    exact = frechet_distance(mu1, s1, mu2, s2)
    x = mu1 + rng.normal(size=(n, d)) @ l1.T
    y = mu2 + rng.normal(size=(n, d)) @ l2.T
    # Sampling error of the moments is O(1/sqrt(n)) ~ 0.002 here; allow 2% of the value.
    assert exact > 1.0
    assert fid_from_features(x, y) == pytest.approx(exact, rel=0.02)


def test_gaussian_stats_are_mean_and_unbiased_covariance() -> None:
    f = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    mu, sigma = gaussian_stats(f)
    np.testing.assert_allclose(mu, [1.0, 2.0])
    np.testing.assert_allclose(sigma, [[4.0 / 3.0, 0.0], [0.0, 16.0 / 3.0]])


def test_fid_with_fewer_samples_than_dimensions_is_finite_and_nonnegative() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5  # rank-deficient covariances
    value = fid_from_features(x, y)
    assert np.isfinite(value) and value > 64 * 0.25 * 0.5  # the mean shift alone contributes 64 * 0.25


def test_fid_rejects_bad_input() -> None:
    with pytest.raises(DataError):
        fid_from_features(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(DataError):
        gaussian_stats(np.array([[np.nan, 1.0], [0.0, 1.0]]))


# ---------------------------------------------------------------------------------------------- KID

def _mmd2_direct(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a,b) = (a.b/d + 1)^3, written as explicit double loops (Gretton et al. 2012, eq. 3)."""
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_unbiased_mmd_matches_direct_formula() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.3
    direct = _mmd2_direct(x, y)
    assert mmd2_unbiased(x, y) == pytest.approx(direct, rel=1e-10)
    # One subset covering every row is a permutation of the full sets; MMD^2 is permutation invariant.
    mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=50)
    assert mean == pytest.approx(direct, rel=1e-10) and std == 0.0


def test_kid_identical_distributions_is_zero_within_its_spread() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    mean, std = kernel_inception_distance(x, y, subsets=50, subset_size=500)
    # Unbiased: the expectation is exactly 0; the subset mean is within a few standard errors of 0.
    assert std > 0
    assert abs(mean) < 3 * std / np.sqrt(50) + 1e-4


def test_kid_grows_with_the_shift() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 8))
    small = kernel_inception_distance(x, rng.normal(size=(1000, 8)) + 0.2, subsets=20, subset_size=300)[0]
    large = kernel_inception_distance(x, rng.normal(size=(1000, 8)) + 1.0, subsets=20, subset_size=300)[0]
    assert 0 < small < large


def test_kid_subset_size_is_capped_at_the_smaller_set() -> None:
    rng = np.random.default_rng(3)
    mean, std = kernel_inception_distance(rng.normal(size=(30, 4)), rng.normal(size=(500, 4)), subsets=5,
                                          subset_size=1000)
    assert np.isfinite(mean) and np.isfinite(std)


# ---------------------------------------------------------------------------------------------- precision / recall

def test_knn_radius_excludes_the_point_itself() -> None:
    f = np.array([[0.0], [1.0], [3.0], [7.0]])
    # Nearest OTHER point (k=1): 0->1 (1), 1->0 (1), 3->1 (2), 7->3 (4); squared radii returned.
    np.testing.assert_allclose(knn_radii(f, k=1), [1.0, 1.0, 4.0, 16.0])
    # k=2: 0->{1,3}: 3; 1->{0,3}: 2; 3->{1,0}: 3; 7->{3,1}: 6.
    np.testing.assert_allclose(knn_radii(f, k=2), [9.0, 4.0, 9.0, 36.0])


def test_precision_recall_identical_sets_are_one() -> None:
    f = np.random.default_rng(0).normal(size=(300, 6))
    assert precision_recall(f, f.copy(), k=3) == (1.0, 1.0)


def test_precision_recall_far_apart_sets_are_zero() -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) + 100.0
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)


def test_precision_recall_half_support() -> None:
    # Real: uniform on [0, 2] x [0, 1]; fake: uniform on the left half only.  Every fake is inside the real
    # manifold (precision ~1) but the fakes cover only half of the real samples (recall ~0.5).
    rng = np.random.default_rng(0)
    real = rng.uniform(size=(4000, 2)) * [2.0, 1.0]
    fake = rng.uniform(size=(2000, 2))
    precision, recall = precision_recall(real, fake, k=3)
    assert precision > 0.97
    assert recall == pytest.approx(0.5, abs=0.04)


def test_precision_recall_works_in_chunks() -> None:
    # More rows than one distance chunk (1024): results must not depend on the chunking.
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(2500, 3)), rng.normal(size=(2200, 3)) * 1.5
    p, r = precision_recall(real, fake, k=5)
    dr = ((real[:, None] - real[None]) ** 2).sum(-1)
    np.fill_diagonal(dr, np.inf)
    rad = np.sort(dr, axis=1)[:, 4]
    p_direct = (((fake[:, None] - real[None]) ** 2).sum(-1) <= rad[None]).any(1).mean()
    assert p == pytest.approx(p_direct, abs=1e-12)
    assert 0.0 < r <= 1.0


# ---------------------------------------------------------------------------------------------- Inception Score

def test_inception_score_uniform_predictions_is_one() -> None:
    mean, std = inception_score(np.zeros((100, 10)), splits=5)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_confident_distinct_classes_is_number_of_classes() -> None:
    n = 7
    logits = np.tile(np.eye(n) * 1000.0, (4, 1))  # 4 splits, each holding every class once, one-hot p(y|x)
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(n, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)
    assert inception_score(logits, splits=1)[0] == pytest.approx(n, rel=1e-12)


def test_inception_score_single_class_collapse_is_one() -> None:
    logits = np.zeros((50, 10))
    logits[:, 3] = 1000.0  # confident but all the same class: no diversity
    assert inception_score(logits, splits=5)[0] == pytest.approx(1.0, abs=1e-9)
