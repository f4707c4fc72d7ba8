"""Sample-quality numerics on feature arrays: FID, KID, k-NN precision/recall and the Inception Score.

Everything here works on plain (N, D) float64 feature arrays (or (N, K) logits) and knows nothing about
networks or images: which extractor produced the features is the caller's business (and must be printed
beside every number, docs/maths.md section 10).

  FID         Heusel et al. 2017, "GANs trained by a two time-scale update rule ...", eq. (6).
  KID         Binkowski et al. 2018, "Demystifying MMD GANs", section 4 (unbiased MMD^2, cubic kernel).
  P / R       Kynkaanniemi et al. 2019, "Improved precision and recall metric ...", eqs. (1)-(2).
  IS          Salimans et al. 2016, "Improved techniques for training GANs", section 4.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from scipy.special import log_softmax, logsumexp

from ..errors import DataError

# Rows of the distance matrix computed at once by precision_recall: 1024 x 10,000 float64 = 80 MB.
_CHUNK = 1024


def _as_features(x: np.ndarray, what: str) -> np.ndarray:
    """x as a finite float64 (N, D) array, or a one-line DataError."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{what} must be a 2-D (N, D) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{what} contain NaN or infinite values")
    return a


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of an (N, D) feature array, N >= 2."""
    f = _as_features(features, "features")
    if len(f) < 2:
        raise DataError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm_error(root: np.ndarray, a: np.ndarray) -> float:
    """Relative Frobenius error ||X X - A|| / ||A|| of a matrix square root X of A."""
    scale = max(float(np.linalg.norm(a)), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(root @ root - a)) / scale


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise DataError(f"Gaussian statistics do not match: means {mu1.shape} / {mu2.shape}, "
                        f"covariances {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    # d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).  S1 S2 is not symmetric, but it is similar to
    # S1^{1/2} S2 S1^{1/2} (PSD), so its principal square root exists and has a real non-negative spectrum.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on singular input; we check the result ourselves
        product = s1 @ s2
        covmean = scipy.linalg.sqrtm(product)
        if not np.isfinite(covmean).all() or _sqrtm_error(covmean, product) > 1e-3:
            # Near-singular covariances (fewer samples than dimensions, dead features): the Schur method
            # loses accuracy, so add eps to the diagonals as the reference TF / pytorch-fid code does.
            offset = np.eye(s1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        # Rounding gives a tiny imaginary part; a large one means the square root itself is unreliable.
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > 1e-3:
            raise DataError(f"FID: the covariance product has no reliable real square root (imaginary part "
                            f"{imag:.3g}); use more samples than feature dimensions")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two (N, D) feature sets, each summarised by its mean and covariance."""
    mu1, s1 = gaussian_stats(features1)
    mu2, s2 = gaussian_stats(features2)
    return frechet_distance(mu1, s1, mu2, s2)


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the KID kernel (Binkowski et al. 2018, section 4)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between samples x (m, D) and y (n, D) with the cubic polynomial kernel."""
    # MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i,x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i,y_j) - 2/(mn) sum k(x_i,y_j)
    # (Gretton et al. 2012, eq. 3): the diagonals k(x_i, x_i) are left out, which removes the bias.
    m, n = len(x), len(y)
    kxx, kyy, kxy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    term_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * kxy.mean())


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) over random subsets: unbiased MMD^2 with k(x,y) = (x.y/d + 1)^3 (Binkowski et al. 2018)."""
    f1, f2 = _as_features(features1, "features"), _as_features(features2, "features")
    if f1.shape[1] != f2.shape[1]:
        raise DataError(f"KID: feature dimensions differ ({f1.shape[1]} vs {f2.shape[1]})")
    size = min(subset_size, len(f1), len(f2))
    if size < 2:
        raise DataError(f"KID needs at least 2 samples in each set, got {len(f1)} and {len(f2)}")
    if subsets < 1:
        raise DataError(f"KID needs at least one subset, got subsets={subsets}")
    rng = np.random.default_rng(seed)
    # As in the authors' reference code: each subset draws `size` rows of each set without replacement.
    values = np.array([mmd2_unbiased(f1[rng.choice(len(f1), size, replace=False)],
                                     f2[rng.choice(len(f2), size, replace=False)]) for _ in range(subsets)])
    return float(values.mean()), float(values.std())


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _sq_dists(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)) via ||a||^2 + ||b||^2 - 2 a.b, clamped at 0."""
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T), 0.0)


def knn_radii(features: np.ndarray, k: int = 3) -> np.ndarray:
    """Squared distance from each row to its k-th nearest neighbour among the OTHER rows (self excluded)."""
    f = _as_features(features, "features")
    if not 1 <= k < len(f):
        raise DataError(f"k-NN radii need 1 <= k < number of samples, got k={k} with {len(f)} samples")
    sq = _sq_norms(f)
    radii = np.empty(len(f))
    for start in range(0, len(f), _CHUNK):
        d = _sq_dists(f[start:start + _CHUNK], sq[start:start + _CHUNK], f, sq)
        # A point is not its own neighbour: mask the diagonal (rather than skipping the smallest value,
        # which would wrongly discard a genuine duplicate at distance 0 instead of the point itself).
        rows = np.arange(d.shape[0])
        d[rows, start + rows] = np.inf
        radii[start:start + _CHUNK] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def _coverage(queries: np.ndarray, support: np.ndarray, support_radii: np.ndarray) -> float:
    """Fraction of query rows inside the union of balls B(support_i, radius_i) (radii squared)."""
    s_sq, q_sq = _sq_norms(support), _sq_norms(queries)
    inside = 0
    for start in range(0, len(queries), _CHUNK):
        d = _sq_dists(queries[start:start + _CHUNK], q_sq[start:start + _CHUNK], support, s_sq)
        inside += int((d <= support_radii[None, :]).any(axis=1).sum())
    return inside / len(queries)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall of fake vs real features (Kynkaanniemi et al. 2019, eqs. 1-2)."""
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"precision/recall: feature dimensions differ ({real.shape[1]} vs {fake.shape[1]})")
    # The real manifold is the union of balls around real samples with radius = distance to their k-th
    # nearest real neighbour; precision = share of fakes inside it.  Recall swaps the roles.
    precision = _coverage(fake, real, knn_radii(real, k))
    recall = _coverage(real, fake, knn_radii(fake, k))
    return precision, recall


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) from class logits (Salimans et al. 2016): (mean, std) over splits."""
    z = _as_features(logits, "logits")
    if not 1 <= splits <= len(z):
        raise DataError(f"inception score needs 1 <= splits <= number of samples, got {splits} for {len(z)}")
    log_p = log_softmax(z, axis=1)  # log p(y|x), computed stably (softmax inside)
    scores = []
    for part in np.array_split(log_p, splits):
        # log p(y) = log mean_x p(y|x), via logsumexp so a class no sample predicts stays finite.
        log_py = logsumexp(part, axis=0) - np.log(len(part))
        kl = (np.exp(part) * (part - log_py[None, :])).sum(axis=1)  # KL(p(y|x) || p(y)) per sample
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
