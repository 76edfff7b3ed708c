"""Observers: per-sample statistics kept while the reverse chain runs, never the trajectory.

An observer is a pytree (a registered frozen dataclass): its array fields (windows, thresholds,
region masks) are values, so changing them does not recompile; its other fields are static. It
has three pure methods, called inside the jitted `lax.scan` of `mi_jax.sampling.chain.reverse`:

    state  = obs.init(n, shape, dtype, num_steps)     # before the first reverse step
    state  = obs.update(state, view)                  # at every step, view: StepView
    output = obs.finalize(state)                      # after the last step (t = 0)

and a class attribute `sample_axis`: the axis of every output leaf that runs over samples
(None: the output does not, e.g. a few recorded trajectories), so the host driver can join
chunks. Observers compose: pass a dict {name: observer}; each output is returned under its name.

Timesteps: `view.t` is the index into the schedule being sampled (0 = last reverse step);
`view.t_train` is the timestep of the training schedule the network is conditioned on there
(equal to `t` unless the schedule is respaced). Window observers take `clock='train'` (windows in
training-schedule timesteps, whatever the number of sampling steps; the default) or
`clock='index'` (windows in sampling-step indices: the last k steps of any sampler).

A user observer needs only the same three methods and `sample_axis`, e.g. the final |x_t|:

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass(frozen=True)
    class FinalNorm:
        sample_axis = 0
        def init(self, n, shape, dtype, num_steps): return jnp.zeros((n,), dtype)
        def update(self, state, view): return jnp.linalg.norm(view.x_t.reshape(len(state), -1), axis=1)
        def finalize(self, state): return state
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.validation import check, check_int

QUANTITIES = ("x0", "xt", "eps")
CLOCKS = ("train", "index")


class StepView(NamedTuple):
    """What an observer sees at one reverse step, before the solver moves x_t to x_{t-1}.

    t: schedule index (int32 scalar); t_train: the training schedule's timestep at t; x_t, eps
    (the network's eps_hat) and x0 (x0_hat) have shape (n, *shape); eps_at: the network at t."""

    t: jax.Array
    t_train: jax.Array
    x_t: jax.Array
    eps: jax.Array
    x0: jax.Array
    # eps_at(x): the model's eps_hat at this step's timestep for any x of x_t's shape, for
    # observers that need derivatives of the network (JacobianTrace); None outside the chain.
    eps_at: Any = None

    def quantity(self, name: str) -> jax.Array:
        return {"x0": self.x0, "xt": self.x_t, "eps": self.eps}[name]


def _static(default=dataclasses.MISSING):
    return dataclasses.field(default=default, metadata=dict(static=True))


def _clock_time(view: StepView, clock: str) -> jax.Array:
    return view.t_train if clock == "train" else view.t


def _welford(mean, m2, value, count, in_window):
    """One Welford update of (mean, m2) where `in_window`; `count` = in-window steps seen before.

    m2 saturates at the float32 maximum: x0_hat scales like 1/sqrt(alpha_bar_t) (~1e24 at t = T-1
    for the official schedule), so a window deep in the noise has a variance float32 cannot hold.
    """
    delta = value - mean
    new_mean = mean + delta / (count + 1).astype(value.dtype)
    new_m2 = jnp.minimum(m2 + delta * (value - new_mean), jnp.finfo(value.dtype).max)
    return jnp.where(in_window, new_mean, mean), jnp.where(in_window, new_m2, m2)


class WindowStats(NamedTuple):
    """Output of `WindowVariance`: var (W, n), the variance over each window's steps averaged
    over dimensions (the paper's "Hal" for x0); var_regions (W, n, R) averaged over each region
    instead (None without regions)."""

    var: jax.Array
    var_regions: jax.Array | None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class WindowVariance:
    """Variance over the steps of each window [lo, hi) of x0_hat ('x0', the paper's trajectory
    variance), x_t ('xt') or eps_hat ('eps'), by a streaming (Welford) update.

    windows: int array (W, 2). regions: optional (R, *shape) non-negative weights (e.g. 0/1 image
    column masks): also report the variance averaged over each region. Build with
    `window_variance` for validated arguments."""

    windows: Any
    regions: Any = None
    quantity: str = _static("x0")
    clock: str = _static("train")
    sample_axis = 1

    def init(self, n, shape, dtype, num_steps):
        zeros = jnp.zeros((self.windows.shape[0], n) + tuple(shape), dtype)
        return jnp.zeros((self.windows.shape[0],), jnp.int32), zeros, zeros

    def update(self, state, view: StepView):
        count, mean, m2 = state
        value = view.quantity(self.quantity)
        lo, hi = self.windows[:, 0], self.windows[:, 1]
        tt = _clock_time(view, self.clock)
        inside = (tt >= lo) & (tt < hi)
        bshape = (-1,) + (1,) * value.ndim  # window axis first, broadcast over (n, *shape)
        mean, m2 = _welford(mean, m2, value[None], count.reshape(bshape), inside.reshape(bshape))
        return count + inside.astype(jnp.int32), mean, m2

    def finalize(self, state) -> WindowStats:
        count, _, m2 = state
        num_windows, n = m2.shape[:2]
        shape = m2.shape[2:]
        bshape = (-1, 1) + (1,) * len(shape)
        size = np.prod(shape) * count[:, None].astype(m2.dtype)  # mean over dims and steps
        var = jnp.sum(m2 / size.reshape(bshape), axis=tuple(range(2, m2.ndim)))  # divide first
        var = jnp.minimum(var, jnp.finfo(var.dtype).max)
        var_regions = None
        if self.regions is not None:
            regions = jnp.asarray(self.regions, m2.dtype)
            steps = count.astype(m2.dtype).reshape(-1, 1, 1)
            weights = regions.reshape(regions.shape[0], -1)
            weights = weights / jnp.sum(weights, axis=1, keepdims=True)
            var_r = jnp.einsum("wnd,rd->wnr", m2.reshape(num_windows, n, -1), weights) / steps
            var_regions = jnp.minimum(var_r, jnp.finfo(var_r.dtype).max)
        return WindowStats(var, var_regions)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RegionMeanVariance:
    """Variance over each window's steps of the weighted mean of x0_hat (or x_t, eps_hat) over
    each region: for 0/1 column masks, how much a column's total ink moves, whatever pixels it
    sits in. Where `WindowVariance` averages per-pixel variances (the paper's Hal, which a shape
    shifting a pixel already raises), this one sees only changes in the amount (a second shape
    appearing). Output (W, n, R). Build with `region_mean_variance`."""

    windows: Any
    regions: Any
    quantity: str = _static("x0")
    clock: str = _static("train")
    sample_axis = 1

    def init(self, n, shape, dtype, num_steps):
        zeros = jnp.zeros((self.windows.shape[0], n, self.regions.shape[0]), dtype)
        return jnp.zeros((self.windows.shape[0],), jnp.int32), zeros, zeros

    def update(self, state, view: StepView):
        count, mean, m2 = state
        value = view.quantity(self.quantity)
        weights = jnp.asarray(self.regions, value.dtype).reshape(self.regions.shape[0], -1)
        region_means = value.reshape(value.shape[0], -1) @ (weights / weights.sum(1, keepdims=True)).T
        tt = _clock_time(view, self.clock)
        inside = (tt >= self.windows[:, 0]) & (tt < self.windows[:, 1])
        mean, m2 = _welford(mean, m2, region_means[None], count.reshape(-1, 1, 1),
                            inside.reshape(-1, 1, 1))
        return count + inside.astype(jnp.int32), mean, m2

    def finalize(self, state) -> jax.Array:
        count, _, m2 = state
        return m2 / count.astype(m2.dtype).reshape(-1, 1, 1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PreemptiveFlag:
    """Pre-emptive detection: per sample, the first timestep (on the observer's clock) at which
    the running x0_hat variance over `window`'s steps so far (at least 2) exceeds `threshold`:
    the step at which generation could stop. -1 if never. Output (n,) int32.

    threshold: a scalar, or (with stacked models) one per model (M,)."""

    window: Any
    threshold: Any
    clock: str = _static("train")
    sample_axis = 0

    def init(self, n, shape, dtype, num_steps):
        zeros = jnp.zeros((n,) + tuple(shape), dtype)
        return jnp.int32(0), zeros, zeros, jnp.full((n,), -1, jnp.int32)

    def update(self, state, view: StepView):
        count, mean, m2, flag_t = state
        tt = _clock_time(view, self.clock)
        inside = (tt >= self.window[0]) & (tt < self.window[1])
        mean, m2 = _welford(mean, m2, view.x0, count, inside)
        count = count + inside.astype(jnp.int32)
        running = jnp.mean(m2, axis=tuple(range(1, m2.ndim))) / count
        newly = inside & (count >= 2) & (running > self.threshold)
        flag_t = jnp.where(newly & (flag_t < 0), tt, flag_t)
        return count, mean, m2, flag_t

    def finalize(self, state):
        return state[3]

    @property
    def windows(self):
        """(1, 2): the window, in the shape every windowed observer exposes."""
        return jnp.reshape(self.window, (1, 2))

    def stacked_axes(self):
        """vmap in_axes of this observer's leaves over a stack of models."""
        return dataclasses.replace(self, window=None,
                                   threshold=0 if jnp.ndim(self.threshold) else None)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Record:
    """Record x0_hat and x_t of the first `count` samples every `stride` schedule indices:
    output {'x0', 'xt'} -> (ceil(T / stride), count, *shape), slot s = index s * stride.
    (For plots; a whole trajectory of every sample is never kept.)"""

    count: int = _static()
    stride: int = _static(1)
    quantities: tuple = _static(("x0", "xt"))
    sample_axis = None

    def init(self, n, shape, dtype, num_steps):
        slots = -(-num_steps // self.stride)
        return {q: jnp.zeros((slots, self.count) + tuple(shape)) for q in self.quantities}

    def update(self, state, view: StepView):
        slot = view.t // self.stride
        keep = view.t % self.stride == 0
        return {q: buf.at[slot].set(jnp.where(keep, view.quantity(q)[: self.count], buf[slot]))
                for q, buf in state.items()}

    def finalize(self, state):
        return state


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FinalEpsNorm:
    """|eps_hat| at the last reverse step (t = 0), per sample: (n,)."""

    sample_axis = 0

    def init(self, n, shape, dtype, num_steps):
        return jnp.zeros((n,) + tuple(shape), dtype)

    def update(self, state, view: StepView):
        return view.eps

    def finalize(self, state):
        return jnp.sqrt(jnp.sum(state.reshape(state.shape[0], -1) ** 2, axis=-1))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class JacobianTrace:
    """Hutchinson estimate of tr(d eps_hat / d x_t) per sample, averaged over the steps inside
    `window`: (n,). Between modes the learned x0_hat(x_t) is steep (or, smoothed hard, flat), so
    the eps_hat Jacobian is far from its in-mode value: `detectors.curvature_score` turns the
    trace into a hallucination score. Per sample because the networks act on each
    row alone (block-diagonal Jacobian). Cost: one VJP of the network (then one pullback per
    probe) at each step inside
    the window, none outside (the window test is a `lax.cond` on the step, unbatched under vmap
    over models). Probe vectors are Rademacher, from fold_in(key(seed), t). Use `jacobian_trace`."""

    window: Any                     # (2,) int32 [lo, hi)
    seed: Any                       # int32 scalar
    probes: int = _static(1)
    clock: str = _static("train")
    sample_axis = 0

    @property
    def windows(self):  # (1, 2), as WindowVariance's, for the driver's window checks
        return jnp.reshape(self.window, (1, 2))

    def init(self, n, shape, dtype, num_steps):
        return jnp.zeros((), jnp.int32), jnp.zeros((n,), dtype)

    def update(self, state, view: StepView):
        count, total = state
        tt = _clock_time(view, self.clock)
        inside = (tt >= self.window[0]) & (tt < self.window[1])

        def estimate():
            key = jax.random.fold_in(jax.random.key(self.seed), view.t)

            _, pullback = jax.vjp(view.eps_at, view.x_t)  # reverse mode: custom-VJP nets work

            def one(k):
                v = jax.random.rademacher(k, view.x_t.shape, view.x_t.dtype)
                (vj,) = pullback(v)
                return jnp.sum((v * vj).reshape(v.shape[0], -1), axis=1)

            return jnp.mean(jax.vmap(one)(jax.random.split(key, self.probes)), axis=0)

        est = jax.lax.cond(inside, estimate, lambda: jnp.zeros_like(total))
        return count + inside.astype(jnp.int32), total + est

    def finalize(self, state):
        count, total = state
        return total / jnp.maximum(count, 1).astype(total.dtype)


# ------------------------------------------------------------------------------------------
# Validated constructors (host side: concrete values)
# ------------------------------------------------------------------------------------------


def windows_array(windows: Sequence, name: str = "windows") -> np.ndarray:
    """(W, 2) int32 of half-open windows [lo, hi) with 0 <= lo < hi."""
    arr = np.asarray(windows)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    check(arr.ndim == 2 and arr.shape[1] == 2 and arr.shape[0] >= 1, name,
          np.asarray(windows).tolist(), "must be (lo, hi) pairs")
    check(np.issubdtype(arr.dtype, np.integer) or bool(np.all(arr == np.round(arr))), name,
          arr.tolist(), "must be integers")
    arr = arr.astype(np.int64)
    check(bool(np.all(arr[:, 0] >= 0) & np.all(arr[:, 1] > arr[:, 0])), name, arr.tolist(),
          "must satisfy 0 <= lo < hi")
    return arr.astype(np.int32)


def regions_array(regions) -> np.ndarray:
    """(R, *shape) float32 region weights: finite, non-negative, each region with a positive sum
    (e.g. `shape_counter.column_masks`); `sample` checks *shape against the samples'."""
    arr = np.asarray(regions, np.float64)
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim >= 2 else arr[None]
    check(arr.ndim >= 2 and bool(np.all(np.isfinite(flat))) and bool(np.all(flat >= 0))
          and bool(np.all(flat.sum(1) > 0)), "regions", f"array of shape {arr.shape}",
          "must be (R, *shape) finite non-negative weights, each region with a positive sum")
    return arr.astype(np.float32)


def window_variance(windows, quantity: str = "x0", *, regions=None,
                    clock: str = "train") -> WindowVariance:
    """A validated `WindowVariance`. windows: one (lo, hi) or a list of them. regions: optional
    (R, *shape) finite non-negative weights, each region with a positive sum."""
    check(quantity in QUANTITIES, "quantity", quantity, f"must be one of {QUANTITIES}")
    check(clock in CLOCKS, "clock", clock, f"must be one of {CLOCKS}")
    return WindowVariance(jnp.asarray(windows_array(windows)),
                          None if regions is None else jnp.asarray(regions_array(regions)),
                          quantity, clock)


def region_mean_variance(windows, regions, quantity: str = "x0", *,
                         clock: str = "train") -> RegionMeanVariance:
    """A validated `RegionMeanVariance`. regions: (R, *shape) finite non-negative weights, each
    region with a positive sum (e.g. `shape_counter.column_masks`)."""
    check(quantity in QUANTITIES, "quantity", quantity, f"must be one of {QUANTITIES}")
    check(clock in CLOCKS, "clock", clock, f"must be one of {CLOCKS}")
    return RegionMeanVariance(jnp.asarray(windows_array(windows)),
                              jnp.asarray(regions_array(regions)), quantity, clock)


def preemptive_flag(window, threshold, *, clock: str = "train") -> PreemptiveFlag:
    """A validated `PreemptiveFlag`. threshold: finite, >= 0; a scalar or one per model."""
    check(clock in CLOCKS, "clock", clock, f"must be one of {CLOCKS}")
    arr = np.asarray(threshold, np.float64)
    check(arr.ndim <= 1 and bool(np.all(np.isfinite(arr))) and bool(np.all(arr >= 0)),
          "flag_threshold", threshold, "must be finite and >= 0 (a scalar or one per model)")
    return PreemptiveFlag(jnp.asarray(windows_array(window, "window")[0]),
                          jnp.asarray(arr, jnp.float32), clock)


def record(count: int, stride: int = 1, quantities=("x0", "xt")) -> Record:
    """A validated `Record`."""
    check_int(count, "record", low=1)
    check_int(stride, "record_stride", low=1)
    quantities = tuple(quantities)
    check(len(quantities) >= 1 and all(q in QUANTITIES for q in quantities), "quantities",
          quantities, f"must be a non-empty subset of {QUANTITIES}")
    return Record(count, stride, quantities)


OFFICIAL_WINDOW = (0, 10)  # the official filter: x0_hat over the last 10 reverse steps, t = 9..0


def paper_observers(windows=OFFICIAL_WINDOW, *, track=("x0",), record: int = 0,
                    record_stride: int = 1, flag_threshold=None, regions=None,
                    clock: str = "train") -> dict:
    """The paper's statistics as observers (what `sample` uses when given none), named as the
    studies read them from `SampleResult.observed`.

      'hal': x0_hat's variance over each window (`WindowStats`: var (W, n), with `regions` also
        var_regions (W, n, R)); `SampleResult.hal` is its first window. The default, (0, 10),
        is the official filter.
      'var_xt', 'var_eps': the same for x_t / eps_hat, for each of them in `track`.
      'eps_norm_last': |eps_hat| at the last reverse step.
      'flag_t': with `flag_threshold` (a scalar or one per stacked model), the pre-emptive flag
        on the first window.
      'trajectory': with `record` > 0, x0_hat and x_t of that many leading samples every
        `record_stride` steps.

    windows: one (lo, hi) or several, counted on `clock` ('train': training-schedule timesteps,
    the default everywhere; 'index': sampling steps, t = 0 the last).

    Example: `mj.sample(eps_fn, schedule, key, n, (2,), observers=mj.paper_observers(
    [(0, 10), (0, 5)], track=("x0", "eps")))`, then `res.observed["var_eps"].var[1]`."""
    wins = windows_array(windows)
    track = tuple(track)
    check(len(track) >= 1 and "x0" in track and all(q in QUANTITIES for q in track), "track",
          track, f"must hold 'x0' and optionally {QUANTITIES[1:]}")
    out = {"hal": window_variance(wins, "x0", regions=regions, clock=clock)}
    for q in track[1:]:
        out[f"var_{q}"] = window_variance(wins, q, clock=clock)
    out["eps_norm_last"] = FinalEpsNorm()
    if flag_threshold is not None:
        out["flag_t"] = preemptive_flag(wins[0], flag_threshold, clock=clock)
    if check_int(record, "record", low=0):
        out["trajectory"] = _record(record, record_stride)
    return out


_record = record  # paper_observers' `record` argument shadows the constructor


def stacked_axes(observers: dict) -> dict:
    """vmap in_axes for a dict of observers over a stack of models: 0 for the leaves that carry
    a model axis (an observer's `stacked_axes()`), None (shared) for every other."""
    return {name: obs.stacked_axes() if hasattr(obs, "stacked_axes") else None
            for name, obs in observers.items()}


def jacobian_trace(window, probes: int = 1, seed: int = 0, *,
                   clock: str = "train") -> JacobianTrace:
    """A validated `JacobianTrace` (the curvature score): window (lo, hi), `probes` Hutchinson
    probes per step (the estimate is exact for a Jacobian c * I whatever the probes)."""
    check(clock in CLOCKS, "clock", clock, f"must be one of {CLOCKS}")
    check_int(probes, "probes", low=1)
    check_int(seed, "seed", low=0, high=2**31 - 1)
    return JacobianTrace(jnp.asarray(windows_array(window, "window")[0]),
                         jnp.asarray(seed, jnp.int32), probes, clock)


__all__ = ["StepView", "WindowVariance", "WindowStats", "RegionMeanVariance", "PreemptiveFlag",
           "Record", "FinalEpsNorm", "window_variance", "region_mean_variance", "preemptive_flag",
           "record", "jacobian_trace", "paper_observers", "windows_array", "regions_array",
           "stacked_axes", "QUANTITIES", "CLOCKS", "OFFICIAL_WINDOW"]
