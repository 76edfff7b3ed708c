"""The reverse chain as one pure function: a solver step plus any observers, in one `lax.scan`.

`reverse` runs t = T-1 ... 0 for one chunk of samples and one `eps_fn`; it is jittable and
vmappable (vmap it over stacked params and keys for a sweep). Memory does not grow with T:
observers keep statistics, not trajectories. `mi_jax.sampling.sampler.sample` is the host driver
(chunks, progress, resume) around it.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from mi_jax.diffusion.forward import EpsFn
from mi_jax.diffusion.schedule import Schedule
from mi_jax.sampling.observers import StepView
from mi_jax.sampling.solvers import DDPM
from mi_jax.validation import InputError


class ChainOutput(NamedTuple):
    """x: (n, *shape) final samples; observed: {name: that observer's finalized output}."""

    x: jax.Array
    observed: dict


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


def check_eps_fn(eps_fn: EpsFn, n: int, shape: Sequence[int], dtype=jnp.float32,
                 scalar_t: bool = False) -> None:
    """Fail in one line, before any scan is built, when eps_fn(x_t, t) does not return an array
    of x_t's shape and dtype (abstract evaluation: nothing is computed)."""
    x = jax.ShapeDtypeStruct((n,) + tuple(shape), dtype)
    t = jax.ShapeDtypeStruct(() if scalar_t else (n,), jnp.int32)
    try:
        out = jax.eval_shape(eps_fn, x, t)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 -- re-raised with the call that failed
        raise InputError(f"eps_fn: calling it on x_t {x.shape} {x.dtype.name} and t "
                         f"{t.shape} int32 failed: {type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}") from err
    got = getattr(out, "shape", None), getattr(getattr(out, "dtype", None), "name", None)
    if not isinstance(out, jax.ShapeDtypeStruct) or got != (x.shape, x.dtype.name):
        raise InputError(f"eps_fn: returned {type(out).__name__} {got[0]} {got[1]} for x_t "
                         f"{x.shape} {x.dtype.name}; expected an array of x_t's shape and dtype")


def reverse(eps_fn: EpsFn, schedule: Schedule, key: jax.Array, n: int, shape: Sequence[int], *,
            solver=DDPM(), observers: dict | None = None, net_timesteps: jax.Array | None = None,
            net_batch: int = 0, scalar_t: bool = False,
            x_start: jax.Array | None = None) -> ChainOutput:
    """Run the reverse chain for `n` samples of `shape` from x_T ~ N(0, I).

    Args:
      eps_fn: eps_fn(x_t, t) -> eps_hat of x_t's shape; t is (n,) int32, or a scalar with
        `scalar_t`.
      schedule: the schedule sampled (any T; respaced schedules come with `net_timesteps`).
      key: this chunk's key; x_T uses split(key)[0], step t's noise fold_in(split(key)[1], t).
      n, shape: samples and one sample's shape (static).
      solver: a `mi_jax.sampling.solvers` step (DDPM('large') by default).
      observers: {name: observer} (see `mi_jax.sampling.observers`).
      net_timesteps: (T,) int, the training-schedule timestep the net is conditioned on at each
        schedule index (for strided schedules); identity by default. Observers see it as
        `view.t_train`.
      net_batch: evaluate eps_fn on at most this many rows at a time (0: all n at once).
      x_start: (n, *shape) the state at the schedule's last index instead of x_T ~ N(0, I) (e.g.
        to continue a chain on a schedule cut to its first s steps, `truncate(schedule, s)`).

    Returns:
      ChainOutput(x (n, *shape), observed {name: output}).
    """
    shape = tuple(shape)
    observers = dict(observers or {})
    num_steps = schedule.num_steps
    if net_timesteps is None:
        net_timesteps = jnp.arange(num_steps, dtype=jnp.int32)
    check_eps_fn(eps_fn, min(n, net_batch) if net_batch else n, shape, scalar_t=scalar_t)
    k_init, k_steps = jax.random.split(key)
    x_init = jax.random.normal(k_init, (n,) + shape) if x_start is None else x_start
    states0 = {name: obs.init(n, shape, x_init.dtype, num_steps) for name, obs in observers.items()}

    def step(carry, t):
        x, states = carry
        t_train = net_timesteps[t]
        t_arg = t_train if scalar_t else jnp.full((n,), t_train, jnp.int32)
        eps = _tiled(eps_fn, x, t_arg, net_batch)
        x0 = schedule.sqrt_recip_alphas_bar[t] * x - schedule.sqrt_recipm1_alphas_bar[t] * eps
        view = StepView(t, t_train, x, eps, x0, lambda xx: eps_fn(xx, t_arg))
        states = {name: obs.update(states[name], view) for name, obs in observers.items()}
        x_prev = solver.step(schedule, x, eps, t, jax.random.fold_in(k_steps, t))
        return (x_prev, states), None

    ts = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)
    (x, states), _ = jax.lax.scan(step, (x_init, states0), ts)
    return ChainOutput(x, {name: obs.finalize(states[name]) for name, obs in observers.items()})


__all__ = ["ChainOutput", "reverse", "check_eps_fn"]
