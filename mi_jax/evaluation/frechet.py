"""Frechet distance between Gaussians fitted to two feature sets, in float64 NumPy.

FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2). The matrix square roots use symmetric
eigendecompositions (no SciPy): S1^1/2 S2 S1^1/2 is symmetric positive semi-definite, and its
square root has the same trace as (S1 S2)^1/2.
"""

from __future__ import annotations

import numpy as np

from mi_jax.validation import check


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of (n, d) features, in float64 (n >= 2)."""
    f = np.asarray(features, np.float64)
    check(f.ndim == 2 and f.shape[0] >= 2, "features", f.shape, "must be (n >= 2, d)")
    check(bool(np.all(np.isfinite(f))), "features", "values", "must be finite")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein) distance squared between N(mu1, cov1) and N(mu2, cov2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = mu1.shape[0]
    check(mu2.shape == (d,) and cov1.shape == (d, d) and cov2.shape == (d, d), "stats",
          (mu1.shape, cov1.shape, mu2.shape, cov2.shape), "must be (d,), (d, d), (d,), (d, d)")
    root1 = _sqrt_psd(cov1)
    middle = np.linalg.eigvalsh((root1 @ cov2 @ root1 + (root1 @ cov2 @ root1).T) / 2)
    cross = float(np.sum(np.sqrt(np.clip(middle, 0.0, None))))
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)
    return max(value, 0.0)


def frechet_between(features_a, features_b) -> float:
    """Frechet distance between two feature sets (n, d)."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))
