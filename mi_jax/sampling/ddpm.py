"""The host-side sampler: any number of samples, in fixed-size jitted chunks, with observers.

`sample(model, schedule, key, num, shape, ...)` runs `mi_jax.sampling.chain.reverse` (a solver
step plus observers, one `lax.scan`) chunk by chunk: bounded memory (chunk c uses
`fold_in(key, c)`), progress, resumable chunks on disk. One module-level jitted program serves
every call with the same model object, sizes, solver and observer kinds: windows, thresholds,
keys and schedules are values, so a second call does not retrace.

The model is a `mi_jax.nets.Network` with `params`, any `apply(params, x_t, t)` with `params`,
or a plain `eps_fn(x_t, t)` (e.g. `oracle_eps`). `stacked=True` samples a stack of M models
(params and keys with a leading M axis) in one vmapped call per chunk.

Observers are given either explicitly (`observers={name: observer}`, see
`mi_jax.sampling.observers`) or by the shorthands of the paper's statistics (`window(s)`, `track`,
`record`, `flag_threshold`, `regions`); shorthand windows count sampling-step indices (the last
k steps of whatever sampler runs), explicit observers default to training-schedule timesteps.
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
from mi_jax.sampling.solvers import DDIM, DDPM, solver_for
from mi_jax.validation import InputError, check, check_int, check_key, check_window

DEFAULT_WINDOW = (0, 10)  # the official filter: the last 10 reverse steps, t = 9..0
VARIANCES = ("large", "small", "ddim")
TRACKABLE = obs.QUANTITIES

# Names of the shorthand observers; SampleResult fills its legacy fields from them.
HAL, TRAJECTORY, FLAG, EPS_NORM = "hal", "trajectory", "flag_t", "eps_norm_last"


def default_net_batch() -> int:
    """Rows per network call when the caller does not say: on CPU, tiles of 2048 keep a
    width-128 MLP's activations in the L2 cache (10^4-sample chunks sample ~25 % faster, see
    BUILD_NOTES.md); accelerators want the whole chunk in one call."""
    return 2048 if jax.default_backend() == "cpu" else 0


@dataclasses.dataclass
class SampleResult:
    """Samples and their statistics (NumPy arrays on the host).

    x: (num, *shape). observed: {name: output} of every observer (see `mi_jax.sampling.observers`).
    From the shorthand observers: hal (num,) the trajectory variance of x0_hat over the first
    window; hal_windows (W, num) for every window; windows (W, 2); stats: 'var_xt', 'var_eps'
    (W, num), 'var_x0_regions' (W, num, R), 'flag_t' (num,), 'eps_norm_last' (num,) where observed;
    trajectory: {'x0', 'xt'} -> (S, R, *shape) recorded steps (slot s = index s * stride), or None.
    num_nonfinite: samples with a non-finite value (reported, never silently kept as finite).
    With stacked models every array has a leading model axis.
    """

    x: np.ndarray
    hal: np.ndarray | None
    hal_windows: np.ndarray | None
    windows: np.ndarray | None
    stats: dict
    trajectory: dict | None
    num_nonfinite: int
    seconds: float
    observed: dict = dataclasses.field(default_factory=dict)

    def take_models(self, m: int) -> "SampleResult":
        """The first m models of a stacked result (e.g. without a sharded run's padding)."""
        cut = lambda tree: jax.tree.map(lambda a: a[:m], tree)
        x = self.x[:m]
        bad = int(np.sum(~np.all(np.isfinite(x.reshape(x.shape[:2] + (-1,))), axis=-1)))
        return dataclasses.replace(
            self, x=x, hal=None if self.hal is None else self.hal[:m],
            hal_windows=None if self.hal_windows is None else self.hal_windows[:m],
            stats=cut(self.stats), trajectory=None if self.trajectory is None else cut(self.trajectory),
            observed=cut(self.observed), num_nonfinite=bad)


def normalise_windows(window, windows, num_steps: int) -> np.ndarray:
    """Validated shorthand windows (sampling-step indices) as an int array (W, 2)."""
    check(window is None or windows is None, "window", window,
          "give either window (one) or windows (several), not both")
    if windows is None:
        windows = [DEFAULT_WINDOW if window is None else window]
    check(len(windows) >= 1, "windows", windows, "must hold at least one (lo, hi) pair")
    return np.asarray([check_window(w, num_steps, "window") for w in windows], np.int32)


def shorthand_observers(num_steps: int, shape, *, window=None, windows=None, track=("x0",),
                        record: int = 0, record_stride: int = 1, flag_threshold=None,
                        regions=None, clock: str = "index") -> dict:
    """The paper's statistics as observers: 'hal' (x0_hat window variance, with `regions`),
    'var_xt' / 'var_eps' (if tracked), 'eps_norm_last', 'flag_t' (with `flag_threshold`, on the
    first window), 'trajectory' (with `record`).

    Windows are in sampling-step indices (clock='index', num_steps = the sampler's steps) or in
    training-schedule timesteps (clock='train', num_steps = the training schedule's T; `sample`
    then checks that each window holds a timestep the sampler visits)."""
    check(clock in obs.CLOCKS, "clock", clock, f"must be one of {obs.CLOCKS}")
    wins = normalise_windows(window, windows, num_steps)
    track = tuple(track)
    check(len(track) >= 1 and "x0" in track and all(q in TRACKABLE for q in track), "track",
          track, f"must hold 'x0' and optionally {TRACKABLE[1:]}")
    out = {HAL: obs.window_variance(wins, "x0", regions=_regions(regions, shape), clock=clock)}
    for q in track[1:]:
        out[f"var_{q}"] = obs.window_variance(wins, q, clock=clock)
    out[EPS_NORM] = obs.FinalEpsNorm()
    if flag_threshold is not None:
        out[FLAG] = obs.preemptive_flag(wins[0], flag_threshold, clock=clock)
    if check_int(record, "record", low=0):
        out[TRAJECTORY] = obs.record(record, record_stride)
    return out


def _regions(regions, shape):
    if regions is None:
        return None
    arr = np.asarray(regions, np.float32)
    check(arr.ndim == len(shape) + 1 and arr.shape[1:] == tuple(shape), "regions", arr.shape,
          f"must be (R, *{tuple(shape)})")
    check(bool(np.all(np.isfinite(arr)) and np.all(arr >= 0) and np.all(arr.reshape(len(arr), -1).sum(1) > 0)),
          "regions", "values", "must be finite, >= 0, and not all zero in any region")
    return arr


def _check_window_ranges(observers: dict, num_steps: int, train_steps: int) -> None:
    """Every observer window lies inside its clock's range: [0, T) of the sampler's steps
    ('index') or [0, the last network timestep + 1) ('train'); a window reaching past it would
    silently cover fewer steps than it says."""
    for name, o in observers.items():
        windows = getattr(o, "windows", None)
        if windows is None:
            windows = getattr(o, "window", None)
        if windows is None:
            continue
        arr = np.asarray(windows).reshape(-1, 2)
        clock = getattr(o, "clock", "train")
        top = train_steps if clock == "train" else num_steps
        check(bool(np.all(arr[:, 1] <= top)), name, arr.tolist(),
              f"windows must end at or before {top} (the {clock} clock's range here)")


def _check_train_windows(observers: dict, net_timesteps: np.ndarray) -> None:
    """Every 'train'-clock window must contain at least one timestep the sampler visits."""
    visited = np.asarray(net_timesteps)
    for name, o in observers.items():
        if getattr(o, "clock", None) != "train":
            continue
        for lo, hi in np.asarray(o.windows).reshape(-1, 2):
            check(bool(np.any((visited >= lo) & (visited < hi))), name, (int(lo), int(hi)),
                  f"window holds none of the sampled timesteps ({len(visited)} steps from "
                  f"{int(visited.min())} to {int(visited.max())})")


# ----------------------------------------------------------------------------------------
# The jitted chunk (one program per model object, sizes, solver and observer kinds)
# ----------------------------------------------------------------------------------------


def _eps_fn(model, params):
    from mi_jax.nets import Network

    if isinstance(model, Network):
        return model.eps_fn(params)
    if params is None:
        return model
    return lambda x, t: model(params, x, t)


def _chunk(model, n, shape, solver, net_batch, scalar_t, stacked, params, schedule, key,
           observers, net_timesteps):
    def one(p, k, o):
        return reverse(_eps_fn(model, p), schedule, k, n, shape, solver=solver, observers=o,
                       net_timesteps=net_timesteps, net_batch=net_batch, scalar_t=scalar_t)

    if stacked == "map":  # one model at a time: each runs the single-model program (CPU caches)
        axes = obs.stacked_axes(observers)

        def model_i(i):
            o = jax.tree.map(lambda ax, leaf: leaf if ax is None else leaf[i], axes, observers,
                             is_leaf=lambda v: v is None)
            return one(jax.tree.map(lambda a: a[i], params), key[i], o)

        return jax.lax.map(model_i, jnp.arange(key.shape[0]))
    if stacked:
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


def _result(x, observed: dict, observers: dict, seconds: float, sample_axis: int) -> SampleResult:
    flat = x.reshape(x.shape[: sample_axis + 1] + (-1,))
    num_bad = int((~np.all(np.isfinite(flat), axis=-1)).sum())
    if num_bad:
        warnings.warn(f"sampler produced {num_bad} sample(s) with non-finite values", RuntimeWarning)
    hal_windows = hal = windows = None
    stats = {}
    if isinstance(observed.get(HAL), obs.WindowStats):
        hal_windows = observed[HAL].var
        hal = np.take(hal_windows, 0, axis=sample_axis)
        windows = np.asarray(observers[HAL].windows)
        if observed[HAL].var_regions is not None:
            stats["var_x0_regions"] = observed[HAL].var_regions
    for q in TRACKABLE[1:]:
        if isinstance(observed.get(f"var_{q}"), obs.WindowStats):
            stats[f"var_{q}"] = observed[f"var_{q}"].var
    for name in (FLAG, EPS_NORM):
        if name in observed:
            stats[name] = observed[name]
    return SampleResult(x=x, hal=hal, hal_windows=hal_windows, windows=windows, stats=stats,
                        trajectory=observed.get(TRAJECTORY), num_nonfinite=num_bad,
                        seconds=seconds, observed=observed)


def _check_common(schedule, num, shape, chunk_size):
    check(isinstance(schedule, Schedule), "schedule", type(schedule).__name__, "must be a Schedule")
    num = check_int(num, "num", low=1)
    check(isinstance(shape, (tuple, list)) and len(shape) >= 1, "shape", shape,
          "must be one sample's shape, e.g. (2,)")
    shape = tuple(check_int(s, "shape", low=1) for s in shape)
    chunk_size = check_int(chunk_size, "chunk_size", low=1)
    return num, shape, min(chunk_size, num)


def sample(model, schedule: Schedule, key: jax.Array, num: int, shape: Sequence[int], *,
           params=None, stacked: bool = False, solver=None, observers: dict | None = None,
           window=None, windows=None, variance: str | None = None, track=None, record: int = 0,
           record_stride: int = 1, flag_threshold=None, regions=None,
           chunk_size: int = 10_000, net_timesteps=None, net_batch: int | None = None,
           scalar_t: bool | None = None, progress: Callable | None = None,
           resume_dir=None, model_loop: str = "vmap") -> SampleResult:
    """Draw `num` samples of `shape` from a diffusion model, with streaming statistics.

    Args:
      model: an `eps_fn(x_t, t)` (params None), an `apply(params, x_t, t)` with `params`, or a
        `mi_jax.nets.Network` with `params`. Keep the same object across calls: it is the key
        of the compiled program.
      schedule: the schedule sampled (respaced ones come with `net_timesteps`).
      key: a typed PRNG key, or (M,) keys with `stacked`. Chunk c uses `fold_in(key, c)`, so a
        result depends on `chunk_size` as well as on `key`.
      num, shape: number of samples (per model) and one sample's shape.
      params: the model's params (with a leading model axis when `stacked`).
      stacked: sample M stacked models in one vmapped call per chunk.
      model_loop: with `stacked`, "vmap" (default: one batched program over the models) or
        "map" (`lax.map`: the models one after another inside the same call, each at the
        single-model program's speed; on a 2-core CPU 1.47x faster for 16 paper MLPs, 0.92x for
        4; results equal up to float rounding).
      solver: `DDPM('large')` (default: fixed-large, the official toy sampler), `DDPM('small')`,
        `DDIM()`, or your own (see `mi_jax.sampling.solvers`). Shorthand: variance='large' /
        'small' / 'ddim'.
      observers: {name: observer} (see `mi_jax.sampling.observers`); outputs in
        `SampleResult.observed`. Default: the shorthands below.
      window, windows: shorthand: the trajectory variance of x0_hat over the half-open window
        [lo, hi) of sampling-step indices, t = 0 the last step (default (0, 10), the official
        filter), or several windows. track: also the window variance of 'xt' / 'eps'.
        record: record x0_hat and x_t of this many leading samples every `record_stride` steps.
        flag_threshold: pre-emptive flag on the first window (`stats['flag_t']`), a scalar or one
        per model. regions: (R, *shape) non-negative weights; adds `stats['var_x0_regions']`.
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
      SampleResult (NumPy arrays; a leading model axis when `stacked`).

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
    check_key(key, stacked=stacked)
    if solver is None:
        solver = solver_for("large" if variance is None else variance)
    else:
        check(variance is None, "variance", variance, "give either solver or variance, not both")
        check(callable(getattr(solver, "step", None)), "solver", solver,
              "must be a solver (mi_jax.DDPM(), mi_jax.DDIM() or an object with "
              "step(schedule, x, eps, t, key))")
    shorthands = dict(window=window, windows=windows, track=track, flag_threshold=flag_threshold,
                      regions=regions)
    if observers is None:
        observers = shorthand_observers(schedule.num_steps, shape, window=window, windows=windows,
                                        track=("x0",) if track is None else track, record=record,
                                        record_stride=record_stride,
                                        flag_threshold=flag_threshold, regions=regions)
    else:
        shorthands["record"] = record or None
        given = [k for k, v in shorthands.items() if v is not None]
        check(not given, given[0] if given else "", shorthands[given[0]] if given else "",
              "give either observers or the shorthands window/windows/track/record/"
              "flag_threshold/regions, not both")
        check(isinstance(observers, dict), "observers", type(observers).__name__,
              "must be a dict {name: observer}")
        for name, o in observers.items():
            check(all(hasattr(o, a) for a in ("init", "update", "finalize", "sample_axis")),
                  f"observers[{name!r}]", type(o).__name__, "must be an observer (init, update, "
                  "finalize, sample_axis; e.g. mi_jax.window_variance(...))")
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
    _check_window_ranges(observers, schedule.num_steps, int(ts_net[-1]) + 1)
    _check_train_windows(observers, ts_net)
    if stacked:
        models = int(key.shape[0])
        counts = {int(jnp.shape(a)[0]) for a in jax.tree.leaves(params) if jnp.ndim(a) >= 1}
        check(counts <= {models}, "params", f"stacks of {sorted(counts)} models",
              f"must stack as many models as the keys ({models})")
        fold = jax.vmap(jax.random.fold_in, (0, None))
    else:
        fold = jax.random.fold_in
    ts_net_dev = jnp.asarray(ts_net)

    check(model_loop in ("vmap", "map"), "model_loop", model_loop, "must be 'vmap' or 'map'")
    how = (model_loop if stacked else False)

    def chunk(c):
        return _chunk_jit(model, chunk_size, shape, solver, net_batch, bool(scalar_t), how,
                          params, schedule, fold(key, c), observers, ts_net_dev)

    sample_axis = 1 if stacked else 0
    axes = {name: None if o.sample_axis is None else o.sample_axis + sample_axis
            for name, o in observers.items()}
    axes["x"] = sample_axis
    store = _chunk_store(resume_dir, model=getattr(model, "name", getattr(model, "__name__", "")),
                         num=num, chunk_size=chunk_size, shape=shape, stacked=stacked,
                         solver=repr(solver), observers=_describe(observers),
                         key=shd.to_host(jax.random.key_data(key)).tolist(),
                         net_timesteps=ts_net.tolist())
    x, observed, seconds = _run_chunks(chunk, num, chunk_size, axes, progress, store)
    return _result(x, observed, observers, seconds, sample_axis)


def sample_network(network, params, schedule: Schedule, key: jax.Array, num: int,
                   shape: Sequence[int], **kwargs) -> SampleResult:
    """`sample(network, ..., params=params, **kwargs)`: a Network and its params."""
    return sample(network, schedule, key, num, shape, params=params, **kwargs)


def print_progress(label: str = "sample"):
    """A `progress` callback printing chunk, samples, rate and ETA."""

    def report(chunk, num_chunks, done, elapsed):
        rate = done / max(elapsed, 1e-9)
        eta = (elapsed / chunk) * (num_chunks - chunk)
        print(f"[{label}] chunk {chunk}/{num_chunks}  samples {done}  {rate:,.0f}/s  "
              f"ETA {eta:,.0f}s", flush=True)

    return report


__all__ = ["SampleResult", "sample", "sample_network", "shorthand_observers", "print_progress",
           "default_net_batch", "DEFAULT_WINDOW", "DDPM", "DDIM", "InputError"]
