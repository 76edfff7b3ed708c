"""Mitigation during sampling: repair flagged samples instead of discarding them.

- `restart`: re-noise finished samples to t' with the forward process, x_t' ~ q(x_t' | x_0), and
  run the reverse chain again from t' with fresh noise (stochastic steps pull a sample off the
  segment between two modes; the paper's detector flags it first). Cost: t' + 1 network calls per
  repaired sample.
- `mode_guided`: an eps_fn pulled toward each sample's most probable mode below `t_max`, the mode
  chosen by the exact posterior p_t(k | x_t) of a Gaussian mixture (mixtures only):
  eps' = eps + w (eps_{k*} - eps), eps_{k*} the exact eps of that mode alone.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.diffusion.oracle import oracle_mode_eps
from mi_jax.diffusion.schedule import Schedule, truncate
from mi_jax.sampling.chain import ChainOutput, reverse
from mi_jax.validation import check, check_float, check_int

PAD_TO = 256  # restart batches are padded to a multiple of this: few distinct compiled sizes


def renoise(schedule: Schedule, x0: jax.Array, t: int, key: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) z, z ~ N(0, I)."""
    z = jax.random.normal(key, x0.shape, x0.dtype)
    return schedule.sqrt_alphas_bar[t] * x0 + schedule.sqrt_one_minus_alphas_bar[t] * z


@partial(jax.jit, static_argnames=("eps_fn", "t_restart", "scalar_t"))
def _restart(eps_fn, schedule, key, x0, observers, t_restart, scalar_t):
    k_noise, k_chain = jax.random.split(key)
    x_t = renoise(schedule, x0, t_restart, k_noise)
    return reverse(eps_fn, truncate(schedule, t_restart + 1), k_chain, x0.shape[0], x0.shape[1:],
                   observers=observers, scalar_t=scalar_t, x_start=x_t)


def restart(eps_fn, schedule: Schedule, key: jax.Array, x0, t_restart: int, *,
            observers: dict | None = None) -> ChainOutput:
    """Re-noise samples x0 (n, *shape) to `t_restart` and run the reverse chain from there to 0.

    observers see the restarted steps only (t = t_restart ... 0; a window in the last steps is
    recomputed, so a detector can re-score the repaired samples). The network is conditioned on
    the schedule's own timesteps (no respacing). Returns ChainOutput (x, observed) for the n
    samples."""
    x0 = jnp.asarray(x0)
    n = int(x0.shape[0])
    check(n >= 1, "x0", tuple(x0.shape), "must hold at least one sample")
    check_int(t_restart, "t_restart", low=1, high=schedule.num_steps - 1)
    padded = -(-n // PAD_TO) * PAD_TO
    x_pad = jnp.concatenate([x0, jnp.zeros((padded - n,) + x0.shape[1:], x0.dtype)])
    out = _restart(eps_fn, schedule, key, x_pad, dict(observers or {}), int(t_restart),
                   bool(getattr(eps_fn, "accepts_scalar_t", False)))
    observed = {name: jax.tree.map(lambda a: _cut_samples(a, padded, n), v)
                for name, v in out.observed.items()}
    return ChainOutput(out.x[:n], observed)


def _cut_samples(a, padded: int, n: int):
    """Drop the padding rows of an observer output, whichever axis holds the samples."""
    for axis, size in enumerate(a.shape):
        if size == padded:
            return jax.lax.slice_in_dim(a, 0, n, axis=axis)
    return a


def mode_guided(eps_fn, mixture, schedule: Schedule, weight: float, t_max: int):
    """eps_fn pulled toward each sample's most probable mode at every t < t_max:
    eps' = eps + w (eps_{k*} - eps), eps_{k*} the exact eps of the mode k* = argmax p_t(k | x_t)
    alone (`mixtures.mode_eps`; w = 0: eps_fn itself, w = 1: the mode's exact denoiser)."""
    check_float(weight, "guidance_weight", low=0.0, high=1.0)
    check_int(t_max, "guidance_t_max", low=1, high=schedule.num_steps)
    target = oracle_mode_eps(mixture, schedule)

    def guided(x_t, t):
        eps = eps_fn(x_t, t)
        pull = lambda: eps + weight * (target(x_t, t) - eps)  # noqa: E731
        if jnp.ndim(t) == 0:  # the sampler's scalar t: the exact mode is computed only below t_max
            return jax.lax.cond(t < t_max, pull, lambda: eps)
        on = (t < t_max).reshape((-1,) + (1,) * (x_t.ndim - 1))
        return jnp.where(on, pull(), eps)

    guided.accepts_scalar_t = bool(getattr(eps_fn, "accepts_scalar_t", False))
    return guided


def repair_flagged(eps_fn, schedule: Schedule, key: jax.Array, x, scores, threshold: float,
                   t_restart: int, rounds: int, score_observer: str, observers: dict) -> dict:
    """Restart every sample whose score exceeds `threshold` (or is not finite), re-score it on
    the restarted chain (`score_of(observed[score_observer])`), and restart those still
    flagged again, up to `rounds` times.

    Returns {'x': repaired samples (all n), 'scores': final scores, 'restarted': samples
    restarted per round, 'network_calls': extra network calls (sum over rounds of
    restarted * (t_restart + 1))}."""
    check_int(rounds, "rounds", low=1)
    x = np.array(x, copy=True)
    scores = np.array(scores, np.float64, copy=True)
    todo = np.flatnonzero(~(scores <= threshold))  # NaN / inf are flagged too
    restarted, calls = [], 0
    for r in range(rounds):
        if not len(todo):
            break
        out = restart(eps_fn, schedule, jax.random.fold_in(key, r), x[todo], t_restart,
                      observers=observers)
        x[todo] = np.asarray(out.x)
        new = np.asarray(score_of(out.observed[score_observer]), np.float64)
        scores[todo] = new
        restarted.append(int(len(todo)))
        calls += len(todo) * (t_restart + 1)
        todo = todo[~(new <= threshold)]
    return {"x": x, "scores": scores, "restarted": restarted, "network_calls": calls}


def score_of(output) -> np.ndarray:
    """A (n,) score from an observer output: a `WindowStats` (its first window's variance) or
    an array."""
    var = getattr(output, "var", None)
    return np.asarray(var[0] if var is not None else output)


__all__ = ["renoise", "restart", "mode_guided", "repair_flagged", "score_of"]
