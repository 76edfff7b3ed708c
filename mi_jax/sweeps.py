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
        return jax.vmap(lambda s: jax.random.fold_in(jax.random.key(s), phase))(
            jnp.asarray(self.model_seeds))

    def per_config(self, values: np.ndarray) -> np.ndarray:
        """Reshape a per-model array (M, ...) to (C, R, ...)."""
        return np.asarray(values).reshape((len(self.configs), len(self.seeds)) + values.shape[1:])


@jax.jit(static_argnums=3)
def _make_sets(mixtures, keys, n_valid, n_max):
    return jax.vmap(lambda m, k, n: mx.sample_stratified(m, k, n_max, n))(mixtures, keys, n_valid)


def training_sets(grid: Grid) -> jax.Array:
    """Each model's training set, padded to the largest size: (M, N_max, D)."""
    n_max = int(grid.num_train.max())
    return _make_sets(grid.mixtures(), grid.keys(PHASE_DATA), jnp.asarray(grid.num_train), n_max)


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
    state = init_grid(network, config, grid) if state is None else state
    return train_models(network, schedule, config, state, training_sets(grid),
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
    for name in ("x", "hal", "hal_windows"):
        setattr(res, name, getattr(res, name)[:m])
    res.stats = {k: v[:m] for k, v in res.stats.items()}
    if res.trajectory is not None:
        res.trajectory = {k: v[:m] for k, v in res.trajectory.items()}
    res.num_nonfinite = int(np.sum(~np.all(np.isfinite(res.x.reshape(m, num, -1)), axis=-1)))
    return res


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


def seed_summary(values: np.ndarray) -> dict:
    """Mean, sample std and min/max over the last axis (seeds), as plain lists."""
    values = np.asarray(values, np.float64)
    std = values.std(axis=-1, ddof=1) if values.shape[-1] > 1 else np.zeros(values.shape[:-1])
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


def check_study_config(cfg: dict) -> None:
    """Cross-flag checks shared by the mixture experiments (single flags are checked when parsed)."""
    lo, hi = cfg["hal_window"]
    check(hi <= cfg["T"], "--hal_window", f"{lo},{hi}", f"must lie inside [0, T={cfg['T']})")
    check(cfg["beta_start"] <= cfg["beta_end"], "--beta_start", cfg["beta_start"],
          f"must be <= --beta_end={cfg['beta_end']}")


def schedule_from_config(cfg: dict) -> Schedule:
    from mi_jax.diffusion.schedule import linear_schedule

    return linear_schedule(cfg["T"], cfg["beta_start"], cfg["beta_end"])


TRAIN_CHECKPOINT = tr.TRAIN_CHECKPOINT
SAMPLE_CHUNKS = "sample_chunks"  # finished sampler chunks of an unfinished study


def auto_mesh():
    """All local (or, after jax.distributed.initialize, global) devices when there are several."""
    return shd.models_mesh() if jax.device_count() > 1 else None


def _train_resumable(network, schedule, train_cfg, grid, cfg, checkpoint_dir, log):
    """train_grid with a checkpoint after every chunk in `checkpoint_dir` (see tr.train_resumable)."""
    def run(state, on_chunk):
        return train_grid(network, schedule, train_cfg, grid, cfg["steps"], state=state,
                          chunk_steps=cfg["train_chunk"], progress=tr.print_progress(),
                          on_chunk=on_chunk, mesh=auto_mesh())

    return tr.train_resumable(run, init_grid(network, train_cfg, grid), checkpoint_dir, log)


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
    train_cfg = tr.TrainConfig(cfg["batch_size"], cfg["lr"], cfg["lr_schedule"], cfg["steps"])
    seconds = {}
    log(f"training {grid.num_models} models ({len(grid.configs)} configurations x "
        f"{len(grid.seeds)} seeds) for {cfg['steps']} steps, batch {cfg['batch_size']}, "
        f"one vmapped call per {cfg['train_chunk']} steps")
    t0 = time.perf_counter()
    state, losses = _train_resumable(network, schedule, train_cfg, grid, cfg, checkpoint_dir, log)
    seconds["train"] = time.perf_counter() - t0
    common = dict(window=tuple(cfg["hal_window"]), chunk_size=cfg["chunk_size"])
    log(f"sampling {cfg['num_samples']} per model ({cfg['T']} steps, trajectory variance over "
        f"t in [{cfg['hal_window'][0]}, {cfg['hal_window'][1]}))")
    t0 = time.perf_counter()
    chunks = None if checkpoint_dir is None else Path(checkpoint_dir) / SAMPLE_CHUNKS
    if chunks is not None and chunks.is_dir():
        found = len(list(chunks.glob("*/chunk_*.npz")))
        log(f"resuming sampling with {found} finished chunk(s) from {chunks}")
    samples = sample_grid(network, state.params, schedule, grid, cfg["num_samples"], (dim,),
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
    return StudyResult(grid, schedule, network, state.params, losses, samples, rates, oracle,
                       oracle_rates, seconds)


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
    train_cfg = tr.TrainConfig(cfg["batch_size"], cfg["lr"], cfg["lr_schedule"], cfg["steps"])
    state = checkpoint.load(workdir / TRAIN_CHECKPOINT, init_grid(network, train_cfg, grid))
    return TrainedModels(grid, network, state.params, schedule_from_config(cfg), cfg, str(workdir))
