r"""Trajectories of x0_hat for hallucinated and in-support samples (paper Fig. 6).

Draws `--num_samples` samples per model with every reverse step of x0_hat recorded (memory
T x samples x D, so keep it small), labels the final samples, and plots x0_hat against the
timestep over the last `--t_max` steps: hallucinated trajectories keep moving late, in-support
ones settle early. Reports the mean trajectory variance of each group over several windows.

Command line: `python -m experiments.trajectories` (every flag and preset: `--help`).
"""

from __future__ import annotations

import numpy as np

from mi_jax import config
from mi_jax import plots, sweeps
from mi_jax import workdir as wd
from mi_jax.data import support
from mi_jax.sampling.observers import paper_observers
from mi_jax.studies import mixture_models
from mi_jax.studies.registry import Schema, Study
from mi_jax.studies.runner import analysis_options, check_models_from, model_sources

OPTIONS = analysis_options(
    config.Option("num_samples", "int", "Recorded samples per model.", low=2),
    config.Option("per_class", "int", "Trajectories drawn per class and panel.", low=1),
    config.Option("t_max", "int", "Plot timesteps t < t_max.", low=2),
)
Config = config.config_class("TrajectoriesConfig", OPTIONS)
PRESETS = {
    "quick": dict(num_samples=1024, per_class=12, t_max=100, k=support.DEFAULT_K),
    "paper": dict(num_samples=4096, per_class=20, t_max=100, k=support.DEFAULT_K),
}
WINDOWS = [(0, 10), (10, 20), (20, 35), (35, 50), (50, 100)]


validate = check_models_from


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    out, arrays = {}, {}
    for path in model_sources(cfg, workdir):
        models = mixture_models.load_models(path)
        grid = models.grid
        dim = grid.configs[0].mixture.dim
        t_max = min(cfg.t_max, models.schedule.num_steps)
        windows = [w for w in WINDOWS if w[1] <= models.schedule.num_steps]
        res = sweeps.sample_grid(models.network, models.params, models.schedule, grid,
                                 cfg.num_samples, (dim,), chunk_size=cfg.num_samples,
                                 observers=paper_observers(windows, record=cfg.num_samples))
        traj = res.observed["trajectory"]["x0"][:, :t_max]  # (M, t_max, n, D), slot = timestep
        variance = res.observed["hal"].var  # (M, W, n)
        name = str(path).rstrip("/").split("/")[-1]
        groups = {}
        fig, axes = plots.figure(ncols=len(grid.configs), width=4.0, height=3.4)
        for c, conf in enumerate(grid.configs):
            m = int(np.flatnonzero(grid.config_index == c)[0])
            inside = (np.asarray(support.in_support(np.nan_to_num(res.x[m]), conf.mixture, cfg.k))
                      & np.all(np.isfinite(res.x[m]), axis=-1))
            groups[conf.name] = {
                "num_hallucinated": int((~inside).sum()), "num_in_support": int(inside.sum()),
                "mean_variance_by_window": {
                    f"{lo}:{hi}": {"hallucinated": float(np.mean(variance[m, w][~inside]))
                                   if (~inside).any() else None,
                                   "in_support": float(np.mean(variance[m, w][inside]))}
                    for w, (lo, hi) in enumerate(windows)},
            }
            _panel(axes[0, c], traj[m], inside, dim, cfg.per_class, conf, m)
        axes[0, 0].legend(fontsize=7)
        wd.save_figure(fig, workdir / f"fig6_{name}.png")
        out[name] = groups
        arrays[f"{name}__x0_trajectories"] = traj[:, :, : 4 * cfg.per_class]
        arrays[f"{name}__final"] = res.x[:, : 4 * cfg.per_class]
    metrics = {"experiment": "trajectories", "k": cfg.k, "sources": out,
               "headline": {n: {c: g["mean_variance_by_window"]["0:10"] for c, g in groups.items()}
                            for n, groups in out.items()},
               "provenance": wd.provenance()}
    wd.write_npz(workdir / "arrays.npz", **arrays)
    return STUDY.write_metrics(workdir, metrics)


def _panel(ax, traj, inside, dim, per_class, conf, m) -> None:
    """x0_hat vs t (1D) or its path in the plane (2D), hallucinated in red, in support in blue."""
    ts = np.arange(traj.shape[0])
    for mask, color, label in ((inside, "tab:blue", "in support"), (~inside, "tab:red",
                                                                      "hallucinated")):
        idx = np.flatnonzero(mask)[:per_class]
        for j, i in enumerate(idx):
            kw = dict(color=color, lw=0.7, alpha=0.7, label=label if j == 0 else None)
            if dim == 1:
                ax.plot(ts, traj[:, i, 0], **kw)
            else:
                ax.plot(traj[:, i, 0], traj[:, i, 1], **kw)
    means = np.asarray(conf.mixture.means)[np.asarray(conf.mixture.mask)]
    if dim == 1:
        for mu in means[:, 0]:
            ax.axhline(mu, color="tab:orange", lw=0.5, ls=":")
        ax.invert_xaxis()
        ax.set_xlabel("timestep t (sampling runs towards t = 0)")
        ax.set_ylabel("x0_hat")
        ax.set_ylim(means.min() - 0.7, means.max() + 0.7)
    else:
        ax.scatter(means[:, 0], means[:, 1], s=10, c="tab:orange", zorder=3)
        lim = np.abs(means).max() * 1.4
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    ax.set_title(f"{conf.name} (model {m})", fontsize=9)


# ------------------------------------------------------------------------------------------
# Outputs: the summary section and the ledger claims (see mi_jax.studies.registry)
# ------------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list:
    return ["## Trajectories (paper Fig. 6)", "",
            "![Fig. 6, 1D](trajectories/fig6_gmm1d.png)", "",
            "![Fig. 6, 2D](trajectories/fig6_gmm2d.png)", ""]


STUDY = Study("trajectories", Schema(metrics=("k", "sources")), needs=("gmm1d", "gmm2d"),
              summary=summary_lines)
