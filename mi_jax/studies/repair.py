r"""Repair instead of discard (beyond the paper): mitigation during sampling on the 25-mode grids.

    --models_from=runs/gmm2d_seed0,runs/gmm2d_seed1

For every trained 2D model (finished gmm2d work directories; without `--models_from` the gmm2d
preset is trained inside the work directory first), `--num_samples` fresh samples with the
x0_hat variance over `--window` (the detector), and then:

- plain: the DDPM samples as they are;
- filter f: plain DDPM, the top fraction f (each of `--flag_fractions`) by variance discarded
  (the paper's filter; cost 1 / (1 - f), the extra samples drawn to keep the same count);
- restart t' f: the same flagged samples re-noised to t' with q(x_t' | x_0) and resampled from
  there, re-scored and restarted again up to `--rounds` times; nothing is discarded
  (`mi_jax.sampling.repair.repair_flagged`). A false flag costs a filter a good sample but a
  restart only t' + 1 network calls, so repair can afford a larger f than filtering;
- guided w: every sample guided toward its most probable mode below `--guidance_t_max`, with the
  exact mode posterior as the classifier (`repair.mode_guided`; mixtures only).

Reported per layout (mean +- std over the models): bridge, blur and hallucination rates
(`support.classify`), modes covered, KL(true mode weights || generated per-mode mass) and the
compute as a multiple of plain sampling (network calls; guidance: measured time).

Command line: `python -m experiments.repair` (every flag and preset: `--help`).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

import mi_jax as mj
from mi_jax import config, plots, sweeps
from mi_jax import workdir as wd
from mi_jax.data import support
from mi_jax.evaluation.mixture import mode_quality
from mi_jax.sampling import repair
from mi_jax.studies import mixture_models
from mi_jax.studies.runner import analysis_options, run_or_reuse
from mi_jax.validation import InputError

PHASE_REPAIR = 6

OPTIONS = analysis_options(
    config.Option("num_samples", "int", "Fresh samples per model.", low=100),
    config.CHUNK_SIZE,
    config.Option("window", "window", "The detector: x0_hat variance over lo,hi (timesteps).",
                  low=0),
    config.Option("flag_fractions", "floats", "Shares of samples flagged (the highest "
                  "variances); one filter and one restart arm per share.", low=0, high=0.5,
                  low_open=True),
    config.Option("restart_t", "ints", "Timesteps t' the flagged samples are re-noised to.",
                  low=1),
    config.Option("rounds", "int", "Restarts at most per flagged sample.", low=1, high=10),
    config.Option("guidance_weights", "floats", "Mode-guidance weights w in [0, 1] (0: none, 1: the "
                  "mode's exact denoiser below --guidance_t_max).", low=0, high=1),
    config.Option("guidance_t_max", "int", "Guide at every t below this.", low=1),
    sources="gmm2d",
)
Config = config.config_class("RepairConfig", OPTIONS)

_BASE = dict(window=[0, 5], flag_fractions=[0.04, 0.1, 0.2], restart_t=[50, 100, 200], rounds=2,
             guidance_weights=[0.1, 0.25, 0.5], guidance_t_max=200, k=support.DEFAULT_K)
PRESETS = {"quick": dict(_BASE, num_samples=8000, chunk_size=8000),
           "paper": dict(_BASE, num_samples=100_000, chunk_size=25_000)}
METRICS = ("bridge", "blur", "hallucinated", "modes_covered", "mass_kl", "compute")


def _sources(cfg: Config, workdir: Path) -> list:
    if cfg.models_from:
        return [Path(p) for p in cfg.models_from.split(",")]
    sub = workdir / "models_gmm2d"
    run_or_reuse("gmm2d", cfg.preset, sub)
    return [sub]


def validate(cfg: Config) -> None:
    if cfg.chunk_size > cfg.num_samples:
        raise InputError(f"chunk_size={cfg.chunk_size}: exceeds num_samples={cfg.num_samples}")
    for path in (cfg.models_from.split(",") if cfg.models_from else []):
        models = mixture_models.load_models(path)  # one-line error if not a finished run
        if models.grid.configs[0].mixture.dim != 2:
            raise InputError(f"models_from={path}: not a 2D mixture run (gmm2d)")
        T = models.schedule.num_steps
        if cfg.window[1] > T or max(cfg.restart_t) >= T or cfg.guidance_t_max > T:
            raise InputError(f"restart_t={','.join(map(str, cfg.restart_t))}: the window, "
                             f"restart timesteps and guidance_t_max must lie inside T={T} "
                             f"({path})")


def evaluate_model(network, params, schedule, mixture, key, cfg: Config, log=print) -> dict:
    eps_fn = network.eps_fn(params)
    T = schedule.num_steps
    observers = {"hal": mj.window_variance(tuple(cfg.window))}
    chunk = min(cfg.chunk_size, cfg.num_samples)
    mj.sample(eps_fn, schedule, key, chunk, (2,), observers=observers, chunk_size=chunk)  # compile
    t0 = time.perf_counter()
    res = mj.sample(eps_fn, schedule, key, cfg.num_samples, (2,), observers=observers,
                    chunk_size=cfg.chunk_size)
    plain_s = time.perf_counter() - t0
    x, score = res.x, np.asarray(res.observed["hal"].var[0], np.float64)
    arms = {"plain": {**mode_quality(x, mixture, cfg.k), "compute": 1.0}}
    for f in cfg.flag_fractions:
        threshold = float(np.quantile(score[np.isfinite(score)], 1.0 - f))
        flagged = ~(score <= threshold)
        arms[f"filter f={f:g}"] = {**mode_quality(x[~flagged], mixture, cfg.k),
                                   "compute": 1.0 / (1.0 - float(flagged.mean()))}
        for t_r in cfg.restart_t:
            out = repair.repair_flagged(eps_fn, schedule, jax.random.fold_in(key, 1000 + t_r),
                                        x, score, threshold, t_r, cfg.rounds, "hal", observers)
            arms[f"restart t'={t_r} f={f:g}"] = {
                **mode_quality(out["x"], mixture, cfg.k),
                "compute": 1.0 + out["network_calls"] / (cfg.num_samples * T),
                "restarted": out["restarted"],
                "still_flagged": float(np.mean(~(out["scores"] <= threshold)))}
    for w in cfg.guidance_weights:
        guided = repair.mode_guided(eps_fn, mixture, schedule, w, cfg.guidance_t_max)
        mj.sample(guided, schedule, key, chunk, (2,), observers=observers,
                  chunk_size=chunk)  # compile, untimed
        t0 = time.perf_counter()
        g = mj.sample(guided, schedule, key, cfg.num_samples, (2,), observers=observers,
                      chunk_size=cfg.chunk_size)
        arms[f"guided w={w:g}"] = {**mode_quality(g.x, mixture, cfg.k),
                                   "compute": (time.perf_counter() - t0) / plain_s}
    log("  " + "; ".join(f"{a}: bridge {100 * v['bridge']:.2f} %, x{v['compute']:.2f}"
                         for a, v in arms.items()))
    return arms


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    workdir = Path(workdir)
    per_config: dict = {}
    for path in _sources(cfg, workdir):
        models = mixture_models.load_models(path)
        grid = models.grid
        keys = grid.keys(PHASE_REPAIR)
        for m in range(grid.num_models):
            conf = grid.configs[grid.config_index[m]]
            log(f"[repair] {path} model {m} ({conf.name})")
            params = mj.take_model(models.params, m)
            arms = evaluate_model(models.network, params, models.schedule,
                                  conf.mixture, keys[m], cfg, log)
            per_config.setdefault(conf.name, []).append({"source": str(path), "model": m,
                                                         "arms": arms})
    table = {}
    for name, rows in per_config.items():
        table[name] = {}
        for arm in rows[0]["arms"]:
            vals = {k: np.asarray([r["arms"][arm][k] for r in rows], np.float64) for k in METRICS}
            table[name][arm] = {k: {"per_model": v.tolist(), **_mean_std(v)}
                                for k, v in vals.items()}
    text = table_markdown(table)
    wd.write_text(workdir / "table.md", text)
    log(text)
    figures = [_figure(workdir, table)]
    metrics = {"experiment": "repair", "table": table, "models": per_config,
               "headline": headline(table), "figures": figures, "provenance": wd.provenance()}
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    return metrics


def _mean_std(v: np.ndarray) -> dict:
    return {"mean": float(v.mean()), "std": float(sweeps.seed_std(v))}


def table_markdown(table: dict) -> str:
    lines = ["| layout | arm | bridge % | blur % | hallucinated % | modes covered | mass KL | "
             "compute (x plain) |", "|---|---|---|---|---|---|---|---|"]
    for name, arms in table.items():
        for arm, v in arms.items():
            cells = [_pm(v["bridge"], 100, 2), _pm(v["blur"], 100, 2),
                     _pm(v["hallucinated"], 100, 2), _pm(v["modes_covered"], 1, 1),
                     _pm(v["mass_kl"], 1, 4), _pm(v["compute"], 1, 2)]
            lines.append(f"| {name} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(v: dict, scale: float, digits: int) -> str:
    std = v["std"]
    return f"{v['mean'] * scale:.{digits}f}" + ("" if not np.isfinite(std) else
                                                f" +- {std * scale:.{digits}f}")


def headline(table: dict) -> dict:
    """Per layout: the plain bridge rate, and the restart arm (no oracle: guidance uses the exact
    mixture and is left to the table) with the lowest mean bridge rate
    among those within 1.5x plain compute covering as many modes as plain, beside the filter
    that flags the same fraction (equal kept count: the filter keeps 1 - f of what it draws)."""
    out = {}
    for name, arms in table.items():
        plain = arms["plain"]
        ok = [a for a, v in arms.items() if a.startswith("restart")
              and v["compute"]["mean"] <= 1.5
              and v["modes_covered"]["mean"] >= plain["modes_covered"]["mean"]]
        best = min(ok, key=lambda a: arms[a]["bridge"]["mean"]) if ok else None
        same_filter = ("filter " + best.split(" ")[-1]) if best and " f=" in best else None
        out[name] = {"plain_bridge": plain["bridge"]["mean"],
                     "best_repair": best,
                     "best_repair_bridge": arms[best]["bridge"]["mean"] if best else None,
                     "best_repair_compute": arms[best]["compute"]["mean"] if best else None,
                     "filter_at_same_fraction": same_filter,
                     "filter_bridge": arms[same_filter]["bridge"]["mean"] if same_filter
                     else None}
    return out


def _figure(workdir: Path, table: dict) -> str:
    fig, axes = plots.figure(ncols=len(table), width=4.4, height=3.6)
    for ax, (name, arms) in zip(axes[0], table.items()):
        for arm, v in arms.items():
            ax.errorbar(v["compute"]["mean"], 100 * v["bridge"]["mean"],
                        yerr=100 * np.nan_to_num(v["bridge"]["std"]), marker="o", capsize=2,
                        label=arm)
        ax.set_xlabel("compute (x plain sampling)")
        ax.set_ylabel("bridge rate %")
        ax.set_title(f"{name}: repair vs filter", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    wd.save_figure(fig, workdir / "repair.png")
    return "repair.png"
