"""Exact denoisers for Gaussian mixtures: the no-network, no-hallucination control."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mi_jax.data import mixtures as mx
from mi_jax.diffusion.forward import EpsFn
from mi_jax.diffusion.schedule import Schedule
from mi_jax.nets import Network
from mi_jax.validation import check, check_timesteps


def _at_timesteps(fn, mixture, schedule: Schedule):
    """Lift fn(mixture, x (..., D), a, b) with scalar coefficients to (x_t (batch, D), t (batch,) or ())."""

    def lifted(x_t, t):
        check(jnp.ndim(x_t) == 2 and jnp.shape(x_t)[-1] == mixture.dim, "x_t", jnp.shape(x_t),
              f"must have shape (batch, {mixture.dim}) for this mixture")
        check_timesteps(t, schedule.num_steps)
        a, b = schedule.sqrt_alphas_bar[t], schedule.sqrt_one_minus_alphas_bar[t]
        if jnp.ndim(t) == 0:
            return fn(mixture, x_t, a, b)
        return jax.vmap(lambda x, ai, bi: fn(mixture, x, ai, bi))(x_t, a, b)

    lifted.accepts_scalar_t = True  # a scalar t broadcasts over the batch (see sampling.sample)
    return lifted


def oracle_eps(mixture: mx.GaussianMixture, schedule: Schedule) -> EpsFn:
    """eps_fn of the exact score of the noised mixture: eps*(x, t) = -sqrt(1 - alpha_bar_t) score."""

    return _at_timesteps(mx.exact_eps, mixture, schedule)


def oracle_x0(mixture: mx.GaussianMixture, schedule: Schedule):
    """x0_fn(x_t, t) = E[x_0 | x_t] in closed form."""

    return _at_timesteps(mx.posterior_mean, mixture, schedule)


def oracle_score(mixture: mx.GaussianMixture, schedule: Schedule):
    """score_fn(x_t, t) = grad log p_t(x_t)."""

    return _at_timesteps(mx.noised_score, mixture, schedule)


def oracle_mode_eps(mixture: mx.GaussianMixture, schedule: Schedule) -> EpsFn:
    """eps_fn of x_t's most probable mode alone (`mixtures.mode_eps`), for
    `mi_jax.sampling.repair.mode_guided`."""

    return _at_timesteps(mx.mode_eps, mixture, schedule)


def _oracle_apply(params, x_t, t):
    mixture, schedule = params
    return oracle_eps(mixture, schedule)(x_t, t)


ORACLE = Network("oracle", init=None, apply=_oracle_apply)
"""The exact denoiser as a `Network` whose params are `(mixture, schedule)`: lets the network
sampler (and its vmap over stacked params) run the no-hallucination control like any model."""
