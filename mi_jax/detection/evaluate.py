"""Evaluating trajectory statistics as hallucination detectors on trained mixture models.

`evaluate_models(models, config)` draws fresh samples from every model of a trained stack (one
pass keeps the x0_hat variance over each window, the x_t / eps_hat variances, the final
|eps_hat| and the pre-emptive flag), adds a FLIPD score and a random floor, and reports per
configuration (mean +- std over seeds): AUROC and the paper's operating points per detector and
window, three filters (kept fraction, kept count, threshold calibrated on the exact-score
sampler) and the compute pre-emptive stopping saves. Labels: hallucinated = outside every mode's
k-sigma ball (or non-finite); per window also bridges (`support.classify`) against in-support
samples, blur left out. `headline(results)` condenses several evaluations for a summary.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import sweeps
from mi_jax.data import support
from mi_jax.detection import detectors
from mi_jax.detection import metrics as dm
from mi_jax.sampling.observers import paper_observers
from mi_jax.sampling.sampler import print_progress
from mi_jax.validation import check, check_float, check_int

DETECTORS = ("var_x0", "var_xt", "var_eps", "eps_norm_last", "flipd", "random")


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
    """What `evaluate_models` measures. windows: (lo, hi) timestep windows, the first compared
    across detectors ((0, 10) = the official filter); k: in-support radius in mode stds; t0,
    probes: FLIPD's timestep and Hutchinson probes; keep: fraction kept by the fraction filter
    and by the calibrated threshold; oracle_seed / rng_seed: the exact-score calibration
    sampler's and the random floor's seeds."""

    num_samples: int
    chunk_size: int
    windows: tuple = ((0, 10),)
    k: float = support.DEFAULT_K
    t0: int = 5
    probes: int = 4
    keep: float = 0.96
    oracle_seed: int = 10_000
    rng_seed: int = 0

    def __post_init__(self):
        check_int(self.num_samples, "num_samples", low=2)
        check_int(self.chunk_size, "chunk_size", low=1)
        check(len(self.windows) >= 1, "windows", self.windows, "must hold at least one window")
        check_float(self.k, "k", low=0.0, low_open=True)
        check_int(self.t0, "t0", low=0)
        check_int(self.probes, "probes", low=1)
        check_float(self.keep, "keep", low=0.0, high=1.0, low_open=True)


def summarise_seeds(rows: list) -> dict:
    """Per key of the rows (one per seed): per-seed values and their mean/std over the finite ones."""
    out = {}
    for key in rows[0]:
        vals = np.asarray([r[key] for r in rows], np.float64)
        ok = vals[np.isfinite(vals)]
        out[key] = {"per_seed": vals.tolist(), **(sweeps.seed_summary(ok) if len(ok) else
                                                 {"mean": float("nan"), "std": float("nan")})}
    return out


def evaluate_models(models: "mixture_models.TrainedModels",
                    config: DetectionConfig) -> tuple[dict, dict]:
    """All detection numbers for a trained stack of mixture models (`mixture_models.load_models`).

    Returns (results, arrays): results {"windows", "configs": {name: per-configuration
    summaries}}; arrays: per-sample labels ("positive"), scores and window variances, for
    figures and `arrays.npz`."""
    grid, schedule, network = models.grid, models.schedule, models.network
    dim = grid.configs[0].mixture.dim
    mixtures = grid.mixtures()
    windows = [tuple(w) for w in config.windows]
    for w in windows:
        check(0 <= w[0] < w[1] <= schedule.num_steps, "windows", w,
              f"must lie inside [0, T={schedule.num_steps})")
    print(f"[detection] {grid.num_models} models, {config.num_samples} samples each", flush=True)

    # Calibration: the exact-score sampler's in-support samples give each configuration's threshold.
    oracle = sweeps.sample_oracle([c.mixture for c in grid.configs], schedule, config.oracle_seed,
                                  config.num_samples, observers=paper_observers(windows),
                                  chunk_size=config.chunk_size, progress=print_progress("oracle"))
    cal = []
    for c, conf in enumerate(grid.configs):
        inside = np.asarray(support.in_support(oracle.x[c], conf.mixture, config.k))
        cal.append(dm.calibrated_threshold(oracle.hal[c][inside], config.keep))
    thresholds = np.asarray([cal[c] for c in grid.config_index])

    observers = paper_observers(windows, track=("x0", "xt", "eps"), flag_threshold=thresholds)
    res = sweeps.sample_grid(network, models.params, schedule, grid, config.num_samples, (dim,),
                             observers=observers, chunk_size=config.chunk_size,
                             progress=print_progress("sample"))
    hal_windows = res.observed["hal"].var  # (M, W, n)
    finite = np.all(np.isfinite(res.x), axis=-1)
    x_safe = np.where(finite[..., None], res.x, 0.0)
    inside = np.asarray(jax.vmap(support.in_support, (0, 0, None))(jnp.asarray(x_safe), mixtures,
                                                                      config.k))
    positive = ~(inside & finite)
    scores = detectors.trajectory_scores(res)
    lid = jax.jit(jax.vmap(lambda p, x, k: detectors.flipd(network.eps_fn(p), schedule, x,
                                                             config.t0, k, config.probes)))
    scores["flipd"] = np.asarray(lid(models.params, jnp.asarray(x_safe),
                                     jax.random.split(jax.random.key(config.rng_seed), grid.num_models)))
    scores["random"] = np.random.default_rng(config.rng_seed).random(positive.shape)
    big = np.finfo(np.float32).max

    per_model = []
    for m in range(grid.num_models):
        p = positive[m]
        row = {"detectors": {d: dm.detection_summary(np.nan_to_num(scores[d][m], posinf=big), p)
                             for d in DETECTORS},
               "windows": [dm.detection_summary(np.nan_to_num(hal_windows[m, w], posinf=big), p)
                           for w in range(len(windows))]}
        # Bridges (mode interpolation) against in-support samples, blur left out, per window.
        labels = support.classify(res.x[m], grid.configs[grid.config_index[m]].mixture, config.k)
        sel = (labels == support.BRIDGE) | (labels == support.IN_SUPPORT)
        row["bridge_windows"] = [
            dm.detection_summary(np.nan_to_num(hal_windows[m, w][sel], posinf=big),
                                 labels[sel] == support.BRIDGE) for w in range(len(windows))]
        hal = res.hal[m]
        n = len(hal)
        kept = {"fraction": dm.keep_fraction(hal, config.keep),
                "count": dm.keep_lowest(hal, int(round(n * 100_000 / 102_500))),
                "calibrated": dm.keep_below(hal, thresholds[m])}
        row["filters"] = {name: {"kept": len(idx) / n,
                                 "rate_after": float(np.mean(p[idx])) if len(idx) else float("nan")}
                          for name, idx in kept.items()}
        row["rate_before"] = float(np.mean(p))
        flag_t = res.observed["flag_t"][m]
        flagged = flag_t >= 0
        T = schedule.num_steps
        # A trajectory flagged at step t need not run its remaining t steps (t-1 .. 0).
        saved = float(np.sum(np.where(flagged, flag_t, 0))) / (n * T)
        row["preemptive"] = {
            "flagged": float(np.mean(flagged)),
            "hallucinations_flagged": float(np.mean(flagged[p])) if p.any() else float("nan"),
            "in_support_flagged": float(np.mean(flagged[~p])) if (~p).any() else float("nan"),
            "steps_saved": saved,
            "flagged_at_median_t": float(np.median(flag_t[flagged])) if flagged.any() else float("nan"),
        }
        per_model.append(row)

    out = {"windows": [list(w) for w in windows], "configs": {}}
    for c, conf in enumerate(grid.configs):
        rows = [per_model[m] for m in np.flatnonzero(grid.config_index == c)]
        out["configs"][conf.name] = {
            "detectors": {d: summarise_seeds([r["detectors"][d] for r in rows]) for d in DETECTORS},
            "windows": [summarise_seeds([r["windows"][w] for r in rows]) for w in range(len(windows))],
            "bridge_windows": [summarise_seeds([r["bridge_windows"][w] for r in rows])
                               for w in range(len(windows))],
            "filters": {f: summarise_seeds([r["filters"][f] for r in rows]) for f in rows[0]["filters"]},
            "rate_before": summarise_seeds([{"rate": r["rate_before"]} for r in rows])["rate"],
            "preemptive": summarise_seeds([r["preemptive"] for r in rows]),
            "calibrated_threshold": cal[c],
        }
    arrays = {"positive": positive, "scores": scores, "hal_windows": hal_windows,
              "config_index": grid.config_index, "names": [c.name for c in grid.configs]}
    return out, arrays


def _best_bridge_window(windows: list, rows: list) -> dict:
    """The window whose mean AUROC of bridges vs in-support is highest, with its numbers, and
    the first (official) window's, for the summary."""
    aur = [r["auroc"]["mean"] for r in rows]
    if not np.any(np.isfinite(aur)):
        return {"bridges_best_window": None}
    best = int(np.nanargmax(aur))
    return {"bridges_best_window": windows[best],
            "bridges_best_window_auroc": [rows[best]["auroc"]["mean"], rows[best]["auroc"]["std"]],
            "bridges_best_window_removed_at_96_kept": [rows[best]["removed_at_96_kept"]["mean"],
                                                       rows[best]["removed_at_96_kept"]["std"]],
            "bridges_official_window_auroc": [rows[0]["auroc"]["mean"], rows[0]["auroc"]["std"]]}


