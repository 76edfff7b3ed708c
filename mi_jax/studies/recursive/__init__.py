r"""Recursive retraining on own samples, with and without filtering (paper Fig. 8 and the
appendix's per-generation scatter plots).

Each generation trains fresh models only on the previous generation's kept samples: no filter,
a random subset, or the lowest trajectory variances (any detector of the detection library with
--filters=detector:var_xt etc.). Three datasets, each in its own sub-directory (a full work
directory that resumes after interruption, generation by generation):
  gmm2d   the 2D grid of Gaussians (toy MLP): hallucination rate, modes covered, per-mode mass,
          histogram KL to the true mixture;
  shapes  SIMPLE SHAPES (UNet): hallucination rate by category from the shape counter;
  digits  real MNIST (UNet): the 5 000 digits shipped in the `mnist` extra (or the IDX files of
          --mnist_dir), or with --digits_source=rendered digits typeset from matplotlib's fonts
          (NOT MNIST): Frechet distance in the feature space of a small classifier trained on
          the real digits (NOT Inception FID) and the predicted-label distribution.
The per-dataset flags (--steps, --seeds, --num_train, ...) override the preset of every selected
dataset; SIMPLE SHAPES is not in the quick default (a UNet that draws clean shapes costs tens of
minutes per model on 2 CPU cores, and the study trains one per generation, filter and seed).

--pool_from=DIR,DIR,... trains nothing: it pools finished runs that differ only in seeds or
filters (each the study's usual work directory) into one table and Fig. 8 per dataset, so the
seeds of a study too long for one sitting can run apart.

Command line: `python -m experiments.recursive` (every flag and preset: `--help`). The package:
  config    flags, presets and the typed per-dataset configs (`Gmm2dConfig`, `DigitsConfig`,
            `ShapesConfig`), their checks;
  problems  each dataset as a recursion problem: `PROBLEMS[name](dataset config, log)`;
  pooling   curves over seeds, the headline, pooling finished runs (`--pool_from`);
  report    tables, figures, the main job's summary section and the ledger claims.
The recursion itself (generations x filters x seeds, resumable): `mi_jax.recursive`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax import recursive as rec
from mi_jax import workdir as wd
from mi_jax.studies.recursive import pooling, report
from mi_jax.studies.recursive.config import (DATASET_CONFIGS, DATASET_OPTIONS, DATASET_PRESETS,
                                             DATASETS, NOT_MNIST, OPTIONS, PRESETS, Config,
                                             DatasetConfig, DigitsConfig, Gmm2dConfig, ShapesConfig,
                                             check_dataset, dataset_config, names,
                                             recursion_config)
from mi_jax.studies.recursive.pooling import (min_mode_share, pool_inputs, pool_metrics,
                                              seed_curves)
from mi_jax.studies.recursive.problems import PROBLEMS, nearest_distance
from mi_jax.studies.recursive.report import curve_panel, pooled_table, recursion_table
from mi_jax.studies.registry import Schema, Study
from mi_jax.validation import InputError


def validate(cfg: Config) -> None:
    datasets = names(cfg.datasets, "datasets", DATASETS)
    if cfg.pool_from is not None:
        for key in DATASET_OPTIONS + ("restart_t",):
            value = getattr(cfg, key)
            if value is not None:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                raise InputError(f"{key}={shown}: not used with --pool_from (the pooled runs' "
                                 "own settings are reported)")
        for name in datasets:
            pool_metrics(pool_inputs(cfg, name))  # InputError "pool_from=...: why"
        return
    if cfg.grid_size is not None and "gmm2d" not in datasets:
        raise InputError(f"grid_size={cfg.grid_size}: only the gmm2d dataset has a grid "
                         f"(datasets={cfg.datasets})")
    for name in datasets:
        check_dataset(cfg, dataset_config(cfg, name))


def run_dataset(d: DatasetConfig, workdir: Path, log=print) -> dict:
    """The recursion of one dataset in its work directory: metrics.json, figures; the metrics."""
    problem, training, info = PROBLEMS[d.dataset](d, log)
    rcfg = recursion_config(d)
    result = rec.run_recursion(problem, training, rcfg, d.seeds, workdir=workdir, log=log)
    metric = d.headline_metric
    scalar_names = [k for k, v in result.metrics[0]["generated"].items()
                    if np.ndim(v[0]) == 0]
    curves = {which: {key: seed_curves(result, which, key) for key in scalar_names}
              for which in ("generated", "kept", "removed") if which in result.metrics[0]}
    metrics = {"experiment": "recursive", "dataset": d.dataset, "filters": list(result.filters),
               "seeds": list(result.seeds), "generations": rcfg.generations,
               "num_train": rcfg.num_train, "num_candidates": rcfg.num_candidates,
               "num_keep": rcfg.num_keep, "headline_metric": metric, "curves": curves,
               "per_generation": result.metrics,
               "info": {k: v for k, v in info.items() if k != "mixture"},
               "seconds": result.seconds, "provenance": wd.provenance()}
    metrics["headline"] = pooling.headline(curves, metric, result.filters)
    report.dataset_figures(workdir, metrics, info, d)
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    return metrics


def run_pool(cfg: Config, workdir: Path, log=print) -> dict:
    """--pool_from: each dataset's curves pooled over the named runs; nothing is trained."""
    results = {}
    for name in names(cfg.datasets, "datasets", DATASETS):
        m = pool_metrics(pool_inputs(cfg, name))
        sub = workdir / name
        sub.mkdir(parents=True, exist_ok=True)
        wd.write_text(sub / "table.md", pooled_table(m))
        report.curves_figure(sub / "curves.png", m)
        wd.write_json(sub / wd.METRICS_FILE, m)
        log(f"== recursive/{name}: pooled " + "; ".join(
            f"{f} over {len(m['filter_seeds'][f])} seed(s)" for f in m["filters"]))
        results[name] = m
    return _write_study(workdir, results)


