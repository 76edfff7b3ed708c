r"""Detecting hallucinations from the sampling trajectory: paper Fig. 7 and the 95 % / 96 % claim.

Uses the trained models of gmm1d / gmm2d runs (`--models_from`; without it, runs their presets
inside the work directory first). For every model it draws fresh samples once, keeping in that
one pass: the trajectory variance of x0_hat over every window of `--windows`, the variance of x_t
and of eps_hat over the first window, the final |eps_hat|, and the pre-emptive flag step; then a
FLIPD local-intrinsic-dimension score from the model's score at `--t0`, and random scores as the
floor. Reported per configuration (mean +- std over seeds): AUROC and the operating points
(hallucinations removed at 96 % of in-support kept; in-support kept at 95 % removed), the window
sweep, the three filtering modes, and what stopping flagged trajectories early saves.

Command line: `python -m experiments.detection` (every flag and preset: `--help`).
"""

from __future__ import annotations

import numpy as np

from mi_jax import config
from mi_jax import plots
from mi_jax import workdir as wd
from mi_jax.data import support
from mi_jax.detection import evaluate
from mi_jax.studies import mixture_study
from mi_jax.studies.runner import analysis_options, check_models_from, model_sources

OPTIONS = analysis_options(
    config.Option("num_samples", "int", "Fresh samples per model.", low=10),
    config.Option("chunk_size", "int", "Samples per sampler call.", low=1),
    config.Option("windows", "windows", "Trajectory-variance windows lo:hi; the first is the one "
                  "compared across detectors (0:10 = the official filter).", low=0),
    config.Option("t0", "int", "Timestep at which FLIPD evaluates the score.", low=0),
    config.Option("probes", "int", "Hutchinson probes for FLIPD's trace.", low=1),
    config.Option("keep", "float", "Fraction kept by the fraction filter / calibration.", low=0,
                  high=1, low_open=True),
)
Config = config.config_class("DetectionConfig", OPTIONS)

_BASE = dict(windows=[(0, 10), (0, 2), (0, 3), (0, 5), (0, 20), (5, 15), (10, 20), (20, 35),
                      (0, 50), (25, 50), (50, 100), (0, 100)],
             k=support.DEFAULT_K, t0=5, probes=4, keep=0.96)
PRESETS = {
    "quick": dict(_BASE, num_samples=8000, chunk_size=8000),
    "paper": dict(_BASE, num_samples=500_000, chunk_size=100_000),
}

DETECTORS = evaluate.DETECTORS


def validate(cfg: Config) -> None:
    check_models_from(cfg)
    detection_config(cfg)


def detection_config(cfg: Config) -> evaluate.DetectionConfig:
    return evaluate.DetectionConfig(cfg.num_samples, cfg.chunk_size,
                                    tuple(tuple(w) for w in cfg.windows), cfg.k, cfg.t0,
                                    cfg.probes, cfg.keep)


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    results = {}
    arrays = {}
    for path in model_sources(cfg, workdir):
        name = str(path).rstrip("/").split("/")[-1]
        res, arrays[name] = evaluate.evaluate_models(mixture_study.load_models(path),
                                                     detection_config(cfg))
        results[name] = {"source": str(path), **res}
    metrics = {"experiment": "detection", "k": cfg.k, "sources": results,
               "provenance": wd.provenance()}
    metrics["headline"] = evaluate.headline(results)
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


def _figures(workdir, cfg, results, arrays) -> list:
    names_out = []
    for src_name, src in results.items():
        a = arrays[src_name]
        names = a["names"]
        fig, axes = plots.figure(ncols=len(names), nrows=2, width=4.2, height=3.4)
        for c, name in enumerate(names):
            m = int(np.flatnonzero(a["config_index"] == c)[0])
            plots.roc_panel(axes[0, c], {d: a["scores"][d][m] for d in DETECTORS},
                            a["positive"][m], f"{name} (seed model {m})")
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
