r"""Detecting hallucinations from the sampling trajectory: paper Fig. 7 and the 95 % / 96 % claim.

    python -m experiments.detection --workdir=runs/detection --preset=quick
    python -m experiments.detection --workdir=runs/det --models_from=runs/reproduce/gmm1d,runs/reproduce/gmm2d

Uses the trained models of gmm1d / gmm2d runs (`--models_from`; without it, runs their presets
inside the work directory first). For every model it draws fresh samples once, keeping in that
one pass: the trajectory variance of x0_hat over every window of `--windows`, the variance of x_t
and of eps_hat over the first window, the final |eps_hat|, and the pre-emptive flag step; then a
FLIPD local-intrinsic-dimension score from the model's score at `--t0`, and random scores as the
floor. Reported per configuration (mean +- std over seeds): AUROC and the operating points
(hallucinations removed at 96 % of in-support kept; in-support kept at 95 % removed), the window
sweep, the three filtering modes, and what stopping flagged trajectories early saves.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import cli, plots, sweeps
from mi_jax import workdir as wd
from mi_jax.data import support
from mi_jax.detection import detectors
from mi_jax.detection import metrics as dm
from mi_jax.sampling.ddpm import print_progress, sample_network

from experiments.common import check_models_from, model_sources

OPTIONS = (
    cli.Option("preset", "choice", "quick or paper (also the preset of models trained here).",
               choices=("quick", "paper")),
    cli.Option("models_from", "str", "Comma-separated gmm1d/gmm2d work directories to analyse."),
    cli.Option("num_samples", "int", "Fresh samples per model.", low=10),
    cli.Option("chunk_size", "int", "Samples per sampler call.", low=1),
    cli.Option("windows", "windows", "Trajectory-variance windows lo:hi; the first is the one "
               "compared across detectors (0:10 = the official filter).", low=0),
    cli.Option("k", "float", "In-support radius in mode standard deviations.", low=0,
               low_open=True),
    cli.Option("t0", "int", "Timestep at which FLIPD evaluates the score.", low=0),
    cli.Option("probes", "int", "Hutchinson probes for FLIPD's trace.", low=1),
    cli.Option("keep", "float", "Fraction kept by the fraction filter / calibration.", low=0,
               high=1, low_open=True),
)

_BASE = dict(windows=[(0, 10), (0, 5), (0, 20), (5, 15), (10, 20), (20, 35),
                                      (0, 50), (25, 50), (50, 100), (0, 100)],
             k=support.DEFAULT_K, t0=5, probes=4, keep=0.96)
PRESETS = {
    "quick": dict(_BASE, num_samples=8000, chunk_size=8000),
    "paper": dict(_BASE, num_samples=500_000, chunk_size=100_000),
}

DETECTORS = ("var_x0", "var_xt", "var_eps", "eps_norm_last", "flipd", "random")
_KEYS = ("auroc", "removed_at_96_kept", "kept_at_95_removed")


validate = check_models_from


def _summ(rows: list) -> dict:
    out = {}
    for key in rows[0]:
        vals = np.asarray([r[key] for r in rows], np.float64)
        ok = vals[np.isfinite(vals)]
        out[key] = {"per_seed": vals.tolist(), **(sweeps.seed_summary(ok) if len(ok) else
                                                 {"mean": float("nan"), "std": float("nan")})}
    return out


def analyse_source(path, cfg: dict, rng_seed: int = 0) -> dict:
    """All detection numbers for the models of one gmm1d/gmm2d work directory."""
    models = sweeps.load_models(path)
    grid, schedule, network = models.grid, models.schedule, models.network
    dim = grid.configs[0].mixture.dim
    mixtures = grid.mixtures()
    windows = [tuple(w) for w in cfg["windows"]]
    for lo, hi in windows:
        if hi > schedule.num_steps:
            raise cli.InputError(f"--windows={lo}:{hi}: must lie inside [0, T={schedule.num_steps})")
    print(f"[detection] {path}: {grid.num_models} models, {cfg['num_samples']} samples each",
          flush=True)

    # Calibration: the exact-score sampler's in-support samples give each configuration's threshold.
    oracle = sweeps.sample_oracle([c.mixture for c in grid.configs], schedule, 10_000,
                                  cfg["num_samples"], windows=windows,
                                  chunk_size=cfg["chunk_size"], progress=print_progress("oracle"))
    cal = []
    for c, conf in enumerate(grid.configs):
        inside = np.asarray(support.in_support(oracle.x[c], conf.mixture, cfg["k"]))
        cal.append(dm.calibrated_threshold(oracle.hal[c][inside], cfg["keep"]))
    thresholds = np.asarray([cal[c] for c in grid.config_index])

    res = sample_network(network, models.params, schedule, grid.keys(sweeps.PHASE_SAMPLE),
                         cfg["num_samples"], (dim,), stacked=True, windows=windows,
                         track=("x0", "xt", "eps"), chunk_size=cfg["chunk_size"],
                         flag_threshold=thresholds, progress=print_progress("sample"))
    finite = np.all(np.isfinite(res.x), axis=-1)
    x_safe = np.where(finite[..., None], res.x, 0.0)
    inside = np.asarray(jax.vmap(support.in_support, (0, 0, None))(jnp.asarray(x_safe), mixtures,
                                                                      cfg["k"]))
    positive = ~(inside & finite)
    scores = detectors.trajectory_scores(res)
    lid = jax.jit(jax.vmap(lambda p, x, k: detectors.flipd(network.eps_fn(p), schedule, x,
                                                             cfg["t0"], k, cfg["probes"])))
    scores["flipd"] = np.asarray(lid(models.params, jnp.asarray(x_safe),
                                     jax.random.split(jax.random.key(rng_seed), grid.num_models)))
    scores["random"] = np.random.default_rng(rng_seed).random(positive.shape)
    big = np.finfo(np.float32).max

    per_model = []
    for m in range(grid.num_models):
        p = positive[m]
        row = {"detectors": {d: dm.detection_summary(np.nan_to_num(scores[d][m], posinf=big), p)
                             for d in DETECTORS},
               "windows": [dm.detection_summary(np.nan_to_num(res.hal_windows[m, w], posinf=big), p)
                           for w in range(len(windows))]}
        hal = res.hal[m]
        n = len(hal)
        kept = {"fraction": dm.keep_fraction(hal, cfg["keep"]),
                "count": dm.keep_lowest(hal, int(round(n * 100_000 / 102_500))),
                "calibrated": dm.keep_below(hal, thresholds[m])}
        row["filters"] = {name: {"kept": len(idx) / n,
                                 "rate_after": float(np.mean(p[idx])) if len(idx) else float("nan")}
                          for name, idx in kept.items()}
        row["rate_before"] = float(np.mean(p))
        flag_t = res.stats["flag_t"][m]
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

    out = {"source": str(path), "windows": [list(w) for w in windows], "configs": {}}
    for c, conf in enumerate(grid.configs):
        rows = [per_model[m] for m in np.flatnonzero(grid.config_index == c)]
        out["configs"][conf.name] = {
            "detectors": {d: _summ([r["detectors"][d] for r in rows]) for d in DETECTORS},
            "windows": [_summ([r["windows"][w] for r in rows]) for w in range(len(windows))],
            "filters": {f: _summ([r["filters"][f] for r in rows]) for f in rows[0]["filters"]},
            "rate_before": _summ([{"rate": r["rate_before"]} for r in rows])["rate"],
            "preemptive": _summ([r["preemptive"] for r in rows]),
            "calibrated_threshold": cal[c],
        }
    out["_arrays"] = {"positive": positive, "scores": scores, "hal_windows": res.hal_windows,
                      "config_index": grid.config_index, "names": [c.name for c in grid.configs]}
    return out


def run(cfg: dict, workdir, log=print) -> dict:
    validate(cfg)
    results = {}
    arrays = {}
    for path in model_sources(cfg, workdir):
        name = str(path).rstrip("/").split("/")[-1]
        res = analyse_source(path, cfg)
        arrays[name] = res.pop("_arrays")
        results[name] = res
    metrics = {"experiment": "detection", "k": cfg["k"], "sources": results,
               "provenance": wd.provenance()}
    metrics["headline"] = _headline(results)
    metrics["figures"] = _figures(workdir, cfg, results, arrays)
    flat = {}
    for name, a in arrays.items():
        flat[f"{name}__positive"] = a["positive"]
        flat[f"{name}__hal_windows"] = a["hal_windows"]
        for d, v in a["scores"].items():
            flat[f"{name}__{d}"] = v
    wd.write_npz(workdir / "arrays.npz", **flat)
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    return metrics


def _headline(results: dict) -> dict:
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
                "window_20_35_auroc": (sweep[src["windows"].index([20, 35])]
                                       if [20, 35] in src["windows"] else None),
                "rate_before": c["rate_before"]["mean"],
                "rate_after_calibrated_filter": c["filters"]["calibrated"]["rate_after"]["mean"],
                "kept_by_calibrated_filter": c["filters"]["calibrated"]["kept"]["mean"],
                "preemptive_steps_saved": c["preemptive"]["steps_saved"]["mean"],
                "preemptive_hallucinations_flagged": c["preemptive"]["hallucinations_flagged"]["mean"],
            }
    return head


def _figures(workdir, cfg, results, arrays) -> list:
    names_out = []
    for src_name, src in results.items():
        a = arrays[src_name]
        names = a["names"]
        fig, axes = plots.figure(ncols=len(names), nrows=2, width=4.2, height=3.4)
        for c, name in enumerate(names):
            m = int(np.flatnonzero(a["config_index"] == c)[0])
            p = a["positive"][m]
            ax = axes[0, c]
            for d in DETECTORS:
                s = np.nan_to_num(a["scores"][d][m], posinf=np.finfo(np.float32).max)
                if p.any() and (~p).any():
                    fpr, tpr, _ = dm.roc_curve(s, p)
                    ax.plot(fpr, tpr, lw=1, label=f"{d} ({dm.auroc(s, p):.3f})")
            ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
            ax.set_xlabel("in-support flagged (FPR)")
            ax.set_ylabel("hallucinations flagged (TPR)")
            ax.set_title(f"{name} (seed model {m})", fontsize=9)
            ax.legend(fontsize=6, loc="lower right")
            ax = axes[1, c]
            w = src["configs"][name]["windows"]
            labels = [f"{lo}:{hi}" for lo, hi in src["windows"]]
            ax.errorbar(range(len(w)), [v["auroc"]["mean"] for v in w],
                        yerr=[v["auroc"]["std"] for v in w], marker="o", capsize=2)
            ax.set_xticks(range(len(w)), labels, rotation=60, fontsize=7)
            ax.set_ylabel("AUROC of x0_hat variance")
            ax.set_xlabel("window [lo, hi)")
            ax.grid(alpha=0.3)
        wd.save_figure(fig, workdir / f"roc_windows_{src_name}.png")
        names_out.append(f"roc_windows_{src_name}.png")
    return names_out


if __name__ == "__main__":
    cli.define(OPTIONS)
    cli.run_main(lambda: cli.experiment_main(OPTIONS, PRESETS, validate, run))
