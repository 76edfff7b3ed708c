r"""Sampler and training ablations (paper appendix, Fig. 11).

1. Samplers, on the trained models of gmm1d (first configuration) and gmm2d: ancestral DDPM over
   all T steps, strided DDPM over T' < T steps (respaced betas, the net conditioned on the kept
   timesteps), deterministic DDIM over T and T' steps, and the same samplers with the exact score
   (the no-hallucination control).
2. An imbalanced 2D grid (weights in a geometric progression, ratio `--imbalance`): the
   hallucination rate, and whether the modes keep their weights.
3. Hallucination rate against training length: one 1D mixture trained from scratch, sampled at
   checkpoints along training.

Command line: `python -m experiments.ablations` (every flag and preset: `--help`).
"""

from __future__ import annotations

import jax
import numpy as np

from mi_jax import config
from mi_jax import plots, report, sweeps
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.diffusion.oracle import ORACLE
from mi_jax.diffusion.schedule import sampling_plan
from mi_jax.nets import make_mlp
from mi_jax.sampling.observers import paper_observers
from mi_jax.sampling.sampler import Stacked, sample
from mi_jax.sampling.solvers import DDIM, DDPM
from mi_jax.studies import mixture_models, mixture_study
from mi_jax.studies.registry import Schema, Study
from mi_jax.studies.runner import analysis_options, check_models_from, model_sources
from mi_jax.training import train as tr
from mi_jax.validation import InputError

OPTIONS = analysis_options(
    config.Option("num_samples", "int", "Samples per model and sampler.", low=10),
    config.Option("sampling_steps", "ints", "Strided sampler lengths T' (< T).", low=2),
    config.Option("imbalance", "float", "Largest / smallest mode weight of the imbalanced grid.",
                  low=1),
    config.Option("checkpoints", "ints", "Training steps at which the training-length run is sampled.",
                  low=1),
)
Config = config.config_class("AblationsConfig", OPTIONS)
PRESETS = {
    "quick": dict(num_samples=2000, sampling_steps=[100, 50], imbalance=10.0,
                  checkpoints=[1000, 2000, 3000, 4000, 6000, 8000], k=support.DEFAULT_K),
    "paper": dict(num_samples=100_000, sampling_steps=[250, 100, 50], imbalance=10.0,
                  checkpoints=[2500, 5000, 10000, 20000, 50000, 100000], k=support.DEFAULT_K),
}


def validate(cfg: Config) -> None:
    check_models_from(cfg)
    marks = list(cfg.checkpoints)
    if sorted(marks) != marks or len(set(marks)) != len(marks):
        raise InputError(f"checkpoints={','.join(map(str, marks))}: must be strictly increasing")


def _samplers(schedule, steps_list):
    """(name, schedule, net timesteps, solver) for every sampler variant."""
    full = np.arange(schedule.num_steps)
    out = [("DDPM T", schedule, full, DDPM()), ("DDIM T", schedule, full, DDIM())]
    for n in steps_list:
        if n >= schedule.num_steps:
            continue
        sub, kept = sampling_plan(schedule, n)
        out += [(f"DDPM T'={len(kept)}", sub, kept, DDPM()), (f"DDIM T'={len(kept)}", sub, kept, DDIM())]
    return out


def sampler_ablation(models, cfg, config_indices) -> dict:
    grid = models.grid
    rows = np.flatnonzero(np.isin(grid.config_index, config_indices))
    params = jax.tree.map(lambda v: v[rows], models.params)
    keys = grid.keys(sweeps.PHASE_SAMPLE)[rows]
    mixtures = mx.index(grid.mixtures(), rows)
    dim = grid.configs[0].mixture.dim
    confs = [grid.configs[c] for c in config_indices]
    oracle_mixtures = mx.stack([c.mixture for c in confs])
    out = {}
    for name, sched, kept, solver in _samplers(models.schedule, cfg.sampling_steps):
        # The last 10 sampling steps, whatever the plan (the study reads only the samples).
        common = dict(solver=solver, net_timesteps=kept, chunk_size=cfg.num_samples,
                      observers=paper_observers((0, min(10, sched.num_steps)), clock="index"),
                      models=Stacked())
        res = sample(models.network, sched, keys, cfg.num_samples, (dim,), params=params,
                     **common)
        rates = sweeps.hallucination_rates(res.x, mixtures, [cfg.k])[:, 0]
        # The exact denoiser is conditioned on the original timestep (net_timesteps), so it must
        # index the original schedule's constants, not the respaced one's.
        scheds = jax.tree.map(lambda a: np.broadcast_to(a, (len(confs),) + a.shape), models.schedule)
        ores = sample(ORACLE, sched, jax.vmap(jax.random.key)(np.arange(len(confs))),
                      cfg.num_samples, (dim,), params=(oracle_mixtures, scheds), **common)
        orates = sweeps.hallucination_rates(ores.x, oracle_mixtures, [cfg.k])[:, 0]
        out[name] = {}
        for i, c in enumerate(config_indices):
            sel = grid.config_index[rows] == c
            out[name][grid.configs[c].name] = {
                "rate": dict(sweeps.seed_summary(rates[sel]), per_seed=rates[sel].tolist()),
                "oracle_rate": float(orates[i]),
                "nonfinite": int(np.sum(~np.all(np.isfinite(res.x[sel]), axis=-1))),
            }
        print(f"[ablations] {name}: " + ", ".join(
            f"{n}: {100 * v['rate']['mean']:.2f}% (exact {100 * v['oracle_rate']:.2f}%)"
            for n, v in out[name].items()), flush=True)
    return out


