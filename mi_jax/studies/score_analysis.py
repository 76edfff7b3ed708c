r"""Why it happens: the exact x0_hat and score jump between modes, the learned ones are smooth
(paper Fig. 4).

For each trained 1D model: the learned x0_hat(x_t) = (x_t - b eps_hat)/a and score -eps_hat/b
against the exact E[x0 | x_t] and score of the noised mixture, on a grid of x_t at several
timesteps. Quantified per gap between neighbouring modes: the maximum slope of x0_hat(x_t)
(the exact one is a near-step) and the probability mass, under the exact noised marginal p_t, of
the x_t whose x0_hat lands between the modes (outside every k-sigma ball) -- the mass that the
sampler turns into hallucinations. For 2D models: maps of the distance from x0_hat to the nearest
mode, learned vs exact, and the same mass.

Command line: `python -m experiments.score_analysis` (every flag and preset: `--help`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import config, ledger
from mi_jax import plots, report, sweeps
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.diffusion.forward import predict_x0
from mi_jax.diffusion.oracle import oracle_score, oracle_x0
from mi_jax.studies import mixture_models
from mi_jax.studies.registry import Schema, Study
from mi_jax.studies.runner import analysis_options, check_models_from, model_sources

OPTIONS = analysis_options(
    config.Option("timesteps", "ints", "Timesteps to analyse (t = 0 is the last reverse step).",
                  low=0),
    config.Option("grid_points", "int", "Points per axis of the x_t grid.", low=10),
)
Config = config.config_class("ScoreAnalysisConfig", OPTIONS)
PRESETS = {
    "quick": dict(timesteps=[0, 5, 10, 20, 50, 100], grid_points=4000, k=support.DEFAULT_K),
    "paper": dict(timesteps=[0, 5, 10, 20, 50, 100], grid_points=20000, k=support.DEFAULT_K),
}
validate = check_models_from


def _functions(network, params, schedule, mixture, x, t):
    """Learned and exact x0_hat and score at x (n, D), timestep t."""
    tt = jnp.full((x.shape[0],), t, jnp.int32)
    eps = network.apply(params, x, tt)
    b = schedule.sqrt_one_minus_alphas_bar[t]
    return {"x0_learned": predict_x0(schedule, x, tt, eps), "x0_exact": oracle_x0(mixture, schedule)(x, tt),
            "score_learned": -eps / b, "score_exact": oracle_score(mixture, schedule)(x, tt)}


def gap_statistics(x, x0_learned, x0_exact, mixture, a, k, density) -> list:
    """Per gap between neighbouring 1D modes: max slope of x0_hat(x_t), and the width and the
    probability mass (under the exact noised marginal `density` at x) of the x_t region mapped
    between the modes, learned vs exact. The mass is what matters: the exact x0_hat also maps
    x_t far from every mode between them, but such x_t are (nearly) never reached."""
    means = np.sort(np.asarray(mixture.means)[np.asarray(mixture.mask), 0])
    std = float(np.asarray(mixture.stds)[0])
    rows = []
    for lo, hi in zip(means[:-1], means[1:]):
        sel = (x >= a * lo) & (x <= a * hi)
        xs = x[sel]
        row = {"gap": [float(lo), float(hi)]}
        for kind, x0 in (("learned", x0_learned[sel]), ("exact", x0_exact[sel])):
            slope = np.diff(x0) / np.diff(xs)
            between = (x0 > lo + k * std) & (x0 < hi - k * std)
            row[f"max_slope_{kind}"] = float(slope.max())
            row[f"between_width_{kind}"] = float(between.sum() * (xs[1] - xs[0]))
            row[f"between_mass_{kind}"] = float(np.sum(density[sel][between]) * (xs[1] - xs[0]))
        rows.append(row)
    return rows


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    out, arrays = {}, {}
    for path in model_sources(cfg, workdir):
        models = mixture_models.load_models(path)
        name = str(path).rstrip("/").split("/")[-1]
        dim = models.grid.configs[0].mixture.dim
        out[name] = (_analyse_1d if dim == 1 else _analyse_2d)(models, cfg, workdir, name)
        for key, value in out[name].pop("_arrays").items():
            arrays[f"{name}__{key}"] = value
    metrics = {"experiment": "score_analysis", "k": cfg.k, "sources": out,
               "provenance": wd.provenance()}
    metrics["headline"] = {n: src.get("summary", {}) for n, src in out.items()}
    wd.write_npz(workdir / "arrays.npz", **arrays)
    return STUDY.write_metrics(workdir, metrics)


def _analyse_1d(models, cfg, workdir, name) -> dict:
    grid, schedule = models.grid, models.schedule
    c = 0  # the first configuration (Fig. 2's first mixture)
    conf = grid.configs[c]
    ts = [t for t in cfg.timesteps if t < schedule.num_steps]
    means = np.asarray(conf.mixture.means)[np.asarray(conf.mixture.mask), 0]
    per_t, saved = {}, {}
    fig, axes = plots.figure(ncols=len(ts), nrows=2, width=3.0, height=2.8)
    for j, t in enumerate(ts):
        a = float(schedule.sqrt_alphas_bar[t])
        x = np.linspace(a * means.min() - 0.5, a * means.max() + 0.5, cfg.grid_points)
        density = np.exp(np.asarray(mx.noised_log_prob(
            conf.mixture, jnp.asarray(x[:, None]), schedule.sqrt_alphas_bar[t],
            schedule.sqrt_one_minus_alphas_bar[t])))
        rows = []
        for m in np.flatnonzero(grid.config_index == c):
            p = jax.tree.map(lambda v: v[m], models.params)
            f = {k_: np.asarray(v)[:, 0] for k_, v in
                 _functions(models.network, p, schedule, conf.mixture, jnp.asarray(x[:, None]),
                            t).items()}
            rows.extend(gap_statistics(x, f["x0_learned"], f["x0_exact"], conf.mixture, a,
                                       cfg.k, density))
            if m == np.flatnonzero(grid.config_index == c)[0]:
                saved[f"t{t}"] = np.stack([x, f["x0_exact"], f["x0_learned"], f["score_exact"],
                                           f["score_learned"]])
                ax = axes[0, j]
                ax.plot(x, f["x0_exact"], color="tab:red", lw=1, label="exact E[x0|x_t]")
                ax.plot(x, f["x0_learned"], color="tab:blue", lw=1, label="learned x0_hat")
                for mu in means:
                    ax.axhline(mu, color="tab:orange", lw=0.4, ls=":")
                ax.set_ylim(means.min() - 0.5, means.max() + 0.5)
                ax.set_title(f"t={t}", fontsize=9)
                ax = axes[1, j]
                ax.plot(x, f["score_exact"], color="tab:red", lw=1, label="exact score")
                ax.plot(x, f["score_learned"], color="tab:blue", lw=1, label="learned")
                ax.set_xlabel("x_t")
        keys = [k_ for k_ in rows[0] if k_ != "gap"]
        per_t[str(t)] = {k_: sweeps.seed_summary([r[k_] for r in rows]) for k_ in keys}
        per_t[str(t)]["gaps"] = rows
    axes[0, 0].set_ylabel("x0_hat(x_t)")
    axes[1, 0].set_ylabel("score")
    axes[0, 0].legend(fontsize=6)
    wd.save_figure(fig, workdir / f"fig4_{name}.png")
    summary = {t: {key: v[key]["mean"] for key in
                   ("max_slope_learned", "max_slope_exact", "between_mass_learned",
                    "between_mass_exact", "between_width_learned", "between_width_exact")}
               for t, v in per_t.items()}
    # arrays: rows x_t, exact x0, learned x0, exact score, learned score (first seed)
    return {"config": conf.name, "per_timestep": per_t, "summary": summary, "_arrays": saved}


def _analyse_2d(models, cfg, workdir, name) -> dict:
    grid, schedule = models.grid, models.schedule
    t = min([t for t in cfg.timesteps if t > 0] or [0])
    n = int(np.sqrt(cfg.grid_points * 25))  # a 2D grid with ~as many points per axis as 1D/3
    n = max(50, min(n, 300))
    fig, axes = plots.figure(ncols=2 * len(grid.configs), width=3.6, height=3.4)
    summary, saved = {}, {}
    for c, conf in enumerate(grid.configs):
        m = int(np.flatnonzero(grid.config_index == c)[0])
        p = jax.tree.map(lambda v: v[m], models.params)
        means = np.asarray(conf.mixture.means)[np.asarray(conf.mixture.mask)]
        a = float(schedule.sqrt_alphas_bar[t])
        lim = a * np.abs(means).max() * 1.3
        g = np.linspace(-lim, lim, n)
        xx, yy = np.meshgrid(g, g)
        x = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], axis=1))
        f = _functions(models.network, p, schedule, conf.mixture, x, t)
        sigma = float(np.asarray(conf.mixture.stds)[0])
        density = np.exp(np.asarray(mx.noised_log_prob(conf.mixture, x, schedule.sqrt_alphas_bar[t],
                                                       schedule.sqrt_one_minus_alphas_bar[t])))
        weights = density / density.sum()  # the grid's share of p_t (it covers ~all of it)
        frac = {}
        for i, kind in enumerate(("exact", "learned")):
            d = np.asarray(jnp.min(support.normalised_distances(f[f"x0_{kind}"], conf.mixture), -1))
            frac[kind] = float(np.sum(weights[d > cfg.k]))
            saved[f"{conf.name}__{kind}_distance"] = d.reshape(n, n)
            ax = axes[0, 2 * c + i]
            im = ax.imshow(np.log10(np.maximum(d, 1e-2)).reshape(n, n), origin="lower",
                           extent=(-lim, lim, -lim, lim), cmap="magma", vmin=-1, vmax=2)
            ax.scatter(a * means[:, 0], a * means[:, 1], s=4, c="cyan")
            ax.set_title(f"{conf.name}: {kind} x0_hat, t={t}\nlog10 distance to modes (sigma)",
                         fontsize=8)
        fig.colorbar(im, ax=axes[0, 2 * c + 1], fraction=0.046)
        summary[conf.name] = {"t": t, "sigma": sigma,
                              "mass_mapped_between_modes_exact": frac["exact"],
                              "mass_mapped_between_modes_learned": frac["learned"]}
    wd.save_figure(fig, workdir / f"fig4_{name}.png")
    return {"summary": summary, "_arrays": saved}


# ------------------------------------------------------------------------------------------
# Outputs: the summary section and the ledger claims (see mi_jax.studies.registry)
# ------------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list:
    h, pct = metrics["headline"], report.pct
    lines = ["## Mechanism: exact vs learned x0_hat (paper Fig. 4)", "",
             "Per gap between neighbouring modes (mean over gaps and seeds): the steepest slope "
             "of x0_hat(x_t), and the probability mass under the exact noised marginal of the "
             "x_t whose x0_hat lands between modes.", "",
             "| t | max slope exact | max slope learned | mass mapped between, exact | learned |",
             "|---|---|---|---|---|"]
    for src in h.values():
        for t, v in sorted(src.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
            if "max_slope_exact" in v:
                lines.append(f"| {t} | {v['max_slope_exact']:.2f} | {v['max_slope_learned']:.2f} | "
                             f"{pct(v['between_mass_exact'])} | {pct(v['between_mass_learned'])} |")
            else:
                lines.append(f"| 2D {t} (t={v['t']}) | | | "
                             f"{pct(v['mass_mapped_between_modes_exact'])} | "
                             f"{pct(v['mass_mapped_between_modes_learned'])} |")
    lines += ["", "![Fig. 4](score_analysis/fig4_gmm1d.png)", "",
              "![Fig. 4, 2D](score_analysis/fig4_gmm2d.png)", ""]
    return lines


def _smooth_x0(results):
    sources = ledger.read(results, "score_analysis", "sources") or {}
    src = next((src for src in sources.values() if "per_timestep" in src), None)
    if not src or not src["per_timestep"]:
        return None
    per_t = src["per_timestep"]
    t = min((int(k) for k in per_t if int(k) > 0), default=None)
    if t is None:
        return None
    gaps = per_t[str(t)]["gaps"]
    ratios = [g["max_slope_exact"] / max(g["max_slope_learned"], 1e-12) for g in gaps]
    m = ledger.Measurement(ratios, ledger.protocol(results, "gmm1d", f"score analysis at t={t}, "
                                                   "per gap and seed"),
                           f"steepest slope of x0_hat(x_t) between modes: exact / learned at t={t}")
    # Gated on the analysed configuration's own curve (score_analysis: Fig. 2's first mixture).
    return ledger.gated(m, results, "gmm1d", [src["config"]] if "config" in src else None)


STUDY = Study(
    "score_analysis",
    Schema(metrics=("k", "sources")),
    needs=("gmm1d", "gmm2d"),
    summary=summary_lines,
    claims=(
        ledger.Claim("smooth_x0", "The learned x0_hat(x_t) is a smoothed version of the exact "
                     "near-step between modes (Fig. 4).", "exact / learned steepest slope", 2.0,
                     1.0, True, _smooth_x0, percent=False),
    ),
)
