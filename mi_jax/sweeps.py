"""Grids of models (mixture configurations x seeds) trained and sampled in one vmapped call each.

A grid is flattened to M models; model m has a configuration (mixture, training-set size) and a
seed. Keys come from the seed alone (`jax.random.key(seed)`, then `fold_in` per phase), so all
configurations of one seed share initial weights and noise: differences between configurations
are not blurred by independent randomness (common random numbers). The same keys give the same
result whether a model is run inside a grid or alone (tested).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import sharding as shd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.diffusion.oracle import ORACLE
from mi_jax.diffusion.schedule import Schedule
from mi_jax.sampling.ddpm import SampleResult, sample_network
from mi_jax.training import train as tr
from mi_jax.validation import check, check_int

PHASE_DATA, PHASE_INIT, PHASE_SAMPLE = 0, 1, 2


def seed_keys(seeds, *path: int) -> jax.Array:
    """One typed key per seed: key(seed) folded in with each element of `path` in turn (e.g. a
    phase, or a generation then a phase), so every phase of every model has its own stream."""

    def one(seed):
        key = jax.random.key(seed)
        for p in path:
            key = jax.random.fold_in(key, p)
        return key

    return jax.vmap(one)(jnp.asarray(seeds))


@dataclasses.dataclass(frozen=True)
class Config:
    """One configuration of a sweep: a named mixture and a training-set size."""

    name: str
    mixture: mx.GaussianMixture
    num_train: int


@dataclasses.dataclass
class Grid:
    """Configurations x seeds, flattened config-major to M = C x R models."""

    configs: list
    seeds: list

    def __post_init__(self):
        check(len(self.configs) >= 1, "configs", self.configs, "must not be empty")
        check(len(self.seeds) >= 1, "seeds", self.seeds, "must not be empty")
        for s in self.seeds:
            check_int(s, "seeds", low=0, high=2**31 - 1)
        check(len(set(self.seeds)) == len(self.seeds), "seeds", self.seeds, "must be distinct")
        for c in self.configs:
            check_int(c.num_train, "num_train", low=1)

    @property
    def num_models(self) -> int:
        return len(self.configs) * len(self.seeds)

    @property
    def config_index(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.configs)), len(self.seeds))

    @property
    def model_seeds(self) -> np.ndarray:
        return np.tile(np.asarray(self.seeds), len(self.configs))

    @property
    def num_train(self) -> np.ndarray:
        return np.asarray([self.configs[c].num_train for c in self.config_index])

    def mixtures(self) -> mx.GaussianMixture:
        """The mixture of every model, stacked (M, K, D)."""
        return mx.index(mx.stack([c.mixture for c in self.configs]), self.config_index)

    def keys(self, phase: int) -> jax.Array:
        return seed_keys(self.model_seeds, phase)

    def per_config(self, values: np.ndarray) -> np.ndarray:
        """Reshape a per-model array (M, ...) to (C, R, ...)."""
        return np.asarray(values).reshape((len(self.configs), len(self.seeds)) + values.shape[1:])


@jax.jit(static_argnums=(3, 4))
def _make_sets(mixtures, keys, n_valid, n_max, round_robin):
    return jax.vmap(lambda m, k, n: mx.sample_stratified(m, k, n_max, n, round_robin))(
        mixtures, keys, n_valid)


def training_sets(grid: Grid, round_robin: bool = False) -> jax.Array:
    """Each model's training set, padded to the largest size: (M, N_max, D). round_robin: rows
    cycle through the modes (the official order, for in-order batches; equal weights only)."""
    if round_robin:
        for conf in grid.configs:
            w = np.asarray(conf.mixture.weights)[np.asarray(conf.mixture.mask)]
            check(np.allclose(w, w[0]), "batch_order", "in_order",
                  f"needs equal mode weights (the official round-robin data); {conf.name} has "
                  "unequal ones")
    n_max = int(grid.num_train.max())
    return _make_sets(grid.mixtures(), grid.keys(PHASE_DATA), jnp.asarray(grid.num_train), n_max,
                      round_robin)


def init_grid(network, config: tr.TrainConfig, grid: Grid) -> tr.TrainState:
    init = jax.jit(jax.vmap(lambda k: tr.init_state(network, config, k)))
    return init(grid.keys(PHASE_INIT))


def train_models(network, schedule: Schedule, config: tr.TrainConfig, state: tr.TrainState,
                 data, n_valid, num_steps: int, *, mesh=None, on_chunk: Callable | None = None,
                 **kwargs):
    """`train` for a stack of M models (one vmapped call per chunk), optionally spread over a
    device mesh (`mi_jax.sharding.models_mesh()`): the model axis is padded to a multiple of the
    device count and the padding dropped from the results (and from what on_chunk sees)."""
    if mesh is None:
        return tr.train(network, schedule, config, state, data, n_valid, num_steps, stacked=True,
                        on_chunk=on_chunk, **kwargs)
    m = int(np.shape(n_valid)[0])
    state, data, n_valid = shd.shard_models((state, jnp.asarray(data), jnp.asarray(n_valid)), mesh)
    inner = None if on_chunk is None else (lambda s, step, l: on_chunk(shd.unpad(s, m), step, l[:m]))
    state, losses = tr.train(network, schedule, config, state, data, n_valid, num_steps,
                             stacked=True, on_chunk=inner, **kwargs)
    return shd.unpad(state, m), losses[:m]


def train_grid(network, schedule: Schedule, config: tr.TrainConfig, grid: Grid, num_steps: int, *,
               state: tr.TrainState | None = None, chunk_steps: int = 500,
               progress: Callable | None = None, on_chunk: Callable | None = None,
               mesh=None):
    """Train every model of the grid (one vmapped call per chunk). Returns (state, losses (M, S)).
    mesh: see `train_models`."""
    in_order = config.batch_order == "in_order"
    if in_order or config.epochs:
        check(int(grid.num_train.min()) >= config.batch_size, "batch_size", config.batch_size,
              f"must be <= the smallest training set ({int(grid.num_train.min())}) with in-order "
              "batches or an epoch budget (the official code runs no step then)")
    state = init_grid(network, config, grid) if state is None else state
    return train_models(network, schedule, config, state, training_sets(grid, in_order),
                        jnp.asarray(grid.num_train), num_steps, mesh=mesh, on_chunk=on_chunk,
                        chunk_steps=chunk_steps, progress=progress)


def sample_grid(network, params, schedule: Schedule, grid: Grid, num: int, shape: Sequence[int],
                mesh=None, **kwargs) -> SampleResult:
    """Sample every model of the grid; arrays have a leading model axis M (see train_grid: mesh)."""
    return sample_models(network, params, schedule, grid.keys(PHASE_SAMPLE), num, shape, mesh,
                         **kwargs)


def sample_models(network, params, schedule: Schedule, keys, num: int, shape: Sequence[int],
                  mesh=None, **kwargs) -> SampleResult:
    """`sample_network` for a stack of M models with keys (M,), optionally over a device mesh."""
    if mesh is None:
        return sample_network(network, params, schedule, keys, num, shape, stacked=True, **kwargs)
    m = int(np.shape(keys)[0])
    params, keys = shd.shard_models((params, keys), mesh)
    res = sample_network(network, params, schedule, keys, num, shape, stacked=True, **kwargs)
    return res.take_models(m)


def sample_oracle(mixtures: Sequence[mx.GaussianMixture], schedule: Schedule, seed: int, num: int,
                  **kwargs) -> SampleResult:
    """The exact-score control for each mixture (one vmapped call per chunk); leading axis C."""
    stacked = mx.stack(list(mixtures))
    c = len(mixtures)
    schedules = jax.tree.map(lambda a: jnp.broadcast_to(a, (c,) + a.shape), schedule)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(c))
    return sample_network(ORACLE, (stacked, schedules), schedule, keys, num,
                          (stacked.dim,), stacked=True, **kwargs)


@jax.jit
def _rates(x, mixtures, ks):
    def one(xm, m):
        finite = jnp.all(jnp.isfinite(xm), axis=-1)
        inside = jax.vmap(lambda k: support.in_support(jnp.where(finite[:, None], xm, 0.0), m, k)
                          & finite)(ks)
        return jnp.mean((~inside).astype(jnp.float32), axis=-1)

    return jax.vmap(one)(x, mixtures)


def hallucination_rates(x: np.ndarray, mixtures: mx.GaussianMixture,
                        ks: Sequence[float] = support.REPORTED_K) -> np.ndarray:
    """Hallucination rate per model and k: x (M, n, D), stacked mixtures (M, ...) -> (M, len(ks))."""
    return np.asarray(_rates(jnp.asarray(x), mixtures, jnp.asarray(ks, jnp.float32)))


def seed_std(values, axis: int = -1) -> np.ndarray:
    """Sample std (ddof=1) over seeds; NaN (JSON null, shown "(1 seed)") for a single seed,
    whose spread is unknown rather than 0."""
    values = np.asarray(values, np.float64)
    if values.shape[axis] > 1:
        return values.std(axis=axis, ddof=1)
    return np.full(np.delete(values.shape, axis % values.ndim), np.nan)


def seed_summary(values: np.ndarray) -> dict:
    """Mean, sample std (NaN for one seed) and min/max over the last axis (seeds), as lists."""
    values = np.asarray(values, np.float64)
    std = seed_std(values)
    return {"mean": values.mean(-1).tolist(), "std": std.tolist(),
            "min": values.min(-1).tolist(), "max": values.max(-1).tolist()}


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


def check_study_config(cfg: dict, num_train: Sequence[int] = ()) -> None:
    """Cross-flag checks shared by the mixture experiments (single flags are checked when parsed)."""
    lo, hi = cfg["hal_window"]
    check(hi <= cfg["T"], "--hal_window", f"{lo},{hi}", f"must lie inside [0, T={cfg['T']})")
    check(cfg["beta_start"] <= cfg["beta_end"], "--beta_start", cfg["beta_start"],
          f"must be <= --beta_end={cfg['beta_end']}")
    check(cfg.get("focus_steps", 0) <= cfg["T"], "--focus_steps", cfg.get("focus_steps"),
          f"must be <= --T={cfg['T']}")
    epochs = cfg.get("epochs", 0)
    if epochs:
        need = epochs * (max(num_train, default=0) // cfg["batch_size"])
        check(cfg["steps"] >= need, "--steps", cfg["steps"],
              f"must be >= --epochs x (largest training set // --batch_size) = {need}")
    every = cfg.get("curve_every", 0)
    check(every > cfg["steps"] or every % cfg["train_chunk"] == 0, "--curve_every", every,
          f"must be a multiple of --train_chunk={cfg['train_chunk']}")


# Training-recipe options added after the first work directories were written: absent keys
# mean the earlier behaviour, so those directories still load.
RECIPE_DEFAULTS = dict(focus_steps=0, focus_prob=0.5, ema_decay=0.0, batch_order="random",
                       epochs=0)


def train_config_from(cfg: dict) -> tr.TrainConfig:
    """The TrainConfig of a mixture experiment's config."""
    extra = {key: cfg.get(key, default) for key, default in RECIPE_DEFAULTS.items()}
    return tr.TrainConfig(cfg["batch_size"], cfg["lr"], cfg["lr_schedule"], cfg["steps"], **extra)


