"""The forward (noising) process and the epsilon-prediction loss."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mi_jax.diffusion.schedule import Schedule

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
"""eps_fn(x_t, t): x_t (batch, *shape), integer timesteps t (batch,) -> epsilon of x_t's shape."""


def _per_sample(coef: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """coef[t] reshaped to broadcast against x (batch, *shape)."""
    c = coef[t]
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
    return (_per_sample(schedule.sqrt_alphas_bar, t, x0) * x0
            + _per_sample(schedule.sqrt_one_minus_alphas_bar, t, x0) * noise)


def predict_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """x0_hat = x_t / sqrt(alpha_bar_t) - sqrt(1/alpha_bar_t - 1) eps (large but finite at big t)."""
    return (_per_sample(schedule.sqrt_recip_alphas_bar, t, x_t) * x_t
            - _per_sample(schedule.sqrt_recipm1_alphas_bar, t, x_t) * eps)


def eps_loss(eps_fn: EpsFn, schedule: Schedule, x0: jax.Array, key: jax.Array) -> jax.Array:
    """Unweighted epsilon MSE (mean over batch and dimensions), t ~ Uniform{0..T-1}."""
    k_t, k_noise = jax.random.split(key)
    t = jax.random.randint(k_t, (x0.shape[0],), 0, schedule.num_steps)
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    return jnp.mean((eps_fn(q_sample(schedule, x0, t, noise), t) - noise) ** 2)
