"""Grids of models (mixture configurations x seeds) trained and sampled in one vmapped call each.

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


def train_grid(network, schedule: Schedule, config: tr.TrainConfig, grid: Grid, num_steps: int, *,
               state: tr.TrainState | None = None, chunk_steps: int = 500,
               progress: Callable | None = None, on_chunk: Callable | None = None):
    """Train every model of the grid (one vmapped call per chunk). Returns (state, losses (M, S))."""
    data = training_sets(grid)
    state = init_grid(network, config, grid) if state is None else state
    return tr.train(network, schedule, config, state, data, grid.num_train, num_steps,
                    chunk_steps=chunk_steps, stacked=True, progress=progress, on_chunk=on_chunk)


def sample_grid(network, params, schedule: Schedule, grid: Grid, num: int, shape: Sequence[int],
                **kwargs) -> SampleResult:
    """Sample every model of the grid; arrays have a leading model axis M."""
    return sample_network(network, params, schedule, grid.keys(PHASE_SAMPLE), num, shape,
                          stacked=True, **kwargs)


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
        return 1.0 - jnp.mean(inside.astype(jnp.float32), axis=-1)

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
