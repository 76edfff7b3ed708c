"""Histogram KL between a reference sample and a generated one (the official 2D evaluation logs a
discrete KL of 2D histograms: bins = floor(sqrt(n / 10)) per axis over the data range +-5 %)."""

from __future__ import annotations

import numpy as np

from mi_jax.validation import check

FLOOR = 1e-10  # empty generated bins: probability floored, so a missing mode costs a finite KL


def official_bins(n: int) -> int:
    return max(1, int(np.floor(np.sqrt(n / 10))))


def histogram_kl(reference, generated, bins: int | None = None, margin: float = 0.05) -> float:
    """KL(reference || generated) of D-dimensional histograms (n, D), in nats.

    Bins: `bins` per axis (default: the official floor(sqrt(n_ref / 10))), over the reference's
    range widened by `margin` on each side; generated samples outside that range or non-finite are
    dropped from the histogram but still count in its normalisation (they are mass the reference
    does not have).
    """
    ref = np.asarray(reference, np.float64)
    gen = np.asarray(generated, np.float64)
    check(ref.ndim == 2 and gen.ndim == 2 and ref.shape[1] == gen.shape[1], "samples",
          (ref.shape, gen.shape), "must be (n, D) and (m, D) with the same D")
    check(len(ref) > 0 and len(gen) > 0, "samples", (len(ref), len(gen)), "must not be empty")
    bins = official_bins(len(ref)) if bins is None else bins
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    pad = margin * np.maximum(hi - lo, 1e-12)
    edges = [np.linspace(a - p, b + p, bins + 1) for a, b, p in zip(lo, hi, pad)]
    p, _ = np.histogramdd(ref, bins=edges)
    gen = gen[np.all(np.isfinite(gen), axis=1)]
    q, _ = np.histogramdd(gen, bins=edges)
    p = p.ravel() / len(ref)
    q = np.maximum(q.ravel() / len(generated), FLOOR)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))
