"""Running studies by name: a preset's config, a finished result reused, the models an analysis
loads."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Sequence

from mi_jax import config
from mi_jax import workdir as wd
from mi_jax.studies import mixture_study
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
        return wd.read_json(workdir / wd.METRICS_FILE)
    print(f"== {name} ({preset}) -> {workdir}", flush=True)
    t0 = time.perf_counter()
    study.validate(cfg)
    with wd.prepared(workdir, cfg, overwrite) as workdir:
        metrics = study.run(cfg, workdir)
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
            mixture_study.load_models(path)


# Analyses that reuse the models trained by the mixture studies of the same job.
USES_MODELS = ("detection", "trajectories", "score_analysis", "ablations")


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
    """Run (or reuse) the studies `names` at `preset`, each in `root/<name>`; an analysis gets
    the models of the same job's gmm1d/gmm2d (or shapes) runs, which run first if needed."""
    root = Path(root)
    results = {}
    for name in names:
        overrides = None
        if name == "shapes_detection":
            overrides = {"models_from": str(root / "shapes")}
            if "shapes" not in results:
                results["shapes"] = run_or_reuse("shapes", preset, root / "shapes", overwrite)
        if name in USES_MODELS:
            overrides = {"models_from": f"{root / 'gmm1d'},{root / 'gmm2d'}"}
            for dep in ("gmm1d", "gmm2d"):
                if dep not in results:
                    results[dep] = run_or_reuse(dep, preset, root / dep, overwrite)
        results[name] = run_or_reuse(name, preset, root / name, overwrite, overrides)
    return {n: results[n] for n in names}


def main_job(root: Path, preset: str = "quick", names=None, overwrite: bool = False) -> str:
    """The main job: `run_all`, then the claims ledger and `summary.md` / `summary.json` in
    `root`; returns the summary text."""
    from mi_jax import ledger
    from mi_jax.report import summary_markdown

    names = list(ledger.EXPERIMENTS) if names is None else list(names)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    results = run_all(root, preset, names, overwrite)
    rows = ledger.ledger_from_workdir(root)
    wd.write_json(root / "summary.json", {"preset": preset, "ledger": rows, "rule": ledger.RULE,
                                         **{n: r["headline"] for n, r in results.items()}})
    text = summary_markdown(results, preset, rows)
    wd.write_text(root / "summary.md", text)
    return text


def write_ledger(root: Path) -> str:
    """The claims ledger of a directory of finished studies: `ledger.md`, `ledger.json`."""
    from mi_jax import ledger

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"workdir={root}: is not a directory")
    rows = ledger.ledger_from_workdir(root)
    if all(r["verdict"] == ledger.NOT_MEASURED for r in rows):
        raise InputError(f"workdir={root}: holds no finished experiment ("
                         + ", ".join(ledger.EXPERIMENTS) + " sub-directories)")
    text = ledger.ledger_markdown(rows)
    wd.write_json(root / "ledger.json", {"ledger": rows, "rule": ledger.RULE})
    wd.write_text(root / "ledger.md", text)
    return text


def write_results(path, columns) -> str:
    """`ledger.results_markdown` of the committed ledgers named by `columns` ("label:directory",
    each directory holding a `ledger.json`), written to `path`; returns the text."""
    from mi_jax import ledger

    rows, sources, progress = {}, {}, {}
    for item in columns:
        label, sep, directory = item.partition(":")
        if not sep or not label or not directory:
            raise InputError(f"columns={item}: must be label:directory")
        file = Path(directory) / "ledger.json"
        if not Path(directory).is_dir():
            raise InputError(f"columns={item}: {directory} is not a directory")
        if file.exists():
            rows[label], sources[label] = wd.read_json(file)["ledger"], str(file)
        else:  # no study finished there yet: every row "not measured"
            rows[label], sources[label] = ledger.ledger({}), f"{directory} (no ledger.json yet)"
        if (Path(directory) / "units").is_dir():  # the paper budget's units (paper_budget)
            from mi_jax.studies import paper_budget as pb

            progress[label] = "\n".join(
                ["| unit | state |", "|---|---|"]
                + [f"| {u.name} | {pb.status(directory, u)} |" for u in pb.units()])
    text = ledger.results_markdown(rows, sources, progress)
    wd.write_text(Path(path), text)
    return text