def headline(results: dict) -> dict:
    """Per configuration of every evaluated source: each detector's AUROC [mean, std], the x0_hat
    variance's operating points, the best window of the sweep, the filters and pre-emption."""
    head = {}
    for src in results.values():
        for name, c in src["configs"].items():
            det = c["detectors"]
            sweep = [w["auroc"]["mean"] for w in c["windows"]]
            best = int(np.nanargmax(sweep)) if np.any(np.isfinite(sweep)) else 0
            head[name] = {
                **{f"{d}_auroc": [det[d]["auroc"]["mean"], det[d]["auroc"]["std"]] for d in DETECTORS},
                "var_x0_removed_at_96_kept": [det["var_x0"]["removed_at_96_kept"]["mean"],
                                              det["var_x0"]["removed_at_96_kept"]["std"]],
                "var_x0_kept_at_95_removed": [det["var_x0"]["kept_at_95_removed"]["mean"],
                                              det["var_x0"]["kept_at_95_removed"]["std"]],
                "best_window": src["windows"][best], "best_window_auroc": sweep[best],
                "best_window_removed_at_96_kept": c["windows"][best]["removed_at_96_kept"]["mean"],
                **_best_bridge_window(src["windows"], c["bridge_windows"]),
                "window_20_35_auroc": (sweep[src["windows"].index([20, 35])]
                                       if [20, 35] in src["windows"] else None),
                "rate_before": c["rate_before"]["mean"],
                "rate_after_calibrated_filter": c["filters"]["calibrated"]["rate_after"]["mean"],
                "kept_by_calibrated_filter": c["filters"]["calibrated"]["kept"]["mean"],
                "preemptive_steps_saved": c["preemptive"]["steps_saved"]["mean"],
                "preemptive_hallucinations_flagged": c["preemptive"]["hallucinations_flagged"]["mean"],
            }
    return head
