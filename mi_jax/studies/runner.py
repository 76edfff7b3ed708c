"""Running studies by name: a preset's config, a finished result reused, the models an analysis
loads, and the main job over the study registry (`mi_jax.studies.registry`)."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Sequence

from mi_jax import config
from mi_jax import workdir as wd
from mi_jax.studies import mixture_models, registry
from mi_jax.validation import InputError


def load(name: str):
    """The study module `mi_jax.studies.<name>` (Config, PRESETS, validate, run)."""
    return importlib.import_module(f"mi_jax.studies.{name}")


def run_or_reuse(name: str, preset: str, workdir, overwrite: bool = False,
                 overrides: dict | None = None) -> dict:
    """Run study `name` at `preset` (plus `overrides`) into `workdir`, or return its metrics if
    that directory already holds a finished result of the same config."""
    study = load(name)
    cfg = config.preset(study.Config, study.PRESETS, preset, **(overrides or {}))
    workdir = Path(workdir)
    if wd.finished(workdir, cfg):
        print(f"== {name}: finished result found in {workdir}, not re-run", flush=True)
        if name in registry.MAIN_JOB + registry.BESIDE_MAIN_JOB:
            return registry.get(name).read_metrics(workdir)  # checked against its schema
        return wd.read_json(workdir / wd.METRICS_FILE)
    print(f"== {name} ({preset}) -> {workdir}", flush=True)
    t0 = time.perf_counter()
    study.validate(cfg)
    with wd.prepared(workdir, cfg, overwrite) as workdir:
        try:
            metrics = study.run(cfg, workdir)
        except InputError:
            raise  # a refused input: nothing ran, nothing to time (and nothing left behind)
        except BaseException:  # interrupted or failed: its time still counts once resumed
            wd.record_sitting(workdir, time.perf_counter() - t0, finished=False)
            raise
        wd.record_sitting(workdir, time.perf_counter() - t0, finished=True)
    print(f"== {name} done in {time.perf_counter() - t0:.0f}s", flush=True)
    return metrics


def model_sources(cfg, workdir: Path) -> list:
    """The mixture-study directories whose trained models an analysis uses: `cfg.models_from`,
    or else the gmm1d and gmm2d runs at the analysis's preset inside its own work directory."""
    if cfg.models_from:
        return [Path(p) for p in cfg.models_from.split(",")]
    sources = []
    for name in ("gmm1d", "gmm2d"):
        sub = Path(workdir) / f"models_{name}"
        run_or_reuse(name, cfg.preset, sub)
        sources.append(sub)
    return sources


def analysis_options(*specific: config.Option, sources: str = "gmm1d/gmm2d") -> tuple:
    """The options of an analysis of trained models: `--preset`, `--models_from` (finished
    `sources` work directories), the analysis's own `specific` options, then `--k`."""
    return (
        config.Option("preset", "choice", "quick or paper (also the preset of models trained "
                      "here).", choices=("quick", "paper")),
        config.Option("models_from", "str", f"Comma-separated finished {sources} work "
                      "directories.", default=None),
        *specific,
        config.Option("k", "float", "In-support radius in mode standard deviations.", low=0,
                      low_open=True),
    )


def check_models_from(cfg) -> None:
    """Every `models_from` directory must hold a finished gmm1d/gmm2d run (one-line error)."""
    if cfg.models_from:
        for path in cfg.models_from.split(","):
            mixture_models.load_models(path)


def selected(text: str | None, names: Sequence[str]) -> list:
    """The comma-separated subset `text` of `names` (all of them when empty)."""
    if not text:
        return list(names)
    picked = [n.strip() for n in text.split(",")]
    for n in picked:
        if n not in names:
            raise InputError(f"only={text}: unknown experiment {n!r} (have {', '.join(names)})")
    return picked


def run_all(root: Path, preset: str, names, overwrite: bool = False) -> dict:
    """Run (or reuse) the registered studies `names` at `preset`, each in `root/<name>`; a study
    that analyses other studies' models (`Study.needs`) gets those of the same job, which run
    first if needed."""
    root = Path(root)
    results = {}
    for name in names:
        needs = registry.get(name).needs
        for dep in needs:
            if dep not in results:
                results[dep] = run_or_reuse(dep, preset, root / dep, overwrite)
        overrides = {"models_from": ",".join(str(root / dep) for dep in needs)} if needs else None
        results[name] = run_or_reuse(name, preset, root / name, overwrite, overrides)
    return {n: results[n] for n in names}


def main_job(root: Path, preset: str = "quick", names=None, overwrite: bool = False) -> str:
    """The main job: `run_all` (default: every study of `registry.MAIN_JOB`), then the claims
    ledger and `summary.md` / `summary.json` in `root`; returns the summary text."""
    from mi_jax import ledger
    from mi_jax.report import summary_markdown

    names = list(registry.MAIN_JOB) if names is None else list(names)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    results = run_all(root, preset, names, overwrite)
    rows = ledger.ledger_from_workdir(root)
    times = {n: wd.wall_seconds(root / n) for n in names}
    wd.write_json(root / "summary.json", {"preset": preset, "ledger": rows, "rule": ledger.RULE,
                                         "wall_seconds": {n: t and t[0] for n, t in times.items()},
                                         **{n: r["headline"] for n, r in results.items()}})
    text = summary_markdown(results, preset, rows, times)
    wd.write_text(root / "summary.md", text)
    return text
