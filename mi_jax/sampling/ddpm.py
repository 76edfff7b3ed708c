"""Reverse-diffusion samplers with streaming trajectory statistics.

One reverse pass is a `lax.scan` over t = T-1 ... 0. Alongside the sample it keeps, per sample,
running (Welford) moments of x0_hat over one or more timestep windows [lo, hi): the paper's
trajectory variance ("Hal"), i.e. the variance over the window's steps of x0_hat, averaged over
dimensions. No trajectory is stored, so memory does not grow with T; recording a few whole
trajectories for plots is an explicit option.

Layers:
- `reverse_chunk`: pure, jittable, vmappable; one chunk of samples for one `eps_fn`.
- `sample` / `sample_network`: host drivers that run any number of samples in fixed-size chunks
  (bounded memory; chunk c uses `fold_in(key, c)`), for a function or for (stacked) network params.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.diffusion.forward import EpsFn
from mi_jax.diffusion.schedule import Schedule
from mi_jax.validation import InputError, check, check_int, check_window

DEFAULT_WINDOW = (0, 10)  # the official filter: the last 10 reverse steps, t = 9..0
VARIANCES = ("large", "small", "ddim")
TRACKABLE = ("x0", "xt", "eps")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static (shape-determining) sampler options. Hashable: a jit static argument.

    variance: 'large' (sigma_t^2 = beta_t, the official choice), 'small' (posterior variance),
        or 'ddim' (deterministic DDIM, eta = 0).
    track: quantities whose windowed variance is kept: 'x0' (always), 'xt', 'eps'.
    record: number of leading samples whose x0_hat and x_t are recorded every `record_stride` steps.
    scalar_t: call eps_fn with one scalar timestep per step instead of a (batch,) vector.
    flag: pre-emptive detection -- record, per sample, the first timestep of the first window at
        which the running x0_hat variance (over the window's steps so far, at least 2) exceeds
        `flag_threshold` ('flag_t', -1 if never): the step at which generation could stop.
    net_batch: evaluate eps_fn on at most this many samples at a time (0: the whole chunk in one
        call). Only the network is tiled; noise and statistics stay per chunk.
    """

    variance: str = "large"
    track: tuple = ("x0",)
    record: int = 0
    record_stride: int = 1
    scalar_t: bool = False
    flag: bool = False
    net_batch: int = 0

    def __post_init__(self):
        check(self.variance in VARIANCES, "variance", self.variance, f"must be one of {VARIANCES}")
        check(isinstance(self.track, tuple) and "x0" in self.track
              and all(q in TRACKABLE for q in self.track), "track", self.track,
              f"must be a tuple holding 'x0' and optionally {TRACKABLE[1:]}")
        check_int(self.record, "record", low=0)
        check_int(self.record_stride, "record_stride", low=1)
        check_int(self.net_batch, "net_batch", low=0)


def default_net_batch() -> int:
    """Rows per network call when the caller does not say: on CPU, tiles of 2048 keep a
    width-128 MLP's activations in the L2 cache (10^4-sample chunks sample ~25 % faster, see
    BUILD_NOTES.md); accelerators want the whole chunk in one call."""
    return 2048 if jax.default_backend() == "cpu" else 0


def _tiled(eps_fn: EpsFn, x: jax.Array, t: jax.Array, tile: int) -> jax.Array:
    """eps_fn(x, t) computed `tile` rows at a time (a lax.map over whole tiles, then the rest)."""
    n = x.shape[0]
    if not tile or n <= tile:
        return eps_fn(x, t)
    q = n // tile
    tiles = lambda a: a[: q * tile].reshape((q, tile) + a.shape[1:])
    if t.ndim == 0:
        head = jax.lax.map(lambda x_tile: eps_fn(x_tile, t), tiles(x))
    else:
        head = jax.lax.map(lambda xt: eps_fn(*xt), (tiles(x), tiles(t)))
    head = head.reshape((q * tile,) + head.shape[2:])
    if n == q * tile:
        return head
    return jnp.concatenate([head, eps_fn(x[q * tile:], t if t.ndim == 0 else t[q * tile:])])


def _welford(state, value, step_in_window, in_window):
    """One Welford update of (mean, m2) where `in_window`; `step_in_window` counts from 0.

    m2 saturates at the float32 maximum: x0_hat scales like 1/sqrt(alpha_bar_t) (~1e24 at t = T-1
    for the official schedule), so a window deep in the noise has a variance float32 cannot hold.
    """
    mean, m2 = state
    delta = value - mean
    new_mean = mean + delta / (step_in_window + 1).astype(value.dtype)
    new_m2 = jnp.minimum(m2 + delta * (value - new_mean), jnp.finfo(value.dtype).max)
    return jnp.where(in_window, new_mean, mean), jnp.where(in_window, new_m2, m2)


