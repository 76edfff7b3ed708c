"""The sampler: any number of samples of a diffusion model, in fixed-size jitted chunks, with
observers.

`sample(model, schedule, key, num, shape, ...)` runs `mi_jax.sampling.chain.reverse` (a solver
step plus observers, one `lax.scan`) chunk by chunk: bounded memory (chunk c uses
`fold_in(key, c)`), progress, resumable chunks on disk. One module-level jitted program serves
every call with the same model object, sizes, solver, model loop and observer kinds: windows,
thresholds, keys and schedules are values, so a second call does not retrace.

The model is a `mi_jax.nets.Network` with `params`, any `apply(params, x_t, t)` with `params`,
or a plain `eps_fn(x_t, t)` (e.g. `oracle_eps`). `models=Stacked()` samples a stack of M models
(params and keys with a leading M axis) in one call per chunk.

What is measured along the chain is given by observers only (`observers={name: observer}`, see
`mi_jax.sampling.observers`; `paper_observers()` builds the paper's statistics, and is the
default); every output is in `SampleResult.observed[name]`.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import sharding as shd
from mi_jax.diffusion.schedule import Schedule
from mi_jax.sampling import observers as obs
from mi_jax.sampling.chain import reverse
from mi_jax.sampling.solvers import DDPM
from mi_jax.validation import InputError, check, check_int, check_key

LOOPS = ("vmap", "map")
# On CPU, from this many models on, `lax.map` (one model after another) samples faster than vmap
# (the vmapped dots fall out of the cache): paper MLPs, 1 000 samples each, 2 cores, map / vmap
# 1.02x at 4, 1.33x at 8, 1.39x at 16 models (BUILD_NOTES.md 4.2).
MAP_MIN_MODELS = 8


def default_net_batch() -> int:
    """Rows per network call when the caller does not say: on CPU, tiles of 2048 keep a
    width-128 MLP's activations in the L2 cache (10^4-sample chunks sample ~25 % faster, see
    BUILD_NOTES.md); accelerators want the whole chunk in one call."""
    return 2048 if jax.default_backend() == "cpu" else 0


@dataclasses.dataclass(frozen=True)
class Single:
    """`sample(..., models=Single())` (the default): one model; `params` and `key` unstacked."""


@dataclasses.dataclass(frozen=True)
class Stacked:
    """`sample(..., models=Stacked(loop))`: M models stacked on a leading axis of `params` and
    `key` (and of per-model observer values such as `preemptive_flag` thresholds); every output
    gains a leading model axis.

    loop: how one jitted chunk runs over the models. 'vmap': one batched program (the models'
    matmuls become batched dots); 'map': `lax.map`, one model after another, each at the
    single-model program's speed. None: `auto_loop` ('map' on a CPU for MAP_MIN_MODELS models or
    more held on one device, else 'vmap'). Both give the same samples up to float rounding."""

    loop: str | None = None

    def __post_init__(self):
        check(self.loop is None or self.loop in LOOPS, "loop", self.loop,
              f"must be one of {LOOPS} or None (chosen by backend and model count)")


def auto_loop(num_models: int, on_one_device: bool = True) -> str:
    """The faster model loop of `Stacked(loop=None)`: 'map' on a CPU backend for
    `MAP_MIN_MODELS` models or more on one device (there the vmapped dots fall out of the cache),
    else 'vmap' (accelerators, few models, or models sharded over devices)."""
    cpu = jax.default_backend() == "cpu"
    return "map" if cpu and on_one_device and num_models >= MAP_MIN_MODELS else "vmap"


@dataclasses.dataclass
class SampleResult:
    """Samples and what the observers saw (NumPy arrays on the host).

    x: (num, *shape). observed: {name: output} of every observer (see
    `mi_jax.sampling.observers`; `paper_observers` names its outputs 'hal', 'var_xt', 'var_eps',
    'eps_norm_last', 'flag_t', 'trajectory'). num_nonfinite: samples with a non-finite value
    (reported, never silently kept as finite). With `Stacked` models every array has a leading
    model axis.
    """

    x: np.ndarray
    observed: dict
    num_nonfinite: int
    seconds: float

    @property
    def hal(self) -> np.ndarray:
        """The paper's Hal of every sample: `observed['hal'].var` at its first window, (num,)
        or (M, num). Raises KeyError when no 'hal' window-variance observer ran."""
        stats = self.observed.get("hal")
        if not isinstance(stats, obs.WindowStats):
            raise KeyError(f"hal: this result has no 'hal' window-variance observer (observed: "
                           f"{sorted(self.observed)}); read res.observed[...] instead")
        return np.take(stats.var, 0, axis=stats.var.ndim - 2)

    def take_models(self, m: int) -> "SampleResult":
        """The first m models of a stacked result (e.g. without a sharded run's padding)."""
        x = self.x[:m]
        bad = int(np.sum(~np.all(np.isfinite(x.reshape(x.shape[:2] + (-1,))), axis=-1)))
        return dataclasses.replace(self, x=x, num_nonfinite=bad,
                                   observed=jax.tree.map(lambda a: a[:m], self.observed))


# ----------------------------------------------------------------------------------------
# Checks of the observers against the chain they will see
# ----------------------------------------------------------------------------------------


def _check_observers(observers, shape, num_steps: int, net_timesteps: np.ndarray) -> None:
    """Each observer is one; each window lies inside its clock's range ([0, T) sampling steps
    for 'index', [0, last network timestep + 1) for 'train': a window reaching past it would
    silently cover fewer steps than it says) and a 'train' window holds a visited timestep;
    region weights match one sample's shape."""
    check(isinstance(observers, dict), "observers", type(observers).__name__,
          "must be a dict {name: observer}")
    for name, o in observers.items():
        check(all(hasattr(o, a) for a in ("init", "update", "finalize", "sample_axis")),
              f"observers[{name!r}]", type(o).__name__, "must be an observer (init, update, "
              "finalize, sample_axis; e.g. mi_jax.window_variance(...))")
        regions = getattr(o, "regions", None)
        if regions is not None:
            check(tuple(np.shape(regions)[1:]) == tuple(shape), f"observers[{name!r}].regions",
                  tuple(np.shape(regions)), f"must have shape (R, *{tuple(shape)}) for samples "
                  f"of shape {tuple(shape)}")
        windows = getattr(o, "windows", None)
        if windows is None:
            continue
        arr = np.asarray(windows).reshape(-1, 2)
        clock = getattr(o, "clock", "train")
        top = int(net_timesteps[-1]) + 1 if clock == "train" else num_steps
        check(bool(np.all(arr[:, 1] <= top)), name, arr.tolist(),
              f"windows must end at or before {top} (the {clock} clock's range here)")
        if clock != "train":
            continue
        for lo, hi in arr:
            check(bool(np.any((net_timesteps >= lo) & (net_timesteps < hi))), name,
                  (int(lo), int(hi)), f"window holds none of the sampled timesteps "
                  f"({len(net_timesteps)} steps from {int(net_timesteps.min())} to "
                  f"{int(net_timesteps.max())})")


# ----------------------------------------------------------------------------------------
# The jitted chunk (one program per model object, sizes, solver, model loop, observer kinds)
# ----------------------------------------------------------------------------------------


def _eps_fn(model, params):
    from mi_jax.nets import Network

    if isinstance(model, Network):
        return model.eps_fn(params)
    if params is None:
        return model
    return lambda x, t: model(params, x, t)


def _chunk(model, n, shape, solver, net_batch, scalar_t, loop, params, schedule, key, observers,
           net_timesteps):
    """One chunk of samples; loop: None (one model), 'vmap' or 'map' (a stack of models)."""
    def one(p, k, o):
        return reverse(_eps_fn(model, p), schedule, k, n, shape, solver=solver, observers=o,
                       net_timesteps=net_timesteps, net_batch=net_batch, scalar_t=scalar_t)

    if loop == "map":  # one model at a time: each runs the single-model program (CPU caches)
        axes = obs.stacked_axes(observers)

        def model_i(i):
            o = jax.tree.map(lambda ax, leaf: leaf if ax is None else leaf[i], axes, observers,
                             is_leaf=lambda v: v is None)
            return one(jax.tree.map(lambda a: a[i], params), key[i], o)

        return jax.lax.map(model_i, jnp.arange(key.shape[0]))
    if loop == "vmap":
        return jax.vmap(one, in_axes=(0, 0, obs.stacked_axes(observers)))(params, key, observers)
    return one(params, key, observers)


_chunk_jit = jax.jit(_chunk, static_argnums=(0, 1, 2, 3, 4, 5, 6))


# ----------------------------------------------------------------------------------------
# Host driver
# ----------------------------------------------------------------------------------------


def _chunk_store(resume_dir, **signature):
    if resume_dir is None:
        return None
    from mi_jax.checkpoint import ChunkStore

    return ChunkStore(resume_dir, signature)


def _describe(observers: dict) -> dict:
    """A JSON-able description of observers (kinds, static fields, values), for chunk stores."""
    out = {}
    for name, o in observers.items():
        leaves, treedef = jax.tree.flatten(o)
        out[name] = {"treedef": str(treedef), "values": [np.asarray(v).tolist() for v in leaves]}
    return out


def _flat(tree, arrays: bool = True) -> dict:
    """{'x' | 'observed/<name>/...': leaf} of a chunk's outputs (what a ChunkStore saves)."""
    def name(path):
        return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))))
                        for k in path)

    return {name(path): np.asarray(leaf) if arrays else None
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _run_chunks(chunk_fn: Callable, num: int, chunk_size: int, axes: dict,
                progress: Callable | None, store=None):
    """Call chunk_fn(c) for each chunk (or load it from `store`, saving new ones there), then join
    the chunks on the host along each output's sample axis (`axes`: name -> axis or None)."""
    num_chunks = -(-num // chunk_size)
    if store is not None:  # the outputs' structure, to rebuild chunks loaded from disk
        abstract = jax.eval_shape(chunk_fn, 0)
        treedef, paths = jax.tree.structure(abstract), list(_flat(abstract, arrays=False))
    parts = []
    start = time.perf_counter()
    for c in range(num_chunks):
        flat = None if store is None else store.load(c)
        if flat is None:
            out = shd.to_host(chunk_fn(c))
            if store is not None:
                store.save(c, _flat(out))
        else:
            check(set(flat) == set(paths), "resume_dir", str(store.directory),
                  f"chunk {c} holds other outputs than this call makes")
            out = jax.tree.unflatten(treedef, [flat[p] for p in paths])
        parts.append(out)
        if progress is not None:
            progress(c + 1, num_chunks, min((c + 1) * chunk_size, num), time.perf_counter() - start)

    def join(axis):
        def leaves(*values):
            if axis is None:
                return values[0]  # recorded samples come from the first chunk
            arr = np.concatenate(values, axis=axis)
            return np.take(arr, np.arange(num), axis=axis)
        return leaves

    x = join(axes["x"])(*[p.x for p in parts])
    observed = {name: jax.tree.map(join(axes[name]), *[p.observed[name] for p in parts])
                for name in parts[0].observed}
    return x, observed, time.perf_counter() - start


def _check_common(schedule, num, shape, chunk_size):
    check(isinstance(schedule, Schedule), "schedule", type(schedule).__name__, "must be a Schedule")
    num = check_int(num, "num", low=1)
    check(isinstance(shape, (tuple, list)) and len(shape) >= 1, "shape", shape,
          "must be one sample's shape, e.g. (2,)")
    shape = tuple(check_int(s, "shape", low=1) for s in shape)
    chunk_size = check_int(chunk_size, "chunk_size", low=1)
    return num, shape, min(chunk_size, num)


def _model_loop(models, key, params) -> str | None:
    """None for one model, else the stack's loop ('vmap' / 'map'), after checking that keys
    and params stack the same number of models."""
    check(isinstance(models, (Single, Stacked)), "models", models,
          "must be mi_jax.Single() or mi_jax.Stacked(loop='vmap' | 'map' | None)")
    stacked = isinstance(models, Stacked)
    check_key(key, stacked=stacked)
    if not stacked:
        return None
    num_models = int(key.shape[0])
    counts = {int(jnp.shape(a)[0]) for a in jax.tree.leaves(params) if jnp.ndim(a) >= 1}
    check(counts <= {num_models}, "params", f"stacks of {sorted(counts)} models",
          f"must stack as many models as the keys ({num_models})")
    if models.loop is not None:
        return models.loop
    devices = getattr(getattr(key, "sharding", None), "device_set", ())
    return auto_loop(num_models, on_one_device=len(devices) <= 1)


def sample(model, schedule: Schedule, key: jax.Array, num: int, shape: Sequence[int], *,
           params=None, solver=DDPM(), observers: dict | None = None, models=Single(),
           chunk_size: int = 10_000, net_timesteps=None, net_batch: int | None = None,
           scalar_t: bool | None = None, progress: Callable | None = None,
           resume_dir=None) -> SampleResult:
    """Draw `num` samples of `shape` from a diffusion model, with streaming statistics.

    Args:
      model: an `eps_fn(x_t, t)` (params None), an `apply(params, x_t, t)` with `params`, or a
        `mi_jax.nets.Network` with `params`. Keep the same object across calls: it is the key
        of the compiled program.
      schedule: the schedule sampled (respaced ones come with `net_timesteps`; see
        `mi_jax.sampling_plan`).
      key: a typed PRNG key, or (M,) keys with `Stacked` models. Chunk c uses `fold_in(key, c)`,
        so a result depends on `chunk_size` as well as on `key`.
      num, shape: number of samples (per model) and one sample's shape.
      params: the model's params (with a leading model axis with `Stacked` models).
      solver: `DDPM()` (default: fixed-large variance, the official toy sampler),
        `DDPM('small')`, `DDIM()`, or your own (see `mi_jax.sampling.solvers`).
      observers: {name: observer} (see `mi_jax.sampling.observers`); outputs in
        `SampleResult.observed`. None: `paper_observers()` (x0_hat's variance over training
        timesteps [0, 10), the official filter, and |eps_hat| at the last step); {}: none.
      models: `Single()` (default) or `Stacked(loop)`: M models stacked on a leading axis of
        params and keys, run in one call per chunk; loop 'vmap' or 'map', or None for the
        faster one here (`auto_loop`: 'map' on a CPU from MAP_MIN_MODELS models on one device,
        else 'vmap'; results equal up to float rounding).
      chunk_size: samples per jitted call (bounded memory).
      net_timesteps: (T,) the training-schedule timestep at each schedule index (strided
        sampling); identity by default.
      net_batch: rows per network call within a chunk (0: the whole chunk; None:
        `default_net_batch()`); changes speed and float rounding only.
      scalar_t: call the model with one scalar t per step (default: True for a Network, else
        the model's `accepts_scalar_t` attribute, else False).
      progress: callback(chunk, num_chunks, done, seconds), e.g. `print_progress()`.
      resume_dir: save every finished chunk there and reuse the chunks found there (see
        `mi_jax.checkpoint.ChunkStore`); keep it specific to one model and key.

    Returns:
      SampleResult (NumPy arrays; a leading model axis with `Stacked` models).

    Example:
      >>> res = mj.sample(mj.oracle_eps(mixture, schedule), schedule, jax.random.key(0), 10_000, (2,))
      >>> res.x.shape, res.hal.shape       # ((10000, 2), (10000,))
    """
    from mi_jax.nets import Network

    num, shape, chunk_size = _check_common(schedule, num, shape, chunk_size)
    if isinstance(model, Network):
        check(params is not None, "params", None, f"must be given to sample {model.name}")
    check(callable(model) or isinstance(model, Network), "model", type(model).__name__,
          "must be an eps_fn, an apply function or a Network")
    loop = _model_loop(models, key, params)
    check(not isinstance(solver, type) and callable(getattr(solver, "step", None)), "solver",
          solver, "must be a solver (mi_jax.DDPM(), mi_jax.DDIM() or an object with "
          "step(schedule, x, eps, t, key))")
    observers = obs.paper_observers() if observers is None else observers
    if scalar_t is None:
        scalar_t = isinstance(model, Network) or bool(getattr(model, "accepts_scalar_t", False))
    net_batch = default_net_batch() if net_batch is None else check_int(net_batch, "net_batch",
                                                                         low=0)
    ts_net = (np.arange(schedule.num_steps) if net_timesteps is None
              else np.asarray(net_timesteps)).astype(np.int32)
    check(ts_net.shape == (schedule.num_steps,), "net_timesteps", ts_net.shape,
          f"must hold one timestep per schedule step ({schedule.num_steps})")
    check(bool(ts_net[0] >= 0 and np.all(np.diff(ts_net) > 0)), "net_timesteps",
          ts_net.tolist(), "must be increasing and >= 0 (schedule step i is net timestep i)")
    _check_observers(observers, shape, schedule.num_steps, ts_net)
    fold = jax.random.fold_in if loop is None else jax.vmap(jax.random.fold_in, (0, None))
    ts_net_dev = jnp.asarray(ts_net)

    def chunk(c):
        return _chunk_jit(model, chunk_size, shape, solver, net_batch, bool(scalar_t), loop,
                          params, schedule, fold(key, c), observers, ts_net_dev)

    sample_axis = 0 if loop is None else 1
    axes = {name: None if o.sample_axis is None else o.sample_axis + sample_axis
            for name, o in observers.items()}
    axes["x"] = sample_axis
    # The signature leaves the model loop out: both loops give the same chunks up to rounding.
    store = _chunk_store(resume_dir, model=getattr(model, "name", getattr(model, "__name__", "")),
                         num=num, chunk_size=chunk_size, shape=shape, stacked=loop is not None,
                         solver=repr(solver), observers=_describe(observers),
                         key=shd.to_host(jax.random.key_data(key)).tolist(),
                         net_timesteps=ts_net.tolist())
    x, observed, seconds = _run_chunks(chunk, num, chunk_size, axes, progress, store)
    flat = x.reshape(x.shape[: sample_axis + 1] + (-1,))
    num_bad = int((~np.all(np.isfinite(flat), axis=-1)).sum())
    if num_bad:
        warnings.warn(f"sampler produced {num_bad} sample(s) with non-finite values", RuntimeWarning)
    return SampleResult(x=x, observed=observed, num_nonfinite=num_bad, seconds=seconds)


def print_progress(label: str = "sample"):
    """A `progress` callback printing chunk, samples, rate and ETA."""

    def report(chunk, num_chunks, done, elapsed):
        rate = done / max(elapsed, 1e-9)
        eta = (elapsed / chunk) * (num_chunks - chunk)
        print(f"[{label}] chunk {chunk}/{num_chunks}  samples {done}  {rate:,.0f}/s  "
              f"ETA {eta:,.0f}s", flush=True)

    return report


__all__ = ["SampleResult", "Single", "Stacked", "sample", "auto_loop", "print_progress",
           "default_net_batch", "MAP_MIN_MODELS", "InputError"]