def schedule_from_config(cfg: dict) -> Schedule:
    from mi_jax.diffusion.schedule import linear_schedule

    return linear_schedule(cfg["T"], cfg["beta_start"], cfg["beta_end"])


TRAIN_CHECKPOINT = tr.TRAIN_CHECKPOINT
SAMPLE_CHUNKS = "sample_chunks"  # finished sampler chunks of an unfinished study


def auto_mesh():
    """All local (or, after jax.distributed.initialize, global) devices when there are several."""
    return shd.models_mesh() if jax.device_count() > 1 else None


CONVERGENCE_FILE = "convergence.json"


def convergence_point(network, params, schedule: Schedule, grid: Grid, num: int, k: float,
                      window, oracle_width: Sequence[float]) -> list:
    """Evaluate a stack of models mid-training: per model, `bridge_blur_report` of `num` fresh
    samples (bridge / blur rates, mode width against the exact sampler's, detection of bridges)."""
    from mi_jax.evaluation.mixture import bridge_blur_report

    res = sample_grid(network, params, schedule, grid, num, (grid.configs[0].mixture.dim,),
                      window=window, chunk_size=num, mesh=auto_mesh())
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

    cfg["curve_every"] > 0: every that many steps, also sample cfg["curve_samples"] per model and
    record a `convergence_point`; the curve is kept in `checkpoint_dir` (written before the
    checkpoint, so a resumed run recomputes a point it lost and keeps the ones it has).
    Returns (state, losses, curve)."""
    from mi_jax import workdir as wd

    every = int(cfg.get("curve_every", 0))
    curve_file = None if checkpoint_dir is None else Path(checkpoint_dir) / CONVERGENCE_FILE
    curve = wd.read_json(curve_file)["points"] if curve_file and curve_file.exists() else []
    oracle_width = None
    if every:
        probe = sample_oracle([c.mixture for c in grid.configs], schedule, int(grid.seeds[0]),
                              cfg["curve_samples"], chunk_size=cfg["curve_samples"])
        oracle_width = [support.mode_width(probe.x[c], conf.mixture, cfg["k"])
                        for c, conf in enumerate(grid.configs)]

    def run(state, on_chunk):
        def hook(st, step, losses):
            if every and step % every == 0:
                models = convergence_point(network, st.eval_params, schedule, grid,
                                           cfg["curve_samples"], cfg["k"],
                                           tuple(cfg["hal_window"]), oracle_width)
                curve[:] = [p for p in curve if p["step"] < step] + [
                    {"step": step, "models": models}]
                log(f"[convergence] step {step}: bridge "
                    f"{100 * np.mean([r['bridge'] for r in models]):.2f}%, blur "
                    f"{100 * np.mean([r['blur'] for r in models]):.2f}%, width/exact "
                    f"{np.nanmean([r['width_vs_exact'] for r in models]):.2f}, AUROC vs bridges "
                    f"{np.nanmean([r['bridges_auroc'] for r in models]):.3f}")
                if curve_file is not None:
                    wd.write_json(curve_file, {"every": every, "points": curve})
            on_chunk(st, step, losses)

        return train_grid(network, schedule, train_cfg, grid, cfg["steps"], state=state,
                          chunk_steps=cfg["train_chunk"], progress=tr.print_progress(),
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


def run_mixture_study(configs: Sequence[Config], cfg: dict, *, checkpoint_dir=None,
                      log=print) -> StudyResult:
    """Train every (configuration, seed) model in one vmapped call per chunk, sample them all the
    same way, and sample the exact-score control for every configuration.

    `cfg` holds the common experiment options (steps, batch_size, lr, width, tied, T, beta_start,
    beta_end, num_samples, chunk_size, hal_window, train_chunk, seeds). With `checkpoint_dir`,
    training checkpoints after every chunk and sampling keeps every finished chunk; a rerun
    resumes from both and ends bit-identical to an uninterrupted run.
    """
    import time

    from mi_jax.nets import make_mlp
    from mi_jax.sampling.ddpm import print_progress

    grid = Grid(list(configs), list(cfg["seeds"]))
    schedule = schedule_from_config(cfg)
    dim = configs[0].mixture.dim
    network = make_mlp(dim, cfg["width"], 3, cfg["tied"], num_timesteps=cfg["T"])
    train_cfg = train_config_from(cfg)
    seconds = {}
    log(f"training {grid.num_models} models ({len(grid.configs)} configurations x "
        f"{len(grid.seeds)} seeds) for {cfg['steps']} steps, batch {cfg['batch_size']}, "
        f"one vmapped call per {cfg['train_chunk']} steps")
    t0 = time.perf_counter()
    state, losses, curve = _train_resumable(network, schedule, train_cfg, grid, cfg,
                                            checkpoint_dir, log)
    seconds["train"] = time.perf_counter() - t0
    common = dict(window=tuple(cfg["hal_window"]), chunk_size=cfg["chunk_size"])
    log(f"sampling {cfg['num_samples']} per model ({cfg['T']} steps, trajectory variance over "
        f"t in [{cfg['hal_window'][0]}, {cfg['hal_window'][1]}))")
    t0 = time.perf_counter()
    chunks = None if checkpoint_dir is None else Path(checkpoint_dir) / SAMPLE_CHUNKS
    if chunks is not None and chunks.is_dir():
        found = len(list(chunks.glob("*/chunk_*.npz")))
        log(f"resuming sampling with {found} finished chunk(s) from {chunks}")
    samples = sample_grid(network, state.eval_params, schedule, grid, cfg["num_samples"], (dim,),
                          mesh=auto_mesh(), progress=print_progress("sample"),
                          resume_dir=None if chunks is None else chunks / "models", **common)
    seconds["sample"] = time.perf_counter() - t0
    rates = hallucination_rates(samples.x, grid.mixtures())
    t0 = time.perf_counter()
    oracle = sample_oracle([c.mixture for c in grid.configs], schedule, int(grid.seeds[0]),
                           cfg["num_samples"], progress=print_progress("oracle"),
                           resume_dir=None if chunks is None else chunks / "oracle", **common)
    seconds["oracle"] = time.perf_counter() - t0
    oracle_rates = hallucination_rates(oracle.x, mx.stack([c.mixture for c in grid.configs]))
    if chunks is not None:  # everything is in memory now; a rerun resamples bit-identically
        shutil.rmtree(chunks, ignore_errors=True)
    return StudyResult(grid, schedule, network, state.eval_params, losses, samples, rates, oracle,
                       oracle_rates, seconds, convergence_summary(curve, grid))


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
    x = study.samples.x
    finite = np.all(np.isfinite(x), axis=-1)
    inside = np.asarray(jax.vmap(support.in_support, (0, 0, None))(
        jnp.asarray(np.where(finite[..., None], x, 0.0)), study.grid.mixtures(), k))
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


@dataclasses.dataclass
class TrainedModels:
    grid: Grid
    network: object
    params: object          # stacked (M, ...)
    schedule: Schedule
    config: dict            # the source experiment's config
    source: str


def load_models(workdir) -> TrainedModels:
    """The trained models of a finished mixture experiment (gmm1d / gmm2d work directory)."""
    from mi_jax import checkpoint
    from mi_jax.nets import make_mlp
    from mi_jax.workdir import CONFIG_FILE, METRICS_FILE, read_json

    workdir = Path(workdir)
    for name in (CONFIG_FILE, METRICS_FILE, MODELS_FILE, TRAIN_CHECKPOINT):
        check((workdir / name).exists(), "--models_from", str(workdir),
              f"holds no finished mixture experiment (missing {name})")
    cfg = read_json(workdir / CONFIG_FILE)
    with np.load(workdir / MODELS_FILE) as f:
        configs = []
        for c, name in enumerate(f["names"]):
            m = mx.GaussianMixture(f["means"][c], f["stds"][c], f["weights"][c], f["mask"][c])
            configs.append(Config(str(name), m, int(f["num_train"][c])))
        grid = Grid(configs, [int(s) for s in f["seeds"]])
    network = make_mlp(configs[0].mixture.dim, cfg["width"], 3, cfg["tied"],
                       num_timesteps=cfg["T"])
    train_cfg = train_config_from(cfg)
    state = checkpoint.load(workdir / TRAIN_CHECKPOINT, init_grid(network, train_cfg, grid))
    return TrainedModels(grid, network, state.eval_params, schedule_from_config(cfg), cfg,
                         str(workdir))
