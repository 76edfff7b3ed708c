"""A mixture study end to end: train a grid of models, sample them and the exact-score control,
tabulate rates and detection, and save / load the trained models for later analyses.

The studies of `gmm1d`, `gmm2d` and `convergence` are built on `run_mixture_study`; the analyses
(detection, trajectories, score analysis, ablations) reload its models with
`mixture_models.load_models`.
A study config is any config with the `mi_jax.config.RECIPE` fields plus num_samples,
chunk_size, hal_window, train_chunk, k and the convergence-curve fields (`config.COMMON`).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import ledger
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.diffusion.schedule import Schedule
from mi_jax.evaluation import intervals
from mi_jax.sampling.observers import paper_observers
from mi_jax.sampling.sampler import SampleResult
from mi_jax.sweeps import (Config, Grid, auto_mesh, hallucination_rates, init_grid, sample_grid,
                           finite_mean, sample_oracle, seed_summary, train_grid)
from mi_jax.training import train as tr
from mi_jax.validation import check


@dataclasses.dataclass
class StudyResult:
    """Everything a mixture study produced, before experiment-specific analysis."""

    grid: Grid
    schedule: Schedule
    network: object
    params: object
    losses: np.ndarray          # (M, steps)
    samples: SampleResult       # leading axis M
    rates: np.ndarray           # (M, len(REPORTED_K))
    oracle: SampleResult        # leading axis C (one exact-score run per configuration)
    oracle_rates: np.ndarray    # (C, len(REPORTED_K))
    seconds: dict
    convergence: dict = dataclasses.field(default_factory=dict)  # see convergence_summary


def check_study_config(cfg, num_train: Sequence[int] = ()) -> None:
    """Cross-flag checks shared by the mixture experiments (single flags are checked when parsed)."""
    lo, hi = cfg.hal_window
    check(hi <= cfg.T, "hal_window", f"{lo},{hi}", f"must lie inside [0, T={cfg.T})")
    check(cfg.beta_start <= cfg.beta_end, "beta_start", cfg.beta_start,
          f"must be <= beta_end={cfg.beta_end}")
    check(cfg.focus_steps <= cfg.T, "focus_steps", cfg.focus_steps,
          f"must be <= T={cfg.T}")
    epochs = cfg.epochs
    if epochs:
        need = epochs * (max(num_train, default=0) // cfg.batch_size)
        check(cfg.steps >= need, "steps", cfg.steps,
              f"must be >= epochs x (largest training set // batch_size) = {need}")
    every = cfg.curve_every
    check(every > cfg.steps or every % cfg.train_chunk == 0, "curve_every", every,
          f"must be a multiple of train_chunk={cfg.train_chunk}")


def train_config_from(cfg) -> tr.TrainConfig:
    """The TrainConfig of a mixture study's config (any config with the `config.RECIPE` fields)."""
    return tr.TrainConfig(cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.steps,
                          focus_steps=cfg.focus_steps, focus_prob=cfg.focus_prob,
                          ema_decay=cfg.ema_decay, batch_order=cfg.batch_order, epochs=cfg.epochs,
                          jacobian_weight=cfg.jacobian_weight,
                          jacobian_t_max=cfg.jacobian_t_max,
                          between_weight=cfg.between_weight,
                          between_t_max=cfg.between_t_max)


def schedule_from_config(cfg) -> Schedule:
    from mi_jax.diffusion.schedule import linear_schedule

    return linear_schedule(cfg.T, cfg.beta_start, cfg.beta_end)


TRAIN_CHECKPOINT = tr.TRAIN_CHECKPOINT
SAMPLE_CHUNKS = "sample_chunks"  # finished sampler chunks of an unfinished study


CONVERGENCE_FILE = "convergence.json"


def convergence_point(network, params, schedule: Schedule, grid: Grid, num: int, k: float,
                      window, oracle_width: Sequence[float]) -> list:
    """Evaluate a stack of models mid-training: per model, `bridge_blur_report` of `num` fresh
    samples (bridge / blur rates, mode width against the exact sampler's, detection of bridges)."""
    from mi_jax.evaluation.mixture import bridge_blur_report

    res = sample_grid(network, params, schedule, grid, num, (grid.configs[0].mixture.dim,),
                      observers=paper_observers(window), chunk_size=num, mesh=auto_mesh())
    out = []
    for m in range(grid.num_models):
        c = int(grid.config_index[m])
        r = bridge_blur_report(res.x[m], res.hal[m], grid.configs[c].mixture, k, oracle_width[c])
        out.append({key: r[key] for key in ("hallucinated", "bridge", "blur", "width_vs_exact")}
                   | {"bridges_auroc": r["bridges"]["auroc"],
                      "bridges_removed_at_96_kept": r["bridges"]["removed_at_96_kept"]})
    return out


