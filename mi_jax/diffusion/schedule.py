"""Noise schedules as pytrees of per-timestep float32 constants, built in float64.

Timestep index t runs 0..T-1 as in the official code: t = 0 is the last reverse step.
The official schedule (linear beta 0.001 -> 0.2, T = 1000) drives alpha_bar to ~1e-48, which is 0 in
float32 for most of the chain. So nothing downstream divides by a float32 alpha_bar: every
coefficient the sampler and loss need is formed in float64 and only then cast, and the reverse
step uses the epsilon form of the posterior mean, which never multiplies by 1/sqrt(alpha_bar).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.validation import InputError, check, check_float, check_int


class Schedule(NamedTuple):
    """Per-timestep constants, each of shape (T,). A pytree: schedules of equal T stack and vmap."""

    betas: jax.Array
    alphas_bar: jax.Array                # may underflow to 0 in float32: for display only
    sqrt_alphas_bar: jax.Array           # a_t
    sqrt_one_minus_alphas_bar: jax.Array
    sqrt_recip_alphas_bar: jax.Array     # 1/a_t, for x0_hat = x_t/a_t - sqrt(1/a_t^2 - 1) eps
    sqrt_recipm1_alphas_bar: jax.Array
    sqrt_recip_alphas: jax.Array         # 1/sqrt(alpha_t), for the epsilon-form posterior mean
    eps_coef: jax.Array                  # beta_t / sqrt(1 - alpha_bar_t)
    sigma_large: jax.Array               # sqrt(beta_t): DDPM "fixed-large"
    sigma_small: jax.Array               # sqrt(posterior variance): DDPM "fixed-small"
    ddim_eps_coef: jax.Array             # DDIM (eta = 0): x_{t-1} = x_t / sqrt(alpha_t) + ddim_eps_coef * eps

    @property
    def num_steps(self) -> int:
        return self.betas.shape[-1]


def from_betas(betas) -> Schedule:
    """Build every constant from a float64 beta sequence (values in (0, 1))."""
    betas = np.asarray(betas, dtype=np.float64)
    check(betas.ndim == 1 and betas.shape[0] >= 2, "T", betas.shape, "must be >= 2 timesteps")
    check(bool(np.all(np.isfinite(betas)) and np.all(betas > 0) and np.all(betas < 1)),
          "betas", (float(betas.min()), float(betas.max())), "must lie in (0, 1)")
    alphas = 1.0 - betas
    log_ab = np.cumsum(np.log1p(-betas))  # log1p: a beta below 1e-16 still counts
    ab = np.exp(log_ab)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    one_minus_ab = -np.expm1(log_ab)
    post_var = betas * (1.0 - ab_prev) / one_minus_ab
    # Fixed-large uses beta_t, with the posterior variance at t = 0 as in ddpm-torch (no noise is
    # added at t = 0 anyway).
    large_var = np.concatenate([[post_var[1]], betas[1:]])
    consts = dict(
        betas=betas,
        alphas_bar=ab,
        sqrt_alphas_bar=np.exp(0.5 * log_ab),
        sqrt_one_minus_alphas_bar=np.sqrt(one_minus_ab),
        sqrt_recip_alphas_bar=np.exp(-0.5 * log_ab),
        sqrt_recipm1_alphas_bar=np.sqrt(one_minus_ab) * np.exp(-0.5 * log_ab),
        sqrt_recip_alphas=1.0 / np.sqrt(alphas),
        eps_coef=betas / np.sqrt(one_minus_ab),
        sigma_large=np.sqrt(large_var),
        sigma_small=np.sqrt(post_var),
        # a_{t-1} x0_hat + sqrt(1 - ab_{t-1}) eps, expanded so that no 1/a_t is formed.
        ddim_eps_coef=np.sqrt(1.0 - ab_prev) - np.sqrt(one_minus_ab / alphas),
    )
    for name, value in consts.items():
        if name == "alphas_bar":
            continue
        f32 = value.astype(np.float32)
        if not (np.all(np.isfinite(value)) and np.all(np.isfinite(f32))):
            raise InputError(f"betas: schedule constant {name} overflows float32 "
                             f"(max {np.max(value):.3g}); use fewer steps or smaller betas")
    return Schedule(**{k: jnp.asarray(v, jnp.float32) for k, v in consts.items()})


def _check_range(num_steps, beta_start, beta_end):
    check_int(num_steps, "T", low=2)
    check_float(beta_start, "beta_start", low=0.0, high=1.0, low_open=True)
    check_float(beta_end, "beta_end", low=0.0, high=1.0, low_open=True)
    check(beta_start < 1 and beta_end < 1, "beta_end", beta_end, "must be < 1")


def linear_schedule(T: int = 1000, beta_start: float = 0.001, beta_end: float = 0.2) -> Schedule:
    """Linear betas. The default is the official toy schedule (not the usual 1e-4 -> 0.02)."""
    _check_range(T, beta_start, beta_end)
    return from_betas(np.linspace(beta_start, beta_end, T, dtype=np.float64))


def quadratic_schedule(T: int = 1000, beta_start: float = 0.001, beta_end: float = 0.2) -> Schedule:
    """Betas linear in sqrt(beta) (ddpm-torch's 'quad')."""
    _check_range(T, beta_start, beta_end)
    return from_betas(np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2)


def cosine_schedule(T: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's cosine alpha_bar, betas clipped at `max_beta`."""
    check_int(T, "T", low=2)
    check_float(offset, "offset", low=0.0, low_open=True)
    check_float(max_beta, "max_beta", low=0.0, high=1.0, low_open=True)
    check(max_beta < 1, "max_beta", max_beta, "must be < 1")
    s = np.arange(T + 1, dtype=np.float64) / T
    f = np.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2
    return from_betas(np.minimum(1 - f[1:] / f[:-1], max_beta))


SCHEDULES = {"linear": linear_schedule, "quadratic": quadratic_schedule, "cosine": cosine_schedule}


def make_schedule(kind: str = "linear", T: int = 1000, beta_start: float = 0.001,
                  beta_end: float = 0.2) -> Schedule:
    """A schedule by name; `beta_start`/`beta_end` are ignored by 'cosine'."""
    check(kind in SCHEDULES, "schedule", kind, f"must be one of {sorted(SCHEDULES)}")
    if kind == "cosine":
        return cosine_schedule(T)
    return SCHEDULES[kind](T, beta_start, beta_end)


def respace(betas_full, timesteps) -> tuple[Schedule, np.ndarray]:
    """A schedule over a subsequence of timesteps (strided sampling, T' < T).

    Keeps alpha_bar at the kept timesteps and derives the betas between them (Nichol & Dhariwal).
    Returns the new schedule and the original timestep index of each new step (to condition the net).
    """
    betas_full = np.asarray(betas_full, np.float64)
    ts = np.asarray(sorted(set(int(t) for t in timesteps)))
    check(len(ts) >= 2 and ts[0] >= 0 and ts[-1] < len(betas_full), "timesteps", ts.tolist(),
          f"must hold >= 2 distinct values in [0, {len(betas_full)})")
    log_ab = np.cumsum(np.log1p(-betas_full))[ts]
    log_ab_prev = np.concatenate([[0.0], log_ab[:-1]])
    betas = -np.expm1(log_ab - log_ab_prev)
    return from_betas(betas), ts


def plan_timesteps(T: int, steps: int | None = None, dense: int = 0):
    """The training timesteps a sampling plan visits, increasing: every one of the T (steps None
    or T, dense 0: the full chain), `steps` strided ones (`strided_timesteps`), or every one below
    `dense` plus `steps` strided above it (`dense_tail_timesteps`). None for the full chain."""
    check_int(dense, "dense_steps", low=0)
    if dense:
        return dense_tail_timesteps(T, steps, dense)
    if steps is None or steps == T:
        return None
    return strided_timesteps(T, steps)


def sampling_plan(schedule: "Schedule", steps: int | None = None, dense: int = 0):
    """(the schedule to sample with, its network timesteps (T',)) for a plan of `plan_timesteps`:
    the schedule itself and arange(T) for the full chain, else `respace` of its betas. The one
    place every study builds its full / strided / dense-tail sampler from."""
    ts = plan_timesteps(schedule.num_steps, steps, dense)
    if ts is None:
        return schedule, np.arange(schedule.num_steps)
    return respace(np.asarray(schedule.betas), ts)


def strided_timesteps(T: int, num_sampling_steps: int) -> np.ndarray:
    """Evenly spaced timesteps including 0 and T-1."""
    check_int(num_sampling_steps, "sampling_steps", low=2, high=T)
    return np.unique(np.round(np.linspace(0, T - 1, num_sampling_steps)).astype(int))


def dense_tail_timesteps(T: int, num_strided: int, dense: int) -> np.ndarray:
    """Strided early, dense late: every timestep in [0, dense) plus `num_strided` evenly spaced
    ones in [dense, T-1] (T-1 included). With `respace`, the official window (t = 9..0) is then
    sampled step by step at a fraction of the T-step cost: len(result) network calls.

    Example: dense_tail_timesteps(1000, 50, 50) -> 100 steps: 0, 1, ..., 49, then 50 ... 999."""
    check_int(T, "T", low=2)
    check_int(dense, "dense", low=1, high=T - 1)
    check_int(num_strided, "num_strided", low=1, high=T - dense)
    strided = np.round(np.linspace(dense, T - 1, num_strided)).astype(int) if num_strided > 1 \
        else np.asarray([T - 1])
    return np.unique(np.concatenate([np.arange(dense), strided]))


def truncate(schedule: Schedule, num_steps: int) -> Schedule:
    """The schedule's first `num_steps` indices (its last reverse steps), e.g. to resume a chain
    part-way with `mi_jax.sampling.chain.reverse(..., x_start=x_t)`."""
    check_int(num_steps, "num_steps", low=1, high=schedule.num_steps)
    return jax.tree.map(lambda a: a[..., :num_steps], schedule)
