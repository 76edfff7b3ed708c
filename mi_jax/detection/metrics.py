"""Scoring a detector: ROC, AUROC, operating points, and filters that keep the lowest scores.

Convention: a higher score means "more likely hallucinated" (the trajectory variance is such a
score); `positive` marks the true hallucinations. Host-side NumPy: these run on results, not in
jitted code.
"""

from __future__ import annotations

import numpy as np

from mi_jax.validation import check, check_float, check_int


def _prepare(scores, positive):
    scores = np.asarray(scores, np.float64)
    # (models, n) arrays would be pooled into one ranking across models: refuse, do not ravel.
    check(scores.ndim == 1, "scores", scores.shape, "must be one model's scores (n,); for a "
          "stack of models, call this per model")
    positive = np.asarray(positive, bool)
    check(scores.shape == positive.shape, "positive", positive.shape,
          f"must have the shape of scores {scores.shape}")
    check(bool(np.all(np.isfinite(scores))), "scores", "non-finite", "must be finite")
    return scores, positive


def average_ranks(values) -> np.ndarray:
    """1-based ranks of a 1D array, tied values sharing their average rank."""
    values = np.asarray(values, np.float64).ravel()
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends - 1) / 2.0 + 1.0, ends - starts)
    return ranks


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two equal-length arrays (average ranks for ties); NaN when
    either is constant."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    check(a.shape == b.shape, "b", b.shape, f"must have the shape of a {a.shape}")
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt(np.sum(ra ** 2) * np.sum(rb ** 2))
    return float(np.sum(ra * rb) / denom) if denom > 0 else float("nan")


def auroc(scores, positive) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2 (Mann-Whitney).

    NaN when either class is empty.
    """
    scores, positive = _prepare(scores, positive)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def stratified_auroc(scores, positive, strata) -> float:
    """AUROC over the (positive, negative) pairs of the same stratum only: P(score of a positive >
    score of a negative with the same stratum value), ties 1/2. With strata = a confounder (e.g.
    the number of shapes in an image), what a score ranks beyond that confounder; one stratum
    gives `auroc`. NaN when no stratum holds both classes."""
    scores, positive = _prepare(scores, positive)
    strata = np.asarray(strata).ravel()
    check(strata.shape == scores.shape, "strata", strata.shape,
          f"must have the shape of scores {scores.shape}")
    concordant, pairs = 0.0, 0
    for value in np.unique(strata):
        sel = strata == value
        n_pos, n_neg = int(positive[sel].sum()), int((~positive[sel]).sum())
        if n_pos and n_neg:
            concordant += auroc(scores[sel], positive[sel]) * n_pos * n_neg
            pairs += n_pos * n_neg
    return float(concordant / pairs) if pairs else float("nan")


def roc_curve(scores, positive):
    """(false-positive rate, true-positive rate, thresholds), flagging score >= threshold."""
    scores, positive = _prepare(scores, positive)
    order = np.argsort(-scores, kind="mergesort")
    s, p = scores[order], positive[order]
    distinct = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(p)[distinct]
    fp = np.cumsum(~p)[distinct]
    tpr = np.r_[0.0, tp / max(p.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~p).sum(), 1)]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def removed_at_kept(scores, positive, kept: float = 0.96) -> float:
    """Fraction of positives removed when the threshold keeps `kept` of the negatives.

    The threshold is the `kept` quantile of the negatives' scores; samples above it are removed.
    """
    check_float(kept, "kept", low=0.0, high=1.0)
    scores, positive = _prepare(scores, positive)
    if positive.sum() == 0 or (~positive).sum() == 0:
        return float("nan")
    threshold = np.quantile(scores[~positive], kept, method="higher")
    return float(np.mean(scores[positive] > threshold))


def kept_at_removed(scores, positive, removed: float = 0.95) -> float:
    """Fraction of negatives kept when the threshold removes `removed` of the positives."""
    check_float(removed, "removed", low=0.0, high=1.0)
    scores, positive = _prepare(scores, positive)
    if positive.sum() == 0 or (~positive).sum() == 0:
        return float("nan")
    threshold = np.quantile(scores[positive], 1.0 - removed, method="lower")
    return float(np.mean(scores[~positive] < threshold))


def detection_summary(scores, positive) -> dict:
    """AUROC and the paper's two operating points (96% of in-support kept / 95% removed)."""
    return {"auroc": auroc(scores, positive),
            "removed_at_96_kept": removed_at_kept(scores, positive, 0.96),
            "kept_at_95_removed": kept_at_removed(scores, positive, 0.95),
            "num_positive": int(np.sum(positive)), "num": int(np.size(positive))}


# ----------------------------------------------------------------------------------------
# Filters: which samples to keep (indices, lowest score first where it matters)
# ----------------------------------------------------------------------------------------


def keep_lowest(scores, count: int) -> np.ndarray:
    """Indices of the `count` lowest scores (the official recursive protocol's filter)."""
    scores = np.asarray(scores).ravel()
    count = check_int(count, "count", low=0, high=len(scores))
    return np.sort(np.argsort(scores, kind="stable")[:count])


def keep_fraction(scores, fraction: float) -> np.ndarray:
    """Indices of the lowest `fraction` of the scores."""
    check_float(fraction, "fraction", low=0.0, high=1.0)
    return keep_lowest(scores, int(round(fraction * np.size(scores))))


def calibrated_threshold(reference_scores, keep: float = 0.96) -> float:
    """A threshold keeping `keep` of reference samples, e.g. the exact-score sampler's in-support
    samples: scores above it are flagged."""
    check_float(keep, "keep", low=0.0, high=1.0)
    reference_scores = np.asarray(reference_scores, np.float64).ravel()
    check(reference_scores.size > 0, "reference_scores", reference_scores.size, "must not be empty")
    return float(np.quantile(reference_scores, keep, method="higher"))


def keep_below(scores, threshold: float) -> np.ndarray:
    """Indices of scores <= threshold."""
    return np.flatnonzero(np.asarray(scores).ravel() <= threshold)


def by_category(scores, codes, names) -> dict:
    """Detection of each kind of positive separately: codes (n,) int, -1 for a negative and i for
    a positive of kind names[i]. Per kind, `detection_summary` of that kind against the negatives
    (other kinds left out); 'all': every positive against the negatives."""
    scores = np.asarray(scores, np.float64).ravel()
    codes = np.asarray(codes).ravel()
    check(scores.shape == codes.shape, "codes", codes.shape,
          f"must have the shape of scores {scores.shape}")
    negative = codes < 0
    out = {}
    for i, name in enumerate(names):
        sel = negative | (codes == i)
        out[name] = detection_summary(scores[sel], codes[sel] == i)
    out["all"] = detection_summary(scores, ~negative)
    return out
