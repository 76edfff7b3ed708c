"""One detector interface and one evaluation, for comparing hallucination detectors.

A `Detector` is a per-sample score (higher = more likely hallucinated) computed from one sampling
pass: it names the sampler observers it needs (merged over detectors, so every score comes from
the same trajectories) and, if any, an after-sampling computation (`after="flipd"`). The
standard set (`standard_detectors`): the x0_hat trajectory variance over each window (the
paper's, window 0 the official one), the x_t and eps_hat variances and the final |eps_hat| over
the official window, the curvature score (Hutchinson trace of d eps_hat / d x_t,
`detectors.curvature_score`), FLIPD, and a random floor.

`evaluate_task` scores one model's samples on one task (positives against negatives, e.g.
bridges against in-support samples) on a held-out half: the fitted detectors -- the best
variance window and a logistic fusion of the others -- are chosen / fitted on the other half,
so no number reported is fitted on the samples it is measured on.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from mi_jax.detection import metrics as dm
from mi_jax.detection import registry
from mi_jax.validation import check, check_float

RANDOM, BEST_WINDOW, FUSED = "random", "var_x0 best window", "fused (logistic)"
WINDOW_PREFIX = "var_x0 "  # the per-window x0_hat variances ('var_x0 lo:hi')
# Scores the logistic fusion combines (when present; registry names): the x0_hat variance at the window best on
# the fit half (BEST_WINDOW, resolved in `evaluate_task`), the curvature, the final |eps_hat|
# and FLIPD -- one per kind of signal, so the fit has few weights.
FUSION_INPUTS = (BEST_WINDOW, "curvature", "eps_norm_last", "flipd")


@dataclasses.dataclass(frozen=True)
class ReportedDetector:
    """A registered detector (`registry`) as the benchmark reports it: `name` (a windowed one's
    carries its window, 'var_x0 0:10'), the registry entry `source`, the window index and the
    observers it reads from the sampling pass (shared objects across one pass)."""

    name: str
    observers: Mapping
    source: str
    window: int = registry.OFFICIAL


def window_name(window) -> str:
    return registry.window_name("var_x0", window)


def standard_detectors(windows: Sequence, trace_window, *, probes: int = 1, regions=None,
                       clock: str = "train", seed: int = 0) -> list:
    """The benchmark's detectors: every registered one reported in the benchmark
    (`Detector.in_benchmark`), a per-window one at every window. windows: variance windows, the
    first the official one; trace_window: the curvature score's window; regions: optional
    (R, *shape) masks, enabling the detectors that need them."""
    windows = [tuple(int(v) for v in w) for w in windows]
    check(len(windows) >= 1, "windows", windows, "must hold at least one window")
    setup = registry.Setup(tuple(windows), clock, tuple(trace_window), probes, seed, regions)
    names = [n for n in registry.names() if registry.get(n).in_benchmark
             and (regions is not None or not registry.get(n).needs_regions)]
    shared = registry.observers(names, setup)  # one object per observer name
    dets = []
    for name in names:
        entry = registry.get(name)
        own = {k: shared[k] for k in registry.own_observers(name, setup)}
        if entry.per_window:
            dets += [ReportedDetector(registry.window_name(name, w), own, name, i)
                     for i, w in enumerate(windows)]
        elif entry.needs_regions:
            dets.append(ReportedDetector(registry.window_name(name, windows[0]), own, name))
        else:
            dets.append(ReportedDetector(name, own, name))
    return dets


def merged_observers(detectors: Sequence[ReportedDetector]) -> dict:
    """The one observer set a sampling pass needs for every detector (same name = same
    observer: refused if two detectors name different observers alike)."""
    out: dict = {}
    for d in detectors:
        for name, o in d.observers.items():
            check(out.setdefault(name, o) is o, "observers", name,
                  "is needed by two detectors as different observers")
    return out


model_slice = registry.model_slice


def score_all(detectors: Sequence[ReportedDetector], observed: dict, after: dict, n: int,
              rng_seed: int = 0) -> dict:
    """{detector name: (n,) float64} for one model: post-hoc ones from `after` ({registry name:
    (n,)}, `registry.post_hoc_scores`), the others from the observer outputs; `rng_seed` seeds
    the random floor."""
    rng = np.random.default_rng(rng_seed)
    out = {}
    for d in detectors:
        if registry.is_post_hoc(d.source):
            out[d.name] = np.asarray(after[d.source], np.float64)
            check(out[d.name].shape == (n,), "detector", d.name,
                  f"gave shape {out[d.name].shape}, not ({n},)")
        else:
            out[d.name] = np.asarray(registry.score(d.source, observed,
                                                    registry.Context(n, d.window, rng)), np.float64)
    return out


def fit_split(n: int, seed: int, fraction: float = 0.5) -> np.ndarray:
    """A boolean mask of the samples the fitted detectors are fitted on (the rest: test)."""
    check_float(fraction, "fit_fraction", low=0.0, high=1.0, low_open=True)
    check(fraction < 1.0, "fit_fraction", fraction, "must leave samples to test on (< 1)")
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(seed).permutation(n)[:int(round(fraction * n))]] = True
    return mask


def _features(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Scores as fusion inputs: log of the non-negative, heavy-tailed ones (variances, norms,
    the curvature), FLIPD (signed) as it is; non-finite values clipped to the finite range."""
    out = []
    for c in columns:
        c = np.asarray(c, np.float64)
        finite = c[np.isfinite(c)]
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
        c = np.clip(np.nan_to_num(c, nan=hi, posinf=hi, neginf=lo), lo, hi)
        out.append(np.log(np.maximum(c, 1e-30)) if lo >= 0 else c)
    return np.stack(out, axis=1)


