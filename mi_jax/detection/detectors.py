"""Hallucination scores for generated samples (higher = more likely hallucinated).

The trajectory scores (variances of x0_hat, x_t, eps_hat; the final |eps_hat|) are read from
the sampler's observers by their `mi_jax.detection.registry` entries.
`flipd` is a local-intrinsic-dimension estimate from the score (FLIPD, Kamkari et al. 2024),
evaluated after sampling; `curvature_score` scores the sampler's `JacobianTrace` observer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.diffusion.schedule import Schedule
from mi_jax.validation import check_int


def flipd(eps_fn, schedule: Schedule, x: jax.Array, t0: int, key: jax.Array,
          probes: int = 1) -> jax.Array:
    """FLIPD local intrinsic dimension of samples x (n, *shape) at noise level t0.

    VE form: LID ~ D + sigma^2 (tr grad s + |s|^2). For the VP process x_t = a x0 + b eps with
    s_t = -eps_hat / b, evaluated at the noised point a x, this becomes
        LID(x) ~ D - b tr(d eps_hat / d x_t) + |eps_hat|^2,
    the trace estimated with `probes` Rademacher (Hutchinson) probes v^T J v, each one vjp
    (reverse mode, so networks with custom VJPs work too). Samples must not interact in eps_fn.
    A sample on a mode (a point at this scale) scores ~0; one on a smooth bridge between modes ~1.
    """
    t0 = check_int(t0, "t0", low=0, high=schedule.num_steps - 1)
    probes = check_int(probes, "probes", low=1)
    a, b = schedule.sqrt_alphas_bar[t0], schedule.sqrt_one_minus_alphas_bar[t0]
    n = x.shape[0]
    dim = int(np.prod(x.shape[1:]))
    y = a * x
    t = jnp.full((n,), t0, jnp.int32)
    eps, vjp = jax.vjp(lambda z: eps_fn(z, t), y)

    def one_probe(k):
        v = jax.random.rademacher(k, y.shape, y.dtype)
        return jnp.sum((v * vjp(v)[0]).reshape(n, -1), axis=-1)

    trace = jnp.mean(jax.vmap(one_probe)(jax.random.split(key, probes)), axis=0)
    return dim - b * trace + jnp.sum(eps.reshape(n, -1) ** 2, axis=-1)


def curvature_score(trace) -> np.ndarray:
    """Hallucination score from `JacobianTrace` outputs of one model's samples (n,):
    |trace - median(trace)|, the distance from the typical (in-support) Jacobian. Two-sided
    because the sign depends on the model: a denoiser that is steep between modes gives a very
    negative trace there, one smoothed flat a positive one (both measured, tests)."""
    trace = np.asarray(trace, np.float64)
    return np.abs(trace - np.nanmedian(trace))
