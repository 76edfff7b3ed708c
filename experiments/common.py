"""Helpers shared by the entry points: running (or reusing) an experiment at a preset."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from mi_jax import cli, sweeps
from mi_jax import workdir as wd


def run_or_reuse(name: str, preset: str, workdir, overwrite: bool = False,
                 overrides: dict | None = None) -> dict:
    """Run experiment `name` at `preset` (plus `overrides`) into `workdir`, or return its metrics
    if that directory already holds a finished result of the same config."""
    module = importlib.import_module(f"experiments.{name}")
    cfg = {**cli.preset_config(module.OPTIONS, module.PRESETS, preset), **(overrides or {})}
    workdir = Path(workdir)
    if wd.finished(workdir, cfg):
        print(f"== {name}: finished result found in {workdir}, not re-run", flush=True)
        return wd.read_json(workdir / wd.METRICS_FILE)
    print(f"== {name} ({preset}) -> {workdir}", flush=True)
    t0 = time.perf_counter()
    workdir = wd.prepare(workdir, cfg, overwrite)
    metrics = module.run(cfg, workdir)
    print(f"== {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
    return metrics


def model_sources(cfg: dict, workdir: Path) -> list:
    """The mixture-experiment directories whose trained models an analysis uses: `--models_from`,
    or else the gmm1d and gmm2d runs at the analysis's preset inside its own work directory."""
    if cfg.get("models_from"):
        return [Path(p) for p in cfg["models_from"].split(",")]
    sources = []
    for name in ("gmm1d", "gmm2d"):
        sub = Path(workdir) / f"models_{name}"
        run_or_reuse(name, cfg["preset"], sub)
        sources.append(sub)
    return sources


def check_models_from(cfg: dict) -> None:
    """Every `--models_from` directory must hold a finished gmm1d/gmm2d run (one-line error)."""
    if cfg.get("models_from"):
        for path in cfg["models_from"].split(","):
            sweeps.load_models(path)
