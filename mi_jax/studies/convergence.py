r"""Training recipes for the official 25-mode grids on a CPU budget: an A/B with convergence curves.

Every recipe keeps the paper's objective, network family and schedule (epsilon-MSE, the tied MLP,
T = 1000, linear 0.001 -> 0.2, fixed-large sampler) and changes only how training spends compute
(importance-weighted timesteps, EMA of the weights, learning-rate schedule, batch, width). All
layouts x seeds of a recipe train in one jitted call per chunk; every `--eval_every` steps the
models are sampled (trajectory variance on) and scored: bridge and blur rates, in-support mode
width against the exact-score sampler's, and trajectory-variance AUROC / removed-at-96 %-kept
against bridges. A finished recipe is kept in the work directory and skipped on a rerun.

Command line: `python -m experiments.convergence` (every flag and preset: `--help`).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from mi_jax import config
from mi_jax import plots, sweeps
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.evaluation.mixture import bridge_blur_report
from mi_jax.nets import make_mlp
from mi_jax.sampling.observers import paper_observers
from mi_jax.sweeps import finite_mean
from mi_jax.training import train as tr
from mi_jax.validation import InputError

# Recipes as data: TrainConfig fields plus the network width. "official_cpu" is the official
# optimiser (Adam 1e-3, constant) at the CPU batch and width; the rest add one change at a time.
RECIPES = {
    "official_cpu": dict(width=64, batch_size=1000, learning_rate=1e-3, lr_schedule="constant"),
    "cosine": dict(width=64, batch_size=1000, learning_rate=2e-3, lr_schedule="cosine"),
    "focus": dict(width=64, batch_size=1000, learning_rate=2e-3, lr_schedule="cosine",
                  focus_steps=100, focus_prob=0.5),
    "ema": dict(width=64, batch_size=1000, learning_rate=2e-3, lr_schedule="cosine",
                ema_decay=0.999),
    "focus_ema": dict(width=64, batch_size=1000, learning_rate=2e-3, lr_schedule="cosine",
                      focus_steps=100, focus_prob=0.5, ema_decay=0.999),
    "focus_w128": dict(width=128, batch_size=1000, learning_rate=2e-3, lr_schedule="cosine",
                       focus_steps=100, focus_prob=0.5),
}

OPTIONS = tuple(o for o in config.COMMON if o.name in ("seeds", "steps", "num_samples", "k")) + (
    config.Option("preset", "choice", "Settings to start from.", choices=("quick",)),
    config.Option("recipes", "str", f"Comma-separated recipes, from: {', '.join(RECIPES)}."),
    config.Option("layouts", "str", "Comma-separated grid layouts: square, rotated."),
    config.Option("grid_size", "int", "Modes per side (5 = the official 25-mode grid).", low=2,
                  high=15),
    config.Option("eval_every", "int", "Evaluate (sample --num_samples per model) every this many "
                  "steps.", low=1),
    config.Option("num_train", "int", "Training-set size.", low=1),
)
Config = config.config_class("ConvergenceConfig", OPTIONS)

PRESETS = {
    "quick": dict(recipes="cosine,focus,ema,focus_ema", layouts="rotated,square",
                  grid_size=5, seeds=[0, 1, 2], steps=12000, eval_every=3000, num_samples=2000,
                  num_train=100_000, k=support.DEFAULT_K),
}

T, BETA_START, BETA_END = 1000, 0.001, 0.2


def _names(text: str, allowed, flag: str) -> list:
    names = [n.strip() for n in text.split(",")]
    for n in names:
        if n not in allowed:
            raise InputError(f"{flag}={text}: {n!r} is not one of {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise InputError(f"{flag}={text}: must not repeat a name")
    return names


def validate(cfg: Config) -> None:
    _names(cfg.recipes, RECIPES, "recipes")
    _names(cfg.layouts, ("square", "rotated"), "layouts")
    if cfg.steps % cfg.eval_every:
        raise InputError(f"eval_every={cfg.eval_every}: must divide --steps="
                             f"{cfg.steps}")
    for r in _names(cfg.recipes, RECIPES, "recipes"):
        if RECIPES[r]["batch_size"] > cfg.num_train:
            raise InputError(f"num_train={cfg.num_train}: below recipe {r}'s batch")


def train_config(recipe: dict, steps: int) -> tr.TrainConfig:
    fields = {k: v for k, v in recipe.items() if k != "width"}
    return tr.TrainConfig(**fields, decay_steps=steps if fields["lr_schedule"] == "cosine" else 0)


def run_recipe(name: str, cfg: Config, grid: sweeps.Grid, oracle_width: dict, log=print) -> dict:
    """Train one recipe's models, evaluating along the way; returns its curve."""
    from mi_jax.diffusion.schedule import linear_schedule

    recipe = RECIPES[name]
    schedule = linear_schedule(T, BETA_START, BETA_END)
    network = make_mlp(grid.configs[0].mixture.dim, recipe["width"], 3, True, num_timesteps=T)
    train_cfg = train_config(recipe, cfg.steps)
    curve, clock = [], {"train": 0.0, "t0": time.perf_counter()}

    def evaluate(state, step, _losses):
        clock["train"] += time.perf_counter() - clock["t0"]
        if step % cfg.eval_every == 0:
            res = sweeps.sample_grid(network, state.eval_params, schedule, grid,
                                     cfg.num_samples, (2,), observers=paper_observers(),
                                     chunk_size=cfg.num_samples)
            models = []
            for m in range(grid.num_models):
                conf = grid.configs[grid.config_index[m]]
                models.append(bridge_blur_report(res.x[m], res.hal[m], conf.mixture, cfg.k,
                                                 oracle_width[conf.name]))
            curve.append({"step": step, "train_seconds": clock["train"], "models": models})
            b = [r["bridges"]["auroc"] for r in models]
            log(f"[{name}] step {step}: bridge {100 * np.mean([r['bridge'] for r in models]):.2f}%"
                f"  blur {100 * np.mean([r['blur'] for r in models]):.2f}%  width/exact "
                f"{finite_mean([r['width_vs_exact'] for r in models]):.2f}  AUROC(bridges) "
                f"{finite_mean(b):.3f}")
        clock["t0"] = time.perf_counter()

    log(f"recipe {name}: {recipe}; {grid.num_models} models, {cfg.steps} steps")
    sweeps.train_grid(network, schedule, train_cfg, grid, cfg.steps,
                      chunk_steps=min(cfg.eval_every, 1000), on_chunk=evaluate,
                      progress=tr.print_progress(name, every_s=30))
    return {"recipe": recipe, "curve": curve,
            "sample_steps_per_model": cfg.steps * recipe["batch_size"]}


