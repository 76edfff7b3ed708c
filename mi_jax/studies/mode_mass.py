r"""Which modes lose mass: per-mode mass of the learned sampler against the exact score.

For every trained mixture model: `--num_samples` fresh samples, and as many from the exact-score
sampler on the same schedule; each mode's in-support mass divided by its true weight (its
"share": 1 = the data's mass, 0 = the mode lost). Reported per model: the smallest share and
where it sits, the share of the mode nearest the input origin and of the grid's centre (the mode
nearest the mean of the means -- the two differ only on a shifted grid, `gmm2d --grid_shift`),
and the mean share by distance from the grid's centre. The figure maps each mode's share.

Why: the 25-mode recursion loses the centre mode first in every arm (BUILD_NOTES.md); this asks
whether a fresh model already under-samples it, and whether the cause is the mode's place in the
grid (surrounded by neighbours) or in input space (x = 0).

Command line: `python -m experiments.mode_mass` (every flag and preset: `--help`).
"""

from __future__ import annotations

import numpy as np

from mi_jax import config
from mi_jax import plots, sweeps
from mi_jax import workdir as wd
from mi_jax.data import support
from mi_jax.sampling.sampler import print_progress
from mi_jax.studies import mixture_models
from mi_jax.studies.runner import analysis_options, check_models_from, model_sources
from mi_jax.validation import InputError

PHASE_MASS = 6  # sampling key phase of this analysis (its own stream)

OPTIONS = analysis_options(
    config.Option("num_samples", "int", "Fresh samples per model (and per exact-score run).",
                  low=10),
    config.CHUNK_SIZE,
)
Config = config.config_class("ModeMassConfig", OPTIONS)
PRESETS = {
    "quick": dict(num_samples=50_000, chunk_size=25_000, k=support.DEFAULT_K),
    "paper": dict(num_samples=1_000_000, chunk_size=250_000, k=support.DEFAULT_K),
}


def validate(cfg: Config) -> None:
    if cfg.chunk_size > cfg.num_samples:
        raise InputError(f"chunk_size={cfg.chunk_size}: exceeds num_samples={cfg.num_samples}")
    check_models_from(cfg)


def mode_shares(x: np.ndarray, mixture, k: float) -> np.ndarray:
    """Each valid mode's in-support mass over its true weight, (K_valid,); x (n, D)."""
    x = np.asarray(x, np.float32)
    finite = np.all(np.isfinite(x), axis=1)
    counts = np.asarray(support.mode_counts(x[finite], mixture, k), np.float64)
    valid = np.asarray(mixture.mask, bool)
    return counts[valid] / len(x) / np.asarray(mixture.weights, np.float64)[valid]