def reverse_chunk(eps_fn: EpsFn, schedule: Schedule, key: jax.Array, n: int, shape: Sequence[int],
                  windows: jax.Array, config: SamplerConfig = SamplerConfig(),
                  net_timesteps: jax.Array | None = None, flag_threshold=jnp.inf,
                  regions: jax.Array | None = None) -> dict:
    """Run the reverse chain for `n` samples of `shape` from x_T ~ N(0, I).

    windows: int array (W, 2) of half-open timestep windows [lo, hi) (values, so they can vary
        without recompiling). net_timesteps: the timestep the net is conditioned on at each schedule
        index (for strided schedules); identity by default.
    Returns a dict: 'x' (n, *shape); 'var_x0' (W, n) and likewise 'var_xt' / 'var_eps' if tracked;
    'eps_norm_last' (n,) the final step's |eps_hat|; 'traj_x0' / 'traj_xt' (S, R, *shape) if recording;
    'flag_t' (n,) with `config.flag`; with `regions` (R, *shape) weights (e.g. 0/1 masks of image
    columns), 'var_x0_regions' (W, n, R): the x0_hat variance averaged over each region instead.
    """
    shape = tuple(shape)
    num_steps = schedule.num_steps
    windows = jnp.asarray(windows, jnp.int32).reshape(-1, 2)
    lo, hi = windows[:, 0], windows[:, 1]
    bshape = (-1, 1) + (1,) * len(shape)  # window axis first, broadcast over (n, *shape)
    if net_timesteps is None:
        net_timesteps = jnp.arange(num_steps, dtype=jnp.int32)
    k_init, k_steps = jax.random.split(key)
    x_init = jax.random.normal(k_init, (n,) + shape)
    zeros = jnp.zeros((windows.shape[0], n) + shape, x_init.dtype)
    moments0 = {q: (zeros, zeros) for q in config.track}
    num_slots = -(-num_steps // config.record_stride)
    rec0 = {}
    if config.record:
        rec0 = {q: jnp.zeros((num_slots, config.record) + shape) for q in ("x0", "xt")}

    dims = tuple(range(2, 2 + len(shape)))

    def step(carry, t):
        x, moments, rec, _, flag_t = carry
        t_net = net_timesteps[t]
        eps = _tiled(eps_fn, x, t_net if config.scalar_t else jnp.full((n,), t_net, jnp.int32),
                     config.net_batch)
        x0 = schedule.sqrt_recip_alphas_bar[t] * x - schedule.sqrt_recipm1_alphas_bar[t] * eps
        in_window = ((t >= lo) & (t < hi)).reshape(bshape)
        k = (hi - 1 - t).reshape(bshape)
        values = {"x0": x0, "xt": x, "eps": eps}
        moments = {q: _welford(m, values[q], k, in_window) for q, m in moments.items()}
        if config.flag:
            count = (k[0] + 1).reshape(())  # steps of window 0 seen so far
            running = jnp.mean(moments["x0"][1][0], axis=tuple(range(1, 1 + len(shape)))) / count
            newly = in_window[0].reshape(()) & (count >= 2) & (running > flag_threshold)
            flag_t = jnp.where(newly & (flag_t < 0), t, flag_t)
        if config.record:
            slot = t // config.record_stride
            keep = t % config.record_stride == 0
            rec = {q: buf.at[slot].set(jnp.where(keep, values[q][: config.record], buf[slot]))
                   for q, buf in rec.items()}
        if config.variance == "ddim":
            x_prev = schedule.sqrt_recip_alphas[t] * x + schedule.ddim_eps_coef[t] * eps
        else:
            # Epsilon form of the posterior mean: no 1/sqrt(alpha_bar) factor, finite at every t.
            mean = schedule.sqrt_recip_alphas[t] * (x - schedule.eps_coef[t] * eps)
            sigma = (schedule.sigma_large if config.variance == "large" else schedule.sigma_small)[t]
            noise = jax.random.normal(jax.random.fold_in(k_steps, t), x.shape, x.dtype)
            x_prev = mean + jnp.where(t > 0, sigma, 0.0) * noise
        return (x_prev, moments, rec, eps, flag_t), None

    ts = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)
    carry0 = (x_init, moments0, rec0, jnp.zeros_like(x_init), jnp.full((n,), -1, jnp.int32))
    (x, moments, rec, eps_last, flag_t), _ = jax.lax.scan(step, carry0, ts)
    out = {"x": x}
    if config.flag:
        out["flag_t"] = flag_t
    for q, (_, m2) in moments.items():
        size = np.prod(shape) * (hi - lo)[:, None].astype(m2.dtype)  # mean over dims and steps
        var = jnp.sum(m2 / size.reshape(bshape), axis=dims)  # divide first: sums stay finite
        out[f"var_{q}"] = jnp.minimum(var, jnp.finfo(var.dtype).max)
    if regions is not None:
        regions = jnp.asarray(regions, m2.dtype)
        steps = (hi - lo).astype(m2.dtype).reshape(-1, 1, 1)
        per_dim = moments["x0"][1].reshape(windows.shape[0], n, -1)
        weights = regions.reshape(regions.shape[0], -1)
        weights = weights / jnp.sum(weights, axis=1, keepdims=True)
        var_r = jnp.einsum("wnd,rd->wnr", per_dim, weights) / steps
        out["var_x0_regions"] = jnp.minimum(var_r, jnp.finfo(var_r.dtype).max)
    out["eps_norm_last"] = jnp.sqrt(jnp.sum(eps_last.reshape(n, -1) ** 2, axis=-1))
    for q, buf in rec.items():
        out[f"traj_{q}"] = buf
    return out