def _train_resumable(network, schedule, train_cfg, grid, cfg, checkpoint_dir, log):
    """train_grid with a checkpoint after every chunk in `checkpoint_dir` (see tr.train_resumable).

    cfg.curve_every > 0: every that many steps, also sample cfg.curve_samples per model and
    record a `convergence_point`; the curve is kept in `checkpoint_dir` (written before the
    checkpoint, so a resumed run recomputes a point it lost and keeps the ones it has).
    Returns (state, losses, curve)."""
    from mi_jax import workdir as wd

    every = int(cfg.curve_every)
    curve_file = None if checkpoint_dir is None else Path(checkpoint_dir) / CONVERGENCE_FILE
    curve = wd.read_json(curve_file)["points"] if curve_file and curve_file.exists() else []
    oracle_width = None
    if every:
        probe = sample_oracle([c.mixture for c in grid.configs], schedule, int(grid.seeds[0]),
                              cfg.curve_samples, chunk_size=cfg.curve_samples)
        oracle_width = [support.mode_width(probe.x[c], conf.mixture, cfg.k)
                        for c, conf in enumerate(grid.configs)]

    def run(state, on_chunk):
        def hook(st, step, losses):
            if every and step % every == 0:
                models = convergence_point(network, st.eval_params, schedule, grid,
                                           cfg.curve_samples, cfg.k,
                                           tuple(cfg.hal_window), oracle_width)
                curve[:] = [p for p in curve if p["step"] < step] + [
                    {"step": step, "models": models}]
                log(f"[convergence] step {step}: bridge "
                    f"{100 * np.mean([r['bridge'] for r in models]):.2f}%, blur "
                    f"{100 * np.mean([r['blur'] for r in models]):.2f}%, width/exact "
                    f"{finite_mean([r['width_vs_exact'] for r in models]):.2f}, AUROC vs bridges "
                    f"{finite_mean([r['bridges_auroc'] for r in models]):.3f}")
                if curve_file is not None:
                    wd.write_json(curve_file, {"every": every, "points": curve})
            on_chunk(st, step, losses)

        return train_grid(network, schedule, train_cfg, grid, cfg.steps, state=state,
                          chunk_steps=cfg.train_chunk, progress=tr.print_progress(),
                          on_chunk=hook, mesh=auto_mesh())

    state, losses = tr.train_resumable(run, init_grid(network, train_cfg, grid), checkpoint_dir,
                                       log)
    return state, losses, curve


def convergence_summary(curve: list, grid: Grid) -> dict:
    """Per configuration, the curve (mean/std over seeds per point) and whether training has
    converged by the study's own measure: the bridge rate over the last quarter of training
    changes by less than its seed spread (2 standard errors of the change)."""
    out = {}
    if not curve:
        return out
    last = curve[-1]["step"]
    quarter = [p for p in curve if p["step"] >= 0.75 * last]
    for c, conf in enumerate(grid.configs):
        rows = np.flatnonzero(grid.config_index == c)
        series = {key: [seed_summary([p["models"][m][key] for m in rows]) for p in curve]
                  for key in ("bridge", "blur", "width_vs_exact", "bridges_auroc")}
        entry = {"steps": [p["step"] for p in curve],
                 **{key: {"mean": [s["mean"] for s in v], "std": [s["std"] for s in v]}
                    for key, v in series.items()}}
        if len(quarter) >= 2:
            first = np.asarray([quarter[0]["models"][m]["bridge"] for m in rows])
            end = np.asarray([quarter[-1]["models"][m]["bridge"] for m in rows])
            change = end - first
            se = change.std(ddof=1) / np.sqrt(len(change)) if len(change) > 1 else 0.0
            entry["last_quarter"] = {"from_step": quarter[0]["step"], "to_step": last,
                                     "bridge_change": float(change.mean()),
                                     "bridge_change_se": float(se),
                                     "flat": bool(abs(change.mean()) <= max(2 * se, 1e-3))}
        out[conf.name] = entry
    return out