def summarise(result: dict, grid: sweeps.Grid) -> dict:
    """Final evaluation per layout (mean/std over seeds) and the last-quarter flatness."""
    final, out = result["curve"][-1]["models"], {}
    quarter = [c for c in result["curve"] if c["step"] >= 0.75 * result["curve"][-1]["step"]]
    for c, conf in enumerate(grid.configs):
        rows = np.flatnonzero(grid.config_index == c)
        get = lambda f, ms=final: np.asarray([f(ms[m]) for m in rows], np.float64)
        out[conf.name] = {
            "bridge": sweeps.seed_summary(get(lambda r: r["bridge"])),
            "blur": sweeps.seed_summary(get(lambda r: r["blur"])),
            "width_vs_exact": sweeps.seed_summary(get(lambda r: r["width_vs_exact"])),
            "auroc_bridges": sweeps.seed_summary(get(lambda r: r["bridges"]["auroc"])),
            "removed_at_96_kept_bridges": sweeps.seed_summary(
                get(lambda r: r["bridges"]["removed_at_96_kept"])),
            "bridge_last_quarter": [float(np.mean(get(lambda r: r["bridge"], q["models"])))
                                    for q in quarter],
        }
    return out


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    layouts = _names(cfg.layouts, ("square", "rotated"), "layouts")
    grid = sweeps.Grid([sweeps.Config(l, mx.grid_2d(l, size=cfg.grid_size), cfg.num_train)
                        for l in layouts], list(cfg.seeds))
    from mi_jax.diffusion.schedule import linear_schedule

    oracle = sweeps.sample_oracle([c.mixture for c in grid.configs],
                                  linear_schedule(T, BETA_START, BETA_END), 0, cfg.num_samples,
                                  observers=paper_observers(), chunk_size=cfg.num_samples)
    oracle_width = {c.name: support.mode_width(oracle.x[i], c.mixture, cfg.k)
                    for i, c in enumerate(grid.configs)}
    oracle_rates = {c.name: {n: float(v) for n, v in support.label_rates(
        support.classify(oracle.x[i], c.mixture, cfg.k)).items()}
        for i, c in enumerate(grid.configs)}
    results = {}
    for name in _names(cfg.recipes, RECIPES, "recipes"):
        done = workdir / f"recipe_{name}.json"
        if done.exists():
            results[name] = wd.read_json(done)
            log(f"recipe {name}: finished earlier, loaded {done}")
            continue
        results[name] = run_recipe(name, cfg, grid, oracle_width, log)
        wd.write_json(done, results[name])
    metrics = {"experiment": "convergence", "oracle_mode_width": oracle_width,
               "oracle_rates": oracle_rates,
               "summary": {n: summarise(r, grid) for n, r in results.items()},
               "results": results, "provenance": wd.provenance()}
    metrics["headline"] = metrics["summary"]
    _figure(workdir, results, grid)
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    for name, s in metrics["summary"].items():
        for layout, v in s.items():
            log(f"{name:16s} {layout:8s} bridge {100 * v['bridge']['mean']:.2f}% blur "
                f"{100 * v['blur']['mean']:.2f}% width/exact {v['width_vs_exact']['mean']:.2f} "
                f"AUROC {v['auroc_bridges']['mean']:.3f} removed@96 "
                f"{100 * v['removed_at_96_kept_bridges']['mean']:.1f}%")
    return metrics


def _figure(workdir, results: dict, grid: sweeps.Grid) -> None:
    panels = (("bridge", "bridge rate", lambda r: r["bridge"]),
              ("blur", "blur rate", lambda r: r["blur"]),
              ("width", "mode width / exact", lambda r: r["width_vs_exact"]),
              ("auroc", "AUROC vs bridges", lambda r: r["bridges"]["auroc"]))
    fig, axes = plots.figure(nrows=len(grid.configs), ncols=len(panels), width=3.6, height=2.8)
    for c, conf in enumerate(grid.configs):
        rows = np.flatnonzero(grid.config_index == c)
        for j, (_, title, get) in enumerate(panels):
            ax = axes[c, j]
            for name, res in results.items():
                steps = [p["step"] for p in res["curve"]]
                vals = np.asarray([[get(p["models"][m]) for m in rows] for p in res["curve"]],
                                  np.float64)
                with warnings.catch_warnings():  # a point with no bridge in any seed is NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, std = np.nanmean(vals, 1), np.nanstd(vals, 1)
                ax.errorbar(steps, mean, yerr=std, label=name, capsize=2)
            ax.set_title(f"{conf.name}: {title}", fontsize=9)
            ax.set_xlabel("training step")
            if j < 2:
                ax.set_yscale("log")
    axes[0, 0].legend(fontsize=6)
    wd.save_figure(fig, workdir / "convergence.png")