# ----------------------------------------------------------------------------------------
# Host drivers: chunking, progress, results
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class SampleResult:
    """Samples and their statistics (NumPy arrays on the host).

    x: (num, *shape). hal: (num,) trajectory variance of x0_hat over the first window.
    hal_windows: (W, num) the same for every window; windows: (W, 2).
    stats: other per-sample statistics ('var_xt', 'var_eps' (W, num), 'eps_norm_last' (num,)).
    trajectory: {'x0', 'xt'} -> (S, R, *shape) recorded steps (slot s = timestep s * stride), or None.
    num_nonfinite: samples with a non-finite value (reported, never silently kept as finite).
    With stacked models every array has a leading model axis.
    """

    x: np.ndarray
    hal: np.ndarray
    hal_windows: np.ndarray
    windows: np.ndarray
    stats: dict
    trajectory: dict | None
    num_nonfinite: int
    seconds: float


def normalise_windows(window, windows, num_steps: int) -> np.ndarray:
    """Validated windows as an int array (W, 2); `windows` (several) wins over `window` (one)."""
    if windows is None:
        windows = [DEFAULT_WINDOW if window is None else window]
    check(len(windows) >= 1, "windows", windows, "must hold at least one (lo, hi) pair")
    return np.asarray([check_window(w, num_steps, "window") for w in windows], np.int32)


def _chunk_store(resume_dir, **signature):
    if resume_dir is None:
        return None
    from mi_jax.checkpoint import ChunkStore

    return ChunkStore(resume_dir, signature)