def imbalance_ablation(source_cfg, cfg) -> dict:
    """Train and sample an imbalanced grid with the 2D source's settings."""
    size = source_cfg.grid_size
    w = mx.imbalanced_weights(size * size, cfg.imbalance, seed=0)
    mixture = mx.grid_2d("square", source_cfg.std, weights=w, size=size)
    conf = sweeps.Config(f"square {size}x{size} imbalanced x{cfg.imbalance:g}", mixture,
                         source_cfg.num_train)
    study = mixture_study.run_mixture_study([conf], source_cfg.replace(
        num_samples=cfg.num_samples, chunk_size=cfg.num_samples, curve_every=0))
    rates = sweeps.hallucination_rates(study.samples.x, study.grid.mixtures(), [cfg.k])[:, 0]
    counts = np.stack([np.asarray(support.mode_counts(x, mixture, cfg.k))[: size * size]
                       for x in study.samples.x])
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    corr = [float(np.corrcoef(s, w)[0, 1]) for s in share]
    return {"config": conf.name, "weights": w.tolist(),
            "rate": dict(sweeps.seed_summary(rates), per_seed=rates.tolist()),
            "oracle_rate": float(sweeps.hallucination_rates(study.oracle.x, mx.stack([mixture]),
                                                            [cfg.k])[0, 0]),
            "mode_share_vs_weight_corr": corr, "mode_share": share.tolist(),
            "_x": study.samples.x[0], "_mixture": mixture}


def training_length_ablation(source_cfg, cfg) -> dict:
    """Rate of one 1D mixture against training steps (sampled at each checkpoint)."""
    modes = source_cfg.modes
    conf = sweeps.Config("modes=" + ",".join(f"{m:g}" for m in modes), mx.mixture_1d(modes,
                         source_cfg.std), source_cfg.num_train)
    grid = sweeps.Grid([conf], list(source_cfg.seeds))
    schedule = mixture_study.schedule_from_config(source_cfg)
    network = make_mlp(1, source_cfg.width, 3, source_cfg.tied, num_timesteps=source_cfg.T,
                       compute_dtype=source_cfg.compute_dtype)
    steps = cfg.checkpoints[-1]
    train_cfg = mixture_study.train_config_from(source_cfg.replace(steps=steps))
    marks = set(cfg.checkpoints)
    rates = {}

    def on_chunk(state, step, _):
        if step in marks:
            res = sweeps.sample_grid(network, state.eval_params, schedule, grid, cfg.num_samples, (1,),
                                     chunk_size=cfg.num_samples)
            r = sweeps.hallucination_rates(res.x, grid.mixtures(), [cfg.k])[:, 0]
            rates[step] = dict(sweeps.seed_summary(r), per_seed=r.tolist())
            print(f"[ablations] step {step}: rate {100 * r.mean():.2f}%", flush=True)

    chunk = int(np.gcd.reduce(np.asarray(cfg.checkpoints)))
    sweeps.train_grid(network, schedule, train_cfg, grid, steps, chunk_steps=chunk,
                      progress=tr.print_progress(), on_chunk=on_chunk)
    return {"config": conf.name, "lr_schedule": source_cfg.lr_schedule,
            "by_step": {str(k): v for k, v in sorted(rates.items())}}


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    samplers, sources = {}, {}
    for path in model_sources(cfg, workdir):
        models = mixture_models.load_models(path)
        name = str(path).rstrip("/").split("/")[-1]
        sources[models.grid.configs[0].mixture.dim] = models
        picks = [0] if models.grid.configs[0].mixture.dim == 1 else list(range(len(models.grid.configs)))
        samplers[name] = sampler_ablation(models, cfg, picks)
    results = {"experiment": "ablations", "k": cfg.k, "samplers": samplers}
    figs = {}
    if 2 in sources:
        imb = imbalance_ablation(sources[2].config, cfg)
        figs["imbalanced"] = (imb.pop("_x"), imb.pop("_mixture"))
        results["imbalanced"] = imb
    if 1 in sources:
        results["training_length"] = training_length_ablation(sources[1].config, cfg)
    results["headline"] = _headline(results)
    results["provenance"] = wd.provenance()
    _figures(workdir, cfg, results, figs)
    arrays = {}
    if "imbalanced" in figs:
        arrays["imbalanced_samples_seed0"] = figs["imbalanced"][0]
    for conf, variants in results["headline"]["samplers"].items():
        arrays[f"sampler_rates__{conf}"] = np.asarray(list(variants.values()))
    wd.write_npz(workdir / "arrays.npz", **arrays)
    return STUDY.write_metrics(workdir, results)


