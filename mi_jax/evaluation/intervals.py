"""Confidence bounds for the claims ledger: Student-t over seeds, Wilson for counted rates,
Hanley-McNeil for an AUROC. Plain float64 NumPy / math (no SciPy); every bound is one-sided at
97.5 % (two-sided 95 %)."""

from __future__ import annotations

import math

import numpy as np

Z_975 = 1.959963984540054  # the standard normal's 97.5 % quantile

# Student-t 97.5 % quantiles for 1..30 degrees of freedom (tests check each against a float64
# integration of the t density); beyond 30 the Cornish-Fisher series is within 1e-4.
_T_975 = (12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243,
          2.3060041, 2.2621572, 2.2281389, 2.2009852, 2.1788128, 2.1603687, 2.1447867, 2.1314495,
          2.1199053, 2.1098155, 2.1009220, 2.0930241, 2.0859634, 2.0796138, 2.0738731, 2.0686576,
          2.0638986, 2.0595386, 2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725)


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with `df` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"df={df}: must be >= 1")
    if df <= len(_T_975):
        return _T_975[df - 1]
    z, v = Z_975, float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


def t_interval(values) -> tuple:
    """(mean, lo, hi): the mean of `values` and its 95 % Student-t interval; (mean, nan, nan)
    for fewer than two values (no spread to measure)."""
    v = np.asarray(values, np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return m, m - half, m + half


def wilson(successes: float, trials: float) -> tuple:
    """The 95 % Wilson score interval (lo, hi) of a proportion successes / trials; (nan, nan)
    with no trials. Counts may be non-integer (a rate times a sample count rounds to them)."""
    if trials <= 0:
        return float("nan"), float("nan")
    z2 = Z_975**2
    p = successes / trials
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z_975 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials**2)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference(a: tuple, b: tuple) -> tuple:
    """The interval of x - y from intervals a of x and b of y (each side conservative: the union
    bound of two 97.5 % bounds holds at >= 95 %)."""
    return a[0] - b[1], a[1] - b[0]


def auroc_se(auc: float, num_pos: int, num_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC from its positive / negative counts."""
    if num_pos < 1 or num_neg < 1 or not math.isfinite(auc):
        return float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (num_pos - 1) * (q1 - auc**2)
           + (num_neg - 1) * (q2 - auc**2)) / (num_pos * num_neg)
    return math.sqrt(max(var, 0.0))


def mean_auroc_interval(aucs, num_pos, num_neg) -> tuple:
    """The counting interval of the mean of several models' AUROCs: mean +- z * sqrt(sum se^2)/n,
    each se from that model's counts (Hanley-McNeil), clipped to [0, 1]."""
    aucs = [float(a) for a in aucs]
    ses = [auroc_se(a, int(round(p)), int(round(n))) for a, p, n in zip(aucs, num_pos, num_neg)]
    if not aucs or not all(math.isfinite(s) for s in ses):
        return float("nan"), float("nan")
    m = float(np.mean(aucs))
    half = Z_975 * math.sqrt(sum(s * s for s in ses)) / len(aucs)
    return max(0.0, m - half), min(1.0, m + half)
