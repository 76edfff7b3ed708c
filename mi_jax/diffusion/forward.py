"""The forward (noising) process and the epsilon-prediction loss."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from mi_jax.diffusion.schedule import Schedule
from mi_jax.validation import check, check_key, check_timesteps

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
"""eps_fn(x_t, t): x_t (batch, *shape), integer timesteps t (batch,) -> epsilon of x_t's shape."""


def _per_sample(coef: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """coef[t] reshaped to broadcast against x (batch, *shape)."""
    c = coef[t]
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
    check(jnp.shape(noise) == jnp.shape(x0), "noise", jnp.shape(noise),
          f"must have the shape of x0 {jnp.shape(x0)}")
    check_timesteps(t, schedule.num_steps)
    return (_per_sample(schedule.sqrt_alphas_bar, t, x0) * x0
            + _per_sample(schedule.sqrt_one_minus_alphas_bar, t, x0) * noise)


def predict_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, eps: jax.Array) -> jax.Array:
    """x0_hat = x_t / sqrt(alpha_bar_t) - sqrt(1/alpha_bar_t - 1) eps (large but finite at big t)."""
    check(jnp.shape(eps) == jnp.shape(x_t), "eps", jnp.shape(eps),
          f"must have the shape of x_t {jnp.shape(x_t)}")
    check_timesteps(t, schedule.num_steps)
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


def second_order_target(residual: jax.Array, direction: jax.Array) -> jax.Array:
    """(I - r r^T) v per sample, for r = eps - eps_hat (batch, *shape) and a direction v.

    Second-order Tweedie: for x_t = a x0 + b eps the exact denoiser's Jacobian is
    b d eps*/dx_t = I - Cov[eps | x_t], and E[r r^T | x_t] = Cov[eps | x_t] when eps_hat = eps*.
    So b (d eps_hat/dx_t) v regressed on this target fits the Jacobian of the exact eps with data
    only (Meng et al. 2021, second-order denoising score matching). Between modes Cov[eps | x_t]
    is large (the posterior is two-peaked) and the exact eps jumps: the target asks for that jump.
    """
    axes = tuple(range(1, residual.ndim))
    return direction - residual * jnp.sum(residual * direction, axis=axes, keepdims=True)


def eps_loss(eps_fn: EpsFn, schedule: Schedule, x0: jax.Array, key: jax.Array,
             proposal: jax.Array | None = None, jacobian_weight: float = 0.0,
             jacobian_t_max: int = 0) -> jax.Array:
    """Unweighted epsilon MSE (mean over batch and dimensions), t ~ Uniform{0..T-1}.

    proposal: a probability table q (T,) to draw t from instead (e.g. `focused_timesteps`); each
    sample's error is then weighted by (1/T)/q(t), so the expectation is unchanged (unbiased).
    jacobian_weight > 0 (a static float): add that times the second-order term
    |b (d eps_hat/dx_t) v - (I - r r^T) v|^2 (`second_order_target`, r = eps - eps_hat held
    fixed, v Rademacher: its expectation over v is the squared Frobenius gap to the target), one
    vector-Jacobian product per sample on top of the plain loss. 0: the plain objective, with the
    same random draws as before the option existed. jacobian_t_max > 0: the term only at
    t < jacobian_t_max (where the learned and exact denoisers differ most between modes).
    """
    check_key(key)
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
    x_t = q_sample(schedule, x0, t, noise)
    if jacobian_weight:
        direction = jax.random.rademacher(jax.random.fold_in(key, 2), x0.shape, x0.dtype)
        # v^T J by reverse mode (the nets' custom-VJP LayerNorm has no forward mode); the exact
        # Jacobian and the target are symmetric, so fitting J^T fits J.
        eps_hat, pullback = jax.vjp(lambda x: eps_fn(x, t), x_t)
        jv = pullback(direction)[0]
        target = second_order_target(jax.lax.stop_gradient(noise - eps_hat), direction)
        b = _per_sample(schedule.sqrt_one_minus_alphas_bar, t, x0)
        gap = (b * jv - target) ** 2
        if jacobian_t_max:
            gap = jnp.where((t < jacobian_t_max).reshape((n,) + (1,) * (x0.ndim - 1)), gap, 0.0)
        err = (eps_hat - noise) ** 2 + jacobian_weight * gap
    else:
        err = (eps_fn(x_t, t) - noise) ** 2
    if weight is None:
        return jnp.mean(err)
    per_sample = jnp.mean(err.reshape(n, -1), axis=1)
    return jnp.mean(weight.astype(per_sample.dtype) * per_sample)


BETWEEN_DICTIONARY = 2048  # batch rows the minibatch denoiser averages over (bounds n x n cost)


def minibatch_x0(schedule: Schedule, x_t: jax.Array, t: jax.Array, data: jax.Array) -> jax.Array:
    """The exact E[x0 | x_t] of the empirical distribution of `data` (m, *shape): a softmax over
    the rows of -|x_t - a x0_j|^2 / (2 b^2), for each x_t (n, *shape) at its own t (n,)."""
    n, m = x_t.shape[0], data.shape[0]
    a = schedule.sqrt_alphas_bar[t][:, None]
    b2 = (schedule.sqrt_one_minus_alphas_bar[t] ** 2)[:, None]
    flat_x, flat_d = x_t.reshape(n, -1), data.reshape(m, -1)
    sq = (jnp.sum(flat_x**2, 1)[:, None] - 2 * a * (flat_x @ flat_d.T)
          + a**2 * jnp.sum(flat_d**2, 1)[None, :])
    weights = jax.nn.softmax(-sq / (2 * b2), axis=1)
    return (weights @ flat_d).reshape(x_t.shape)


def between_loss(eps_fn: EpsFn, schedule: Schedule, x0: jax.Array, key: jax.Array,
                 t_max: int) -> jax.Array:
    """Denoising supervision where the data has no mass: x_t built from a random point on the
    segment between two batch rows, noised at t < t_max, and the network's x0_hat regressed on
    the batch's own closed-form denoiser (`minibatch_x0`, the empirical posterior mean).

    Why: the plain loss weights the regression by p_t(x_t), which is ~0 between well-separated
    modes at small t, so there the network extrapolates smoothly (the paper's mode
    interpolation), while the empirical posterior snaps to the nearest training point, as the
    exact one snaps to the nearest mode. Mean squared x0 error (x0 units: the eps error times
    b/a, so the near-singular eps targets at t ~ 0 do not dominate)."""
    n = x0.shape[0]
    k_pair, k_lam, k_t, k_noise = jax.random.split(key, 4)
    partner = x0[jax.random.permutation(k_pair, n)]
    lam = jax.random.uniform(k_lam, (n,) + (1,) * (x0.ndim - 1), x0.dtype)
    t = jax.random.randint(k_t, (n,), 0, t_max)
    x_t = q_sample(schedule, x0 + lam * (partner - x0), t,
                   jax.random.normal(k_noise, x0.shape, x0.dtype))
    target = jax.lax.stop_gradient(minibatch_x0(schedule, x_t, t, x0[:BETWEEN_DICTIONARY]))
    return jnp.mean((predict_x0(schedule, x_t, t, eps_fn(x_t, t)) - target) ** 2)