def share_summary(share: np.ndarray, means: np.ndarray) -> dict:
    """Where the mass is lost: the minimum and its mode, the mode(s) nearest the input origin and
    the grid's centre (ties averaged), and the mean share per ring around the centre."""
    centre = means.mean(axis=0)
    r_origin = np.round(np.linalg.norm(means, axis=1), 6)
    r_centre = np.round(np.linalg.norm(means - centre, axis=1), 6)
    rings = {f"{r:.3f}": float(share[r_centre == r].mean()) for r in np.unique(r_centre)}
    low = int(np.argmin(share))
    return {"min_share": float(share[low]), "min_mode": means[low].tolist(),
            "min_mode_distance_from_centre": float(r_centre[low]),
            "origin_mode_share": float(share[r_origin == r_origin.min()].mean()),
            "grid_centre_share": float(share[r_centre == r_centre.min()].mean()),
            "median_share": float(np.median(share)), "share_by_ring": rings}


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    out, arrays = {}, {}
    for path in model_sources(cfg, workdir):
        models = mixture_models.load_models(path)
        grid, schedule = models.grid, models.schedule
        name = str(path).rstrip("/").split("/")[-1]
        dim = grid.configs[0].mixture.dim
        log(f"[mode_mass] {path}: {len(grid.config_index)} model(s), {cfg.num_samples} samples each")
        chunk = min(cfg.chunk_size, cfg.num_samples)
        res = sweeps.sample_models(models.network, models.params, schedule, grid.keys(PHASE_MASS),
                                   cfg.num_samples, (dim,), chunk_size=chunk,
                                   progress=print_progress("sample"))
        oracle = sweeps.sample_oracle([c.mixture for c in grid.configs], schedule,
                                      int(grid.seeds[0]) + PHASE_MASS, cfg.num_samples,
                                      chunk_size=chunk, progress=print_progress("oracle"))
        configs = {}
        fig, axes = plots.figure(ncols=len(grid.configs), width=4.2, height=3.8)
        for c, conf in enumerate(grid.configs):
            means = np.asarray(conf.mixture.means, np.float64)[np.asarray(conf.mixture.mask)]
            exact = mode_shares(oracle.x[c], conf.mixture, cfg.k)
            learned = np.stack([mode_shares(res.x[m], conf.mixture, cfg.k)
                                for m in np.flatnonzero(grid.config_index == c)])
            configs[conf.name] = {
                "exact": share_summary(exact, means),
                "per_model": [share_summary(s, means) for s in learned],
                "mean_over_models": share_summary(learned.mean(axis=0), means),
                "seeds": [int(s) for s in grid.seeds]}
            arrays[f"{name}__{conf.name}__learned_share"] = learned.astype(np.float32)
            arrays[f"{name}__{conf.name}__exact_share"] = exact.astype(np.float32)
            arrays[f"{name}__{conf.name}__means"] = means.astype(np.float32)
            _share_panel(axes[0, c], means, learned.mean(axis=0), exact, f"{name}: {conf.name}")
            row = configs[conf.name]["mean_over_models"]
            log(f"[mode_mass] {name} {conf.name}: min share {row['min_share']:.3f} "
                f"(exact {configs[conf.name]['exact']['min_share']:.3f}), origin mode "
                f"{row['origin_mode_share']:.3f}, grid centre {row['grid_centre_share']:.3f}, "
                f"median {row['median_share']:.3f}")
        wd.save_figure(fig, workdir / f"mode_share_{name}.png")
        out[name] = configs
    metrics = {"experiment": "mode_mass", "k": cfg.k, "num_samples": cfg.num_samples,
               "sources": out,
               "headline": {n: {c: {key: v["mean_over_models"][key] for key in
                                    ("min_share", "origin_mode_share", "grid_centre_share")}
                                for c, v in s.items()} for n, s in out.items()},
               "provenance": wd.provenance()}
    wd.write_npz(workdir / "arrays.npz", **arrays)
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    return metrics


def _share_panel(ax, means, learned, exact, title: str) -> None:
    """Each mode's share (learned, mean over models) as a colour, the exact one in text."""
    if means.shape[1] == 1:
        ax.bar(means[:, 0], learned, width=0.1, label="learned")
        ax.plot(means[:, 0], exact, "k.", label="exact score")
        ax.axhline(1.0, color="0.6", lw=0.6)
        ax.set_xlabel("mode")
        ax.set_ylabel("mass / true weight")
        ax.legend(fontsize=7)
    else:
        pts = ax.scatter(means[:, 0], means[:, 1], c=learned, cmap="RdYlBu", vmin=0.5, vmax=1.1,
                         s=160)
        for (u, v), s, e in zip(means, learned, exact):
            ax.annotate(f"{s:.2f}\n({e:.2f})", (u, v), fontsize=5.5, ha="center", va="center")
        ax.axhline(0.0, color="0.8", lw=0.5, zorder=0)
        ax.axvline(0.0, color="0.8", lw=0.5, zorder=0)
        ax.set_aspect("equal")
        ax.figure.colorbar(pts, ax=ax, shrink=0.8, label="mass / true weight (exact in brackets)")
    ax.set_title(title, fontsize=9)