def run_mixture_study(configs: Sequence[Config], cfg, *, checkpoint_dir=None,
                      log=print) -> StudyResult:
    """Train every (configuration, seed) model in one jitted call per chunk, sample them all the
    same way, and sample the exact-score control for every configuration.

    `cfg` holds the common experiment options (steps, batch_size, lr, width, tied, T, beta_start,
    beta_end, num_samples, chunk_size, hal_window, train_chunk, seeds). With `checkpoint_dir`,
    training checkpoints after every chunk and sampling keeps every finished chunk; a rerun
    resumes from both and ends bit-identical to an uninterrupted run.
    """
    import time

    from mi_jax.nets import make_mlp
    from mi_jax.sampling.sampler import print_progress

    grid = Grid(list(configs), list(cfg.seeds))
    schedule = schedule_from_config(cfg)
    dim = configs[0].mixture.dim
    network = make_mlp(dim, cfg.width, 3, cfg.tied, num_timesteps=cfg.T,
                       input_bias=cfg.input_bias, compute_dtype=cfg.compute_dtype)
    train_cfg = train_config_from(cfg)
    seconds = {}
    log(f"training {grid.num_models} models ({len(grid.configs)} configurations x "
        f"{len(grid.seeds)} seeds) for {cfg.steps} steps, batch {cfg.batch_size}, "
        f"one jitted call per {cfg.train_chunk} steps")
    t0 = time.perf_counter()
    state, losses, curve = _train_resumable(network, schedule, train_cfg, grid, cfg,
                                            checkpoint_dir, log)
    seconds["train"] = time.perf_counter() - t0  # this sitting
    if checkpoint_dir is not None:  # every sitting (None: one ran before the clock was kept)
        seconds["train_total"] = tr.recorded_seconds(checkpoint_dir)
    common = dict(observers=paper_observers(cfg.hal_window), chunk_size=cfg.chunk_size)
    log(f"sampling {cfg.num_samples} per model ({cfg.T} steps, trajectory variance over "
        f"t in [{cfg.hal_window[0]}, {cfg.hal_window[1]}))")
    t0 = time.perf_counter()
    chunks = None if checkpoint_dir is None else Path(checkpoint_dir) / SAMPLE_CHUNKS
    if chunks is not None and chunks.is_dir():
        found = len(list(chunks.glob("*/chunk_*.npz")))
        log(f"resuming sampling with {found} finished chunk(s) from {chunks}")
    samples = sample_grid(network, state.eval_params, schedule, grid, cfg.num_samples, (dim,),
                          mesh=auto_mesh(), progress=print_progress("sample"),
                          resume_dir=None if chunks is None else chunks / "models", **common)
    seconds["sample"] = time.perf_counter() - t0
    rates = hallucination_rates(samples.x, grid.mixtures())
    t0 = time.perf_counter()
    oracle = sample_oracle([c.mixture for c in grid.configs], schedule, int(grid.seeds[0]),
                           cfg.num_samples, progress=print_progress("oracle"),
                           resume_dir=None if chunks is None else chunks / "oracle", **common)
    seconds["oracle"] = time.perf_counter() - t0
    oracle_rates = hallucination_rates(oracle.x, mx.stack([c.mixture for c in grid.configs]))
    if chunks is not None:  # everything is in memory now; a rerun resamples bit-identically
        shutil.rmtree(chunks, ignore_errors=True)
    return StudyResult(grid, schedule, network, state.eval_params, losses, samples, rates, oracle,
                       oracle_rates, seconds, convergence_summary(curve, grid))


def final_losses(losses: np.ndarray, last: int = 100) -> np.ndarray:
    """Each model's mean loss over its last `last` recorded steps (M,); a model that stopped at
    its own epoch budget inside a longer assembled run has NaN past it, which is skipped."""
    out = []
    for row in np.asarray(losses):
        done = row[np.isfinite(row)]
        out.append(done[-last:].mean() if done.size else np.nan)
    return np.asarray(out)


def rate_table(study: StudyResult, ks: Sequence[float] = support.REPORTED_K) -> list:
    """Per configuration: rates per seed, mean/std over seeds, and the exact-score control, per k."""
    per_cfg = study.grid.per_config(study.rates)  # (C, R, len(ks))
    rows = []
    for c, conf in enumerate(study.grid.configs):
        row = {"name": conf.name, "num_train": conf.num_train, "by_k": {}}
        for j, k in enumerate(ks):
            row["by_k"][f"{k:g}"] = {
                "per_seed": per_cfg[c, :, j].tolist(),
                **{key: val for key, val in seed_summary(per_cfg[c, :, j]).items()},
                "oracle": float(study.oracle_rates[c, j]),
                "true_distribution": float(support.true_outside_rate(conf.mixture, k)),
            }
        rows.append(row)
    return rows


def labels(study: StudyResult, k: float) -> np.ndarray:
    """True where a model's sample is hallucinated (outside every mode's k-sigma ball), (M, n)."""
    return hallucination_labels(study.samples.x, study.grid.mixtures(), k)


def hallucination_labels(x, mixtures: mx.GaussianMixture, k: float) -> np.ndarray:
    """`labels` of samples x (M, n, D) from models of the stacked mixtures (M per-model ones);
    a non-finite sample counts as hallucinated."""
    x = np.asarray(x)
    finite = np.all(np.isfinite(x), axis=-1)
    inside = np.asarray(jax.vmap(support.in_support, (0, 0, None))(
        jnp.asarray(np.where(finite[..., None], x, 0.0)), mixtures, k))
    return ~(inside & finite)


