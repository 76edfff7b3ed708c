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


def focused_timesteps(num_steps: int, focus_steps: int, focus_prob: float) -> jax.Array:
    """A proposal q(t) over {0..T-1} that draws t from [0, focus_steps) with probability
    `focus_prob` and from all of {0..T-1} otherwise, as a probability table (T,).

    Used with `eps_loss(..., proposal=q)`, which weights each term by (1/T)/q(t): the expected
    loss (and gradient) is the uniform-t objective's, only its Monte Carlo variance changes. With
    the official schedule (T = 1000, beta up to 0.2) a sample is pure noise beyond t ~ 300, so
    uniform t spends most of a batch where the loss is ~0 and the modes' fine structure, decided
    at t < ~50, gets a few samples per batch.
    """
    t = jnp.arange(num_steps)
    focus = jnp.where(t < focus_steps, 1.0 / focus_steps, 0.0)
    return (1.0 - focus_prob) / num_steps + focus_prob * focus


def eps_loss(eps_fn: EpsFn, schedule: Schedule, x0: jax.Array, key: jax.Array,
             proposal: jax.Array | None = None) -> jax.Array:
    """Unweighted epsilon MSE (mean over batch and dimensions), t ~ Uniform{0..T-1}.

    proposal: a probability table q (T,) to draw t from instead (e.g. `focused_timesteps`); each
    sample's error is then weighted by (1/T)/q(t), so the expectation is unchanged (unbiased).
    """
    k_t, k_noise = jax.random.split(key)
    n = x0.shape[0]
    if proposal is None:
        t = jax.random.randint(k_t, (n,), 0, schedule.num_steps)
        weight = None
    else:
        # Inverse-CDF draw: one uniform per sample (categorical() would draw n x T Gumbels).
        cdf = jnp.cumsum(proposal)
        u = jax.random.uniform(k_t, (n,), maxval=cdf[-1])
        t = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), schedule.num_steps - 1)
        weight = (1.0 / schedule.num_steps) / proposal[t]
    noise = jax.random.normal(k_noise, x0.shape, x0.dtype)
    err = (eps_fn(q_sample(schedule, x0, t, noise), t) - noise) ** 2
    if weight is None:
        return jnp.mean(err)
    per_sample = jnp.mean(err.reshape(n, -1), axis=1)
    return jnp.mean(weight.astype(per_sample.dtype) * per_sample)