def _headline(results) -> dict:
    head = {"samplers": {}}
    for src in results["samplers"].values():
        for variant, per_conf in src.items():
            for conf, v in per_conf.items():
                head["samplers"].setdefault(conf, {})[variant] = [v["rate"]["mean"], v["rate"]["std"],
                                                                 v["oracle_rate"]]
    if "imbalanced" in results:
        r = results["imbalanced"]
        head["imbalanced"] = {"rate": [r["rate"]["mean"], r["rate"]["std"]],
                              "oracle_rate": r["oracle_rate"],
                              "mode_share_vs_weight_corr": r["mode_share_vs_weight_corr"]}
    if "training_length" in results:
        head["training_length"] = {s: [v["mean"], v["std"]]
                                   for s, v in results["training_length"]["by_step"].items()}
    return head


def _figures(workdir, cfg, results, figs) -> None:
    head = results["headline"]
    confs = list(head["samplers"])
    fig, axes = plots.figure(ncols=len(confs) + 2, width=4.0, height=3.4)
    for ax, conf in zip(axes[0], confs):
        variants = list(head["samplers"][conf])
        vals = np.asarray([head["samplers"][conf][v] for v in variants])
        xs = np.arange(len(variants))
        ax.bar(xs - 0.2, 100 * vals[:, 0], 0.4, yerr=100 * vals[:, 1], label="trained net")
        ax.bar(xs + 0.2, 100 * vals[:, 2], 0.4, label="exact score")
        ax.set_xticks(xs, variants, rotation=45, fontsize=7)
        ax.set_ylabel("hallucination rate (%)")
        ax.set_title(conf, fontsize=9)
    axes[0, 0].legend(fontsize=7)
    ax = axes[0, len(confs)]
    if "imbalanced" in figs:
        x, mixture = figs["imbalanced"]
        inside = np.asarray(support.in_support(np.nan_to_num(x), mixture, cfg.k))
        plots.scatter_2d(ax, x, mixture, inside, results["imbalanced"]["config"])
    ax = axes[0, len(confs) + 1]
    if "training_length" in results:
        by = results["training_length"]["by_step"]
        plots.rate_curve(ax, [int(s) for s in by], [v["mean"] for v in by.values()],
                         [v["std"] for v in by.values()], "DDPM", "training steps")
        ax.set_title(results["training_length"]["config"], fontsize=9)
    wd.save_figure(fig, workdir / "fig11_ablations.png")


# ------------------------------------------------------------------------------------------
# Outputs: the summary section and the ledger claims (see mi_jax.studies.registry)
# ------------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list:
    h, pm, pct = metrics["headline"], report.pm, report.pct
    lines = ["## Sampler and training ablations (paper Fig. 11)", "",
             "| configuration | sampler | trained net | exact score |", "|---|---|---|---|"]
    for conf, variants in h["samplers"].items():
        for v, (mean, std, exact) in variants.items():
            lines.append(f"| {conf} | {v} | {pm(mean, std)} | {pct(exact)} |")
    if "imbalanced" in h:
        i = h["imbalanced"]
        lines += ["", f"Imbalanced grid: rate {pm(*i['rate'])} "
                  f"(exact score {pct(i['oracle_rate'])}); correlation of generated mode shares "
                  f"with the true weights, per seed: "
                  + ", ".join(f"{c:.2f}" for c in i["mode_share_vs_weight_corr"])]
    if "training_length" in h:
        lines += ["", "Rate vs training steps: " + ", ".join(
            f"{s}: {pct(v[0])}" for s, v in h["training_length"].items())]
    lines += ["", "![Fig. 11](ablations/fig11_ablations.png)", ""]
    return lines


# The control claim (mi_jax.studies.gmm1d) notes the strided samplers' exact-score rates.
STUDY = Study("ablations", Schema(metrics=("k", "samplers"),
                                  optional=("imbalanced", "training_length"),
                                  headline=("samplers",)),
              needs=("gmm1d", "gmm2d"), summary=summary_lines)