def _write_study(workdir: Path, results: dict) -> dict:
    """Fig. 8 and the study's metrics.json over the datasets' metrics ({name: metrics})."""
    report.fig8_figure(workdir / "fig8_recursive.png", results)
    metrics = {"experiment": "recursive", "datasets": list(results),
               "headline": {n: m["headline"] for n, m in results.items()},
               "results": {n: {"curves": m["curves"], "info": m["info"]}
                           for n, m in results.items()},
               "provenance": wd.provenance()}
    return STUDY.write_metrics(workdir, metrics)


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    workdir = Path(workdir)
    if cfg.pool_from is not None:
        return run_pool(cfg, workdir, log)
    results = {}
    for name in names(cfg.datasets, "datasets", DATASETS):
        d = dataset_config(cfg, name)
        sub = workdir / name
        if wd.finished(sub, d):
            log(f"== recursive/{name}: finished result found in {sub}, not re-run")
            results[name] = wd.read_json(sub / wd.METRICS_FILE)
            continue
        log(f"== recursive/{name} -> {sub}")
        # The top-level workdir already refused a different config unless --overwrite was given.
        sub = wd.prepare(sub, d, overwrite=True)
        results[name] = run_dataset(d, sub, log)
    for name, m in results.items():  # also for finished runs: the table is cheap
        weights = report.mode_weights(dataset_config(cfg, name))
        wd.write_text(workdir / name / "table.md", recursion_table(m, weights))
        if weights is not None:
            report.mass_curves_figure(workdir / name / "mass_curves.png", m, weights)
    return _write_study(workdir, results)


STUDY = Study("recursive", Schema(metrics=("datasets", "results")), summary=report.summary_lines,
              claims=report.CLAIMS)

__all__ = ["Config", "PRESETS", "OPTIONS", "DATASETS", "DATASET_PRESETS", "DATASET_CONFIGS",
           "DatasetConfig", "Gmm2dConfig", "DigitsConfig", "ShapesConfig", "NOT_MNIST", "STUDY",
           "validate",
           "run", "run_dataset", "run_pool", "dataset_config", "recursion_config",
           "pool_metrics", "pooled_table", "recursion_table", "curve_panel", "min_mode_share",
           "nearest_distance", "PROBLEMS"]
