"""Grids of models (mixture configurations x seeds) trained and sampled in one jitted call each.

A grid is flattened to M models; model m has a configuration (mixture, training-set size) and a
seed. Keys come from the seed alone (`jax.random.key(seed)`, then `fold_in` per phase), so all
configurations of one seed share initial weights and noise: differences between configurations
are not blurred by independent randomness (common random numbers). The same keys give the same
result whether a model is run inside a grid or alone (tested).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import sharding as shd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.diffusion.oracle import ORACLE
from mi_jax.diffusion.schedule import Schedule
from mi_jax.sampling.sampler import SampleResult, Stacked, sample
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
    """`train` for a stack of M models (one jitted call per chunk), optionally spread over a
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
    """Train every model of the grid (one jitted call per chunk). Returns (state, losses (M, S)).
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
                mesh=None, loop: str | None = None, **kwargs) -> SampleResult:
    """Sample every model of the grid; arrays have a leading model axis M (see train_grid: mesh).
    kwargs: those of `mi_jax.sample`."""
    return sample_models(network, params, schedule, grid.keys(PHASE_SAMPLE), num, shape, mesh,
                         loop, **kwargs)


def sample_models(network, params, schedule: Schedule, keys, num: int, shape: Sequence[int],
                  mesh=None, loop: str | None = None, **kwargs) -> SampleResult:
    """`sample(network, ..., params=params, models=Stacked(loop))` for a stack of M models with
    keys (M,), optionally spread over a device mesh (then the models are padded to a multiple of
    the device count, and the padding dropped)."""
    if mesh is None:
        return sample(network, schedule, keys, num, shape, params=params, models=Stacked(loop),
                      **kwargs)
    m = int(np.shape(keys)[0])
    params, keys = shd.shard_models((params, keys), mesh)
    res = sample(network, schedule, keys, num, shape, params=params, models=Stacked(loop),
                 **kwargs)
    return res.take_models(m)


def sample_oracle(mixtures: Sequence[mx.GaussianMixture], schedule: Schedule, seed: int, num: int,
                  loop: str | None = None, **kwargs) -> SampleResult:
    """The exact-score control for each mixture (one call per chunk over a stack of C exact
    models, `Stacked(loop)`); leading axis C. kwargs: those of `mi_jax.sample`."""
    stacked = mx.stack(list(mixtures))
    c = len(mixtures)
    schedules = jax.tree.map(lambda a: jnp.broadcast_to(a, (c,) + a.shape), schedule)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(c))
    return sample(ORACLE, schedule, keys, num, (stacked.dim,), params=(stacked, schedules),
                  models=Stacked(loop), **kwargs)


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


def finite_mean(values) -> float:
    """Mean of the finite entries; NaN (and no warning) when there is none, e.g. an AUROC over
    models none of which made a hallucination."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def seed_summary(values: np.ndarray) -> dict:
    """Mean, sample std (NaN for one seed) and min/max over the last axis (seeds), as lists."""
    values = np.asarray(values, np.float64)
    std = seed_std(values)
    return {"mean": values.mean(-1).tolist(), "std": std.tolist(),
            "min": values.min(-1).tolist(), "max": values.max(-1).tolist()}


def auto_mesh():
    """All local (or, after jax.distributed.initialize, global) devices when there are several."""
    return shd.models_mesh() if jax.device_count() > 1 else None