def fit_logistic(features: np.ndarray, positive: np.ndarray, l2: float = 1e-2,
                 iterations: int = 50) -> tuple:
    """L2-regularised, class-balanced logistic regression by Newton's method (float64).
    Returns (centre, scale, weights, bias): score = ((f - centre) / scale) @ weights + bias."""
    f = np.asarray(features, np.float64)
    y = np.asarray(positive, np.float64)
    check(0 < y.sum() < len(y), "positive", int(y.sum()), "needs both classes to fit")
    centre = np.median(f, axis=0)
    scale = np.median(np.abs(f - centre), axis=0)
    scale = np.where(scale > 0, scale, np.maximum(f.std(axis=0), 1e-12))
    z = np.concatenate([(f - centre) / scale, np.ones((len(f), 1))], axis=1)
    w_class = np.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean()))  # balanced classes
    beta = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2 * len(f))
    reg[-1] = 0.0  # the bias is not penalised
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ beta, -60, 60)))
        grad = z.T @ (w_class * (p - y)) + reg * beta
        hess = (z * (w_class * p * (1 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return centre, scale, beta[:-1], beta[-1]


def logistic_score(features: np.ndarray, fit: tuple) -> np.ndarray:
    centre, scale, weights, bias = fit
    return ((np.asarray(features, np.float64) - centre) / scale) @ weights + bias


def _score_columns(scores: Mapping, names: Sequence[str], n: int | None = None) -> list:
    missing = [name for name in names if name not in scores]
    check(not missing, "scores", sorted(scores), f"lacks the detector(s) {', '.join(missing)}")
    columns = [np.asarray(scores[name], np.float64) for name in names]
    n = columns[0].shape[0] if n is None else n
    for name, c in zip(names, columns):
        check(c.shape == (n,), f"scores[{name!r}]", c.shape, f"must be one model's ({n},) scores")
    return columns


@dataclasses.dataclass(frozen=True)
class FusedDetector:
    """A logistic fusion of several detectors' scores (`fit_fused_detector`): `score(scores)`
    gives the fused score (higher = more likely hallucinated) of any samples scored by the same
    detectors. inputs: the detector names, in the order of `weights`."""

    inputs: tuple
    centre: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def score(self, scores: Mapping) -> np.ndarray:
        """The fused score (n,) from {detector name: (n,) scores} holding every input."""
        columns = _score_columns(scores, self.inputs)
        return logistic_score(_features(columns),
                              (self.centre, self.scale, self.weights, self.bias))


def fit_fused_detector(scores: Mapping, positive, inputs: Sequence[str] | None = None,
                       fit_mask=None, l2: float = 1e-2) -> FusedDetector:
    """Fit a logistic fusion of detectors on labelled samples, to score others with `.score`.
    scores: {detector name: (n,)}; positive: (n,) bool; inputs: the detectors to fuse (default:
    every one in `scores` but the random floor); fit_mask: (n,) bool, the held-out split to fit
    on (default: all n; `fit_split` makes one), which needs both classes. Scores are
    log-transformed where non-negative (variances, norms) first."""
    names = [n for n in scores if n != RANDOM] if inputs is None else list(inputs)
    check(len(names) >= 1, "inputs", names, "must name at least one detector")
    positive = np.asarray(positive, bool)
    check(positive.ndim == 1, "positive", positive.shape, "must be one model's (n,) labels")
    columns = _score_columns(scores, names, positive.shape[0])
    rows = np.ones(positive.shape, bool) if fit_mask is None else np.asarray(fit_mask, bool)
    check(rows.shape == positive.shape, "fit_mask", rows.shape,
          f"must have the shape of positive {positive.shape}")
    centre, scale, weights, bias = fit_logistic(_features(columns)[rows], positive[rows], l2)
    return FusedDetector(tuple(names), centre, scale, weights, float(bias))


def evaluate_task(scores: dict, positive: np.ndarray, fit_mask: np.ndarray,
                  fusion_inputs: Sequence[str] = ()) -> dict:
    """Detection of one task on the test half (~fit_mask), per detector: `detection_summary`.

    scores: {name: (n,)} over the task's samples (positives and negatives only); the best
    x0_hat window (by AUROC on the fit half) and the logistic fusion of `fusion_inputs`
    (fitted on the fit half; the name BEST_WINDOW stands for that chosen window) are added.
    Needs a positive and a negative in each half, else the fitted detectors are left out."""
    positive = np.asarray(positive, bool)
    test = ~fit_mask
    big = np.finfo(np.float64).max

    def summary(s, rows):
        return dm.detection_summary(np.nan_to_num(s[rows], nan=big, posinf=big), positive[rows])

    out = {name: summary(s, test) for name, s in scores.items()}
    both = all(0 < positive[h].sum() < h.sum() for h in (fit_mask, test))
    if not both:
        return out
    windows = [n for n in scores if n.startswith(WINDOW_PREFIX) and ":" in n.split()[-1]]
    best = None
    if windows:
        fit_auroc = [summary(scores[n], fit_mask)["auroc"] for n in windows]
        best = windows[int(np.nanargmax(fit_auroc))]
        out[BEST_WINDOW] = {**out[best], "window": best}
    fusion_inputs = [best if n == BEST_WINDOW else n for n in fusion_inputs
                     if n != BEST_WINDOW or best is not None]
    if fusion_inputs:
        fused = fit_fused_detector(scores, positive, fusion_inputs, fit_mask)
        out[FUSED] = {**summary(fused.score(scores), test),
                      "inputs": list(fusion_inputs), "weights": fused.weights.tolist()}
    return out


def fusion_inputs(names: Sequence[str]) -> list:
    """The fusion's inputs among the detectors present (`FUSION_INPUTS`; BEST_WINDOW is kept
    when any variance window is present and resolved per task by `evaluate_task`)."""
    for name in FUSION_INPUTS:
        if name != BEST_WINDOW:
            registry.get(name)  # a registry name, or one clear error
    has_window = any(n.startswith(WINDOW_PREFIX) for n in names)
    return [n for n in FUSION_INPUTS if n in names or (n == BEST_WINDOW and has_window)]


__all__ = ["ReportedDetector", "standard_detectors", "merged_observers", "model_slice", "score_all",
           "fit_split", "fit_logistic", "logistic_score", "evaluate_task", "fusion_inputs",
           "FusedDetector", "fit_fused_detector",
           "window_name", "RANDOM", "BEST_WINDOW", "FUSED"]
