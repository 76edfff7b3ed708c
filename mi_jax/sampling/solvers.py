"""Reverse-diffusion solvers: one step x_t -> x_{t-1} given the network's eps_hat.

A solver is a frozen (hashable) dataclass with `step(schedule, x, eps, t, key) -> x_prev`, where
t is the index into `schedule` (0 = the last reverse step) and `key` is this step's own key. It
holds no arrays, so it is a static argument of the jitted chain; the schedule (any T, respaced or
not) is a value. Write your own by following the same signature.

    >>> solver = DDPM("small")       # or DDPM() (fixed-large, the official choice), DDIM()
    >>> x_prev = solver.step(schedule, x_t, eps_hat, t, key)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mi_jax.diffusion.schedule import Schedule
from mi_jax.validation import check

DDPM_VARIANCES = ("large", "small")


@dataclasses.dataclass(frozen=True)
class DDPM:
    """Ancestral DDPM step. variance: 'large' (sigma_t^2 = beta_t, the official toy code's
    choice) or 'small' (the posterior variance). No noise is added at t = 0."""

    variance: str = "large"

    def __post_init__(self):
        check(self.variance in DDPM_VARIANCES, "variance", self.variance,
              f"must be one of {DDPM_VARIANCES}")

    def step(self, schedule: Schedule, x: jax.Array, eps: jax.Array, t: jax.Array,
             key: jax.Array) -> jax.Array:
        # Epsilon form of the posterior mean: no 1/sqrt(alpha_bar) factor, finite at every t.
        mean = schedule.sqrt_recip_alphas[t] * (x - schedule.eps_coef[t] * eps)
        sigma = (schedule.sigma_large if self.variance == "large" else schedule.sigma_small)[t]
        noise = jax.random.normal(key, x.shape, x.dtype)
        return mean + jnp.where(t > 0, sigma, 0.0) * noise


@dataclasses.dataclass(frozen=True)
class DDIM:
    """Deterministic DDIM step (eta = 0); `key` is unused."""

    def step(self, schedule: Schedule, x: jax.Array, eps: jax.Array, t: jax.Array,
             key: jax.Array) -> jax.Array:
        del key
        return schedule.sqrt_recip_alphas[t] * x + schedule.ddim_eps_coef[t] * eps


__all__ = ["DDPM", "DDIM"]