def _run_chunks(chunk_fn: Callable, num: int, chunk_size: int, sample_axis: int,
                progress: Callable | None, store=None) -> tuple[dict, float]:
    """Call chunk_fn(c) for each chunk (or load it from `store`, saving new ones there), trim the
    last one, concatenate on the host."""
    num_chunks = -(-num // chunk_size)
    parts: dict = {}
    start = time.perf_counter()
    for c in range(num_chunks):
        out = None if store is None else store.load(c)
        if out is None:
            out = jax.device_get(chunk_fn(c))
            if store is not None:
                store.save(c, out)
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
        if progress is not None:
            progress(c + 1, num_chunks, min((c + 1) * chunk_size, num), time.perf_counter() - start)
    merged = {}
    for name, values in parts.items():
        if name.startswith("traj_"):
            merged[name] = values[0]  # recorded samples come from the first chunk
            continue
        axis = sample_axis + (1 if name.startswith("var_") else 0)
        arr = np.concatenate(values, axis=axis)
        merged[name] = np.take(arr, np.arange(num), axis=axis)
    return merged, time.perf_counter() - start


def _result(merged: dict, windows: np.ndarray, seconds: float, sample_axis: int) -> SampleResult:
    x = merged.pop("x")
    flat = x.reshape(x.shape[: sample_axis + 1] + (-1,))
    bad = ~np.all(np.isfinite(flat), axis=-1)
    num_bad = int(bad.sum())
    if num_bad:
        warnings.warn(f"sampler produced {num_bad} sample(s) with non-finite values", RuntimeWarning)
    hal_windows = merged.pop("var_x0")
    traj = {k[len("traj_"):]: merged.pop(k) for k in list(merged) if k.startswith("traj_")}
    hal = np.take(hal_windows, 0, axis=sample_axis)
    return SampleResult(x=x, hal=hal, hal_windows=hal_windows, windows=windows, stats=merged,
                        trajectory=traj or None, num_nonfinite=num_bad, seconds=seconds)


def _check_common(schedule, num, shape, chunk_size):
    check(isinstance(schedule, Schedule), "schedule", type(schedule).__name__, "must be a Schedule")
    num = check_int(num, "num", low=1)
    check(isinstance(shape, (tuple, list)) and len(shape) >= 1, "shape", shape,
          "must be one sample's shape, e.g. (2,)")
    shape = tuple(check_int(s, "shape", low=1) for s in shape)
    chunk_size = check_int(chunk_size, "chunk_size", low=1)
    return num, shape, min(chunk_size, num)


def sample(eps_fn: EpsFn, schedule: Schedule, key: jax.Array, num: int, shape: Sequence[int], *,
           window=None, windows=None, variance: str = "large", track=("x0",), record: int = 0,
           record_stride: int = 1, chunk_size: int = 10_000, scalar_t: bool | None = None,
           net_timesteps=None, flag_threshold: float | None = None,
           progress: Callable | None = None, resume_dir=None, regions=None,
           net_batch: int | None = None) -> SampleResult:
    """Draw `num` samples with any `eps_fn(x_t, t)` (a trained net or `oracle_eps`).

    window: half-open timestep range [lo, hi) for the trajectory variance (default (0, 10), the
    official filter); t = 0 is the last reverse step. `windows` gives several at once.
    scalar_t: call eps_fn with a scalar t (one time embedding per step); default: the value of
    `eps_fn.accepts_scalar_t` if set, else False.
    flag_threshold: pre-emptive detection on the first window (see SamplerConfig.flag); adds
    `stats['flag_t']`. regions: (R, *shape) non-negative weights; adds `stats['var_x0_regions']`
    (W, num, R), the trajectory variance averaged over each region (e.g. one image column).
    Chunk c uses `fold_in(key, c)`, so a result depends on `chunk_size` as well as on `key`.
    resume_dir: save every finished chunk there and reuse the chunks found there (see
    `mi_jax.checkpoint.ChunkStore`); the caller keeps it specific to one eps_fn and key.
    net_batch: rows per eps_fn call within a chunk (0: the whole chunk; None:
    `default_net_batch()`); changes speed and float rounding only.
    """
    num, shape, chunk_size = _check_common(schedule, num, shape, chunk_size)
    wins = normalise_windows(window, windows, schedule.num_steps)
    if scalar_t is None:
        scalar_t = bool(getattr(eps_fn, "accepts_scalar_t", False))
    config = SamplerConfig(variance, tuple(track), record, record_stride, scalar_t,
                           flag_threshold is not None, _net_batch(net_batch))
    ts_net = None if net_timesteps is None else jnp.asarray(net_timesteps, jnp.int32)
    thr = _threshold(flag_threshold)
    regions = _regions(regions, shape)
    run = lambda k: _eps_chunk_jit(eps_fn, chunk_size, shape, config, schedule, k,
                                   jnp.asarray(wins), ts_net, thr, regions)
    store = _chunk_store(resume_dir, num=num, chunk_size=chunk_size, shape=shape,
                         windows=wins.tolist(), config=dataclasses.asdict(config),
                         key=np.asarray(jax.random.key_data(key)).tolist(),
                         net_timesteps=None if ts_net is None else np.asarray(ts_net).tolist(),
                         flag_threshold=np.asarray(thr).tolist(),
                         regions=None if regions is None else np.asarray(regions).tolist())
    merged, seconds = _run_chunks(lambda c: run(jax.random.fold_in(key, c)), num, chunk_size, 0,
                                  progress, store)
    return _result(merged, wins, seconds, 0)


def _net_batch(value) -> int:
    return default_net_batch() if value is None else check_int(value, "net_batch", low=0)


def _regions(regions, shape):
    if regions is None:
        return None
    arr = np.asarray(regions, np.float32)
    check(arr.ndim == len(shape) + 1 and arr.shape[1:] == tuple(shape), "regions", arr.shape,
          f"must be (R, *{tuple(shape)})")
    check(bool(np.all(np.isfinite(arr)) and np.all(arr >= 0) and np.all(arr.reshape(len(arr), -1).sum(1) > 0)),
          "regions", "values", "must be finite, >= 0, and not all zero in any region")
    return jnp.asarray(arr)


def _threshold(value) -> jax.Array:
    """A flag threshold: a scalar, or (with stacked models) one per model."""
    if value is None:
        return jnp.float32(jnp.inf)
    arr = np.asarray(value, np.float64)
    check(arr.ndim <= 1 and bool(np.all(np.isfinite(arr))) and bool(np.all(arr >= 0)),
          "flag_threshold", value, "must be finite and >= 0 (a scalar or one per model)")
    return jnp.asarray(arr, jnp.float32)


def _network_chunk(network, config, chunk_size, shape, stacked, params, schedule, key, windows,
                   net_timesteps, threshold, regions):
    def one(p, k, thr):
        return reverse_chunk(network.eps_fn(p), schedule, k, chunk_size, shape, windows, config,
                             net_timesteps, thr, regions)

    if stacked:
        return jax.vmap(one, in_axes=(0, 0, 0 if threshold.ndim else None))(params, key, threshold)
    return one(params, key, threshold)


_network_chunk_jit = jax.jit(_network_chunk, static_argnums=(0, 1, 2, 3, 4))


def _eps_chunk(eps_fn, chunk_size, shape, config, schedule, key, windows, ts_net, thr, regions):
    return reverse_chunk(eps_fn, schedule, key, chunk_size, shape, windows, config, ts_net, thr,
                         regions)


# One module-level program per (eps_fn, sizes, options): a second `sample` call with the same
# eps_fn object and shapes reuses it (windows, keys and schedules are values, not constants).
_eps_chunk_jit = jax.jit(_eps_chunk, static_argnums=(0, 1, 2, 3))


def sample_network(network, params, schedule: Schedule, key: jax.Array, num: int,
                   shape: Sequence[int], *, stacked: bool = False, window=None, windows=None,
                   variance: str = "large", track=("x0",), record: int = 0, record_stride: int = 1,
                   chunk_size: int = 10_000, net_timesteps=None,
                   flag_threshold: float | None = None,
                   progress: Callable | None = None, resume_dir=None,
                   regions=None, net_batch: int | None = None) -> SampleResult:
    """`sample` for a `mi_jax.nets.Network` and its params, compiled once per network and shape.

    stacked=True: `params` and `key` carry a leading model axis M and all M models sample in one
    vmapped call per chunk; every returned array then has a leading M axis.
    """
    num, shape, chunk_size = _check_common(schedule, num, shape, chunk_size)
    wins = jnp.asarray(normalise_windows(window, windows, schedule.num_steps))
    config = SamplerConfig(variance, tuple(track), record, record_stride, scalar_t=True,
                           flag=flag_threshold is not None, net_batch=_net_batch(net_batch))
    thr = _threshold(flag_threshold)
    regions = _regions(regions, shape)
    if stacked:
        check(jnp.ndim(key) == 1, "key", getattr(key, "shape", key), "must be a (M,) key array")
        fold = jax.vmap(jax.random.fold_in, (0, None))
    else:
        fold = jax.random.fold_in
    ts_net = jnp.arange(schedule.num_steps, dtype=jnp.int32) if net_timesteps is None \
        else jnp.asarray(net_timesteps, jnp.int32)

    def chunk(c):
        return _network_chunk_jit(network, config, chunk_size, shape, stacked, params, schedule,
                                  fold(key, c), wins, ts_net, thr, regions)

    sample_axis = 1 if stacked else 0
    store = _chunk_store(resume_dir, network=network.name, num=num, chunk_size=chunk_size,
                         shape=shape, stacked=stacked, windows=np.asarray(wins).tolist(),
                         config=dataclasses.asdict(config),
                         key=np.asarray(jax.random.key_data(key)).tolist(),
                         net_timesteps=np.asarray(ts_net).tolist(),
                         flag_threshold=np.asarray(thr).tolist(),
                         regions=None if regions is None else np.asarray(regions).tolist())
    merged, seconds = _run_chunks(chunk, num, chunk_size, sample_axis, progress, store)
    return _result(merged, np.asarray(wins), seconds, sample_axis)


def print_progress(label: str = "sample"):
    """A `progress` callback printing chunk, samples, rate and ETA."""

    def report(chunk, num_chunks, done, elapsed):
        rate = done / max(elapsed, 1e-9)
        eta = (elapsed / chunk) * (num_chunks - chunk)
        print(f"[{label}] chunk {chunk}/{num_chunks}  samples {done}  {rate:,.0f}/s  "
              f"ETA {eta:,.0f}s", flush=True)

    return report


__all__ = ["SamplerConfig", "SampleResult", "reverse_chunk", "sample", "sample_network",
           "print_progress", "default_net_batch", "DEFAULT_WINDOW", "InputError"]