def detection_table(study: StudyResult, k: float) -> dict:
    """Trajectory variance as a hallucination detector, per configuration: AUROC and the paper's
    operating points per seed, with mean/std over seeds (NaN where a model made no hallucination)."""
    from mi_jax.detection.metrics import detection_summary

    positive = labels(study, k)
    per_model = [detection_summary(np.nan_to_num(study.samples.hal[m], posinf=np.finfo(np.float32).max),
                                   positive[m]) for m in range(study.grid.num_models)]
    table = {}
    for c, conf in enumerate(study.grid.configs):
        rows = [per_model[m] for m in np.flatnonzero(study.grid.config_index == c)]
        entry = {}
        for key in ("auroc", "removed_at_96_kept", "kept_at_95_removed"):
            vals = np.asarray([r[key] for r in rows], np.float64)
            ok = vals[np.isfinite(vals)]
            entry[key] = {"per_seed": vals.tolist(), **(seed_summary(ok) if len(ok) else
                                                       {"mean": float("nan"), "std": float("nan")})}
        entry["num_hallucinated"] = [r["num_positive"] for r in rows]
        table[conf.name] = entry
    return table


def bridge_table(study: StudyResult, k: float) -> dict:
    """Per configuration: hallucinations split into bridges and blur (`support.classify`), per
    seed with mean/std, the exact-score control's rates, the in-support mode width against the
    control's, and the trajectory variance as a detector of bridges (blur left out) and of every
    hallucination."""
    from mi_jax.evaluation.mixture import bridge_blur_report

    table = {}
    for c, conf in enumerate(study.grid.configs):
        oracle_labels = support.classify(study.oracle.x[c], conf.mixture, k)
        oracle_width = support.mode_width(study.oracle.x[c], conf.mixture, k)
        reports = [bridge_blur_report(study.samples.x[m], study.samples.hal[m], conf.mixture, k,
                                      oracle_width)
                   for m in np.flatnonzero(study.grid.config_index == c)]
        entry = {key: dict(seed_summary([r[key] for r in reports]),
                           per_seed=[r[key] for r in reports])
                 for key in ("hallucinated", "bridge", "blur", "width_vs_exact")}
        for which in ("bridges", "all"):
            for key in ("auroc", "removed_at_96_kept", "kept_at_95_removed"):
                vals = np.asarray([r[which][key] for r in reports], np.float64)
                ok = vals[np.isfinite(vals)]
                entry[f"{which}_{key}"] = {"per_seed": vals.tolist(), **(
                    seed_summary(ok) if len(ok) else {"mean": float("nan"), "std": float("nan")})}
        entry["num_bridges"] = [r["bridges"]["num_positive"] for r in reports]
        entry["oracle"] = {name: float(v) for name, v in
                           support.label_rates(oracle_labels).items()}
        entry["oracle_mode_width"] = oracle_width
        table[conf.name] = entry
    return table


def bridge_detection_counts(entry: dict, key: str, num_samples) -> tuple:
    """(counts, positives) of one configuration's bridge detection `key` (auroc or
    removed_at_96_kept) over its seeds, from a `bridge_table` entry as read back from
    metrics.json: counts are what `combined_detection_interval` pools."""
    vals = ledger.floats(entry[f"bridges_{key}"]["per_seed"])
    pos = [int(p) for p in entry["num_bridges"]]
    if key == "auroc":
        neg = [num_samples * (1 - h) for h in ledger.floats(entry["hallucinated"]["per_seed"])]
        ok = [i for i, v in enumerate(vals) if np.isfinite(v)]
        return ([vals[i] for i in ok], [pos[i] for i in ok], [neg[i] for i in ok]), sum(pos)
    return ledger.pooled_counts(vals, pos), sum(pos)


def combined_detection_interval(counts: list, key: str) -> tuple:
    """The 95 % counting interval of several configurations' `bridge_detection_counts`."""
    if key == "auroc":
        aucs, pos, neg = (sum((list(p[i]) for p in counts), []) for i in range(3))
        return intervals.mean_auroc_interval(aucs, pos, neg)
    return intervals.wilson(sum(p[0] for p in counts), sum(p[1] for p in counts))


MODELS_FILE = "models.npz"


def save_models(workdir, study: StudyResult) -> None:
    """Write the grid (mixtures, sizes, seeds, names) beside the training checkpoint, so other
    experiments can load the trained models with `load_models` without retraining."""
    from mi_jax.workdir import write_npz

    stacked = mx.stack([c.mixture for c in study.grid.configs])
    write_npz(Path(workdir) / MODELS_FILE, means=stacked.means, stds=stacked.stds,
              weights=stacked.weights, mask=stacked.mask,
              num_train=np.asarray([c.num_train for c in study.grid.configs]),
              names=np.asarray([c.name for c in study.grid.configs]),
              seeds=np.asarray(study.grid.seeds))
