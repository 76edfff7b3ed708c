"""Variational diffusion models (Kingma, Salimans, Poole and Ho, 2021), for App. Fig. 11: does a
model trained with T steps (or in continuous time, T = 0 here) and sampled with T' steps also
interpolate between modes?

The forward process is z_t = alpha_t x + sigma_t eps with alpha_t^2 = sigmoid(-gamma(t)),
sigma_t^2 = sigmoid(gamma(t)), t in [0, 1], and gamma a learned monotone function
(`init_gamma` / `gamma`): a small network with positive weights, rescaled so that gamma(0) and
gamma(1) are fixed endpoints (the paper's init, -13.3 and 5; the endpoints' own prior and
reconstruction terms do not apply to continuous 2D data and are left out). With the network
predicting eps (`eps_fn(z_t, gamma_t)`), the diffusion loss of one sample is

  discrete, T steps:  (T / 2) expm1(gamma(t) - gamma(s)) |eps - eps_hat|^2,  t = i/T, s = (i-1)/T
  continuous (T = 0): (1 / 2) gamma'(t) |eps - eps_hat|^2,  t ~ U(0, 1)

(`diffusion_loss`), and ancestral sampling with T' steps draws z_s ~ p(z_s | z_t) for
s = t - 1/T' (`sample_step`, `sample`). `sample` keeps the variance of x0_hat over the last
`window` steps, as the DDPM sampler's observer does, and returns x0_hat at t = 0.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mi_jax.validation import check, check_int, check_key

GAMMA_MIN, GAMMA_MAX = -13.3, 5.0
TIME_SCALE = 1000.0  # the network sees 1000 t: the toy MLP's embedding was made for t in [0, T)


def init_gamma(key: jax.Array, hidden: int = 64) -> dict:
    """Parameters of the monotone schedule network (raw weights; `gamma` makes them positive)."""
    check_key(key)
    check_int(hidden, "hidden", low=1)
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w1": jax.random.normal(k1, ()) * 0.1, "b1": jnp.zeros(()),
            "w2": jax.random.normal(k2, (hidden,)) * 0.1, "b2": jnp.zeros((hidden,)),
            "w3": jax.random.normal(k3, (hidden,)) * 0.1}


def _raw_gamma(params: dict, t: jax.Array) -> jax.Array:
    # Monotone increasing in t: every weight softplus-positive, every activation increasing.
    pos = jax.nn.softplus
    h1 = pos(params["w1"]) * t + params["b1"]
    w2, b2 = pos(params["w2"]), params["b2"]
    lead = (1,) * jnp.ndim(h1)
    h2 = jax.nn.sigmoid(h1[..., None] * w2.reshape(lead + w2.shape) + b2.reshape(lead + b2.shape))
    w3 = pos(params["w3"])
    return h1 + jnp.sum(h2 * w3.reshape(lead + w3.shape), axis=-1)


def gamma(params: dict, t: jax.Array, gamma_min: float = GAMMA_MIN,
          gamma_max: float = GAMMA_MAX) -> jax.Array:
    """gamma(t) = -log SNR(t), increasing from gamma_min at t = 0 to gamma_max at t = 1."""
    g0, g1 = _raw_gamma(params, jnp.zeros(())), _raw_gamma(params, jnp.ones(()))
    unit = (_raw_gamma(params, t) - g0) / (g1 - g0)
    return gamma_min + (gamma_max - gamma_min) * unit


def alpha_sigma(g: jax.Array) -> tuple:
    """(alpha, sigma) of log-SNR -g: alpha^2 = sigmoid(-g), sigma^2 = sigmoid(g)."""
    return jnp.sqrt(jax.nn.sigmoid(-g)), jnp.sqrt(jax.nn.sigmoid(g))


def diffusion_loss(eps_fn, gamma_fn, x: jax.Array, key: jax.Array, T: int) -> jax.Array:
    """The VDM diffusion loss, mean over the batch x (n, D) (summed over dimensions, as the
    paper's bits); T > 0 its discrete form with T steps, T = 0 the continuous one.
    eps_fn(z_t, gamma_t) -> eps_hat; gamma_fn(t) -> gamma(t) (t of shape (n,))."""
    check_key(key)
    T = check_int(T, "T", low=0)
    n = x.shape[0]
    k_t, k_eps = jax.random.split(key)
    eps = jax.random.normal(k_eps, x.shape, x.dtype)
    if T:
        i = jax.random.randint(k_t, (n,), 1, T + 1)
        t, s = i / T, (i - 1) / T
        g_t, g_s = gamma_fn(t), gamma_fn(s)
        weight = 0.5 * T * jnp.expm1(g_t - g_s)
    else:
        t = jax.random.uniform(k_t, (n,))
        g_t, dg = jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),))
        weight = 0.5 * dg
    a, s_ = alpha_sigma(g_t)
    z = a[:, None] * x + s_[:, None] * eps
    err = jnp.sum((eps - eps_fn(z, g_t)) ** 2, axis=-1)
    return jnp.mean(weight * err)


def sample_step(g_s, g_t, z, eps_hat, noise):
    """z_s ~ p(z_s | z_t) = q(z_s | z_t, x = x0_hat): the VDM ancestral step from t to s < t
    (the DDPM posterior with its own, "small", variance)."""
    c = -jnp.expm1(g_s - g_t)
    a_t, s_t = alpha_sigma(g_t)
    a_s, s_s = alpha_sigma(g_s)
    mean = (a_s / a_t) * (z - c * s_t * eps_hat)
    return mean + s_s * jnp.sqrt(c) * noise


class VdmSamples(NamedTuple):
    """x (n, dim); hal (n,): the variance of x0_hat over the last `window` sampling steps (the
    paper's statistic, counted in steps); by_logsnr (W, n): the same variance over the steps whose
    log-SNR lies in each of `logsnr_windows` (counted in noise level), and steps_in (W,): how
    many steps each of those windows holds (0: the variance is 0)."""

    x: jax.Array
    hal: jax.Array
    by_logsnr: jax.Array
    steps_in: jax.Array


def _welford(stats, x0, inside):
    """One step of Welford's running mean / sum of squares over the steps where `inside` (n,)."""
    mean, m2, count = stats
    count = count + inside
    delta = x0 - mean
    keep = inside[:, None]
    mean = jnp.where(keep, mean + delta / jnp.maximum(count, 1)[:, None], mean)
    m2 = jnp.where(keep, m2 + delta * (x0 - mean), m2)
    return mean, m2, count


def _variance(stats):
    mean, m2, count = stats
    return jnp.mean(m2 / jnp.maximum(count, 1)[:, None], axis=-1)


@functools.partial(jax.jit, static_argnames=("eps_fn", "gamma_fn", "n", "dim", "steps",
                                             "window", "logsnr_windows"))
def _sample(eps_fn, gamma_fn, key, n, dim, steps, window, logsnr_windows):
    k0, k_chain = jax.random.split(key)
    z = jax.random.normal(k0, (n, dim))
    bounds = jnp.asarray(logsnr_windows, jnp.float32).reshape(-1, 2)  # (W, 2): lo, hi

    def body(carry, i):  # i = steps .. 1: from t = i / steps to s = (i - 1) / steps
        z, last, by_snr = carry
        t, s = i / steps, (i - 1) / steps
        g_t = gamma_fn(jnp.full((n,), t))
        g_s = gamma_fn(jnp.full((n,), s))
        eps_hat = eps_fn(z, g_t)
        a_t, s_t = alpha_sigma(g_t)
        x0 = (z - s_t[:, None] * eps_hat) / a_t[:, None]
        last = _welford(last, x0, jnp.broadcast_to(i <= window, (n,)))
        inside = (-g_t[None] >= bounds[:, :1]) & (-g_t[None] <= bounds[:, 1:])  # (W, n)
        by_snr = jax.vmap(_welford, in_axes=(0, None, 0))(by_snr, x0, inside)
        noise = jax.random.normal(jax.random.fold_in(k_chain, i), z.shape)
        z = sample_step(g_s[:, None], g_t[:, None], z, eps_hat, noise)
        return (z, last, by_snr), None

    num_w = bounds.shape[0]
    empty = (jnp.zeros((n, dim)), jnp.zeros((n, dim)), jnp.zeros((n,), jnp.int32))
    stacked = jax.tree.map(lambda a: jnp.zeros((num_w,) + a.shape, a.dtype), empty)
    (z, last, by_snr), _ = jax.lax.scan(body, (z, empty, stacked), jnp.arange(steps, 0, -1))
    g0 = gamma_fn(jnp.zeros((n,)))
    a0, s0 = alpha_sigma(g0)
    x = (z - s0[:, None] * eps_fn(z, g0)) / a0[:, None]
    return VdmSamples(x, _variance(last), jax.vmap(_variance)(by_snr), by_snr[2][:, 0])


def sample(eps_fn, gamma_fn, key: jax.Array, n: int, dim: int, steps: int,
           window: int = 10, logsnr_windows: tuple = ()) -> VdmSamples:
    """Ancestral VDM sampling with `steps` (T') steps from z_1 ~ N(0, I) (see `VdmSamples`).
    logsnr_windows: ((lo, hi), ...) log-SNR ranges (log-SNR = -gamma) for x0_hat variances
    counted in noise level rather than in steps. eps_fn and gamma_fn must be hashable
    (module-level functions or `functools.partial` of them)."""
    check_key(key)
    n = check_int(n, "n", low=1)
    steps = check_int(steps, "steps", low=1)
    window = check_int(window, "window", low=1)
    check(window <= steps, "window", window, f"must be <= steps={steps}")
    logsnr_windows = tuple((float(lo), float(hi)) for lo, hi in logsnr_windows)
    for lo, hi in logsnr_windows:
        check(lo < hi, "logsnr_windows", logsnr_windows, "each window must have lo < hi")
    return _sample(eps_fn, gamma_fn, key, n, check_int(dim, "dim", low=1), steps, window,
                   logsnr_windows)


def network_eps(network, params):
    """eps_fn(z_t, gamma_t) of a `mi_jax.nets.Network` conditioned on the normalised log-SNR
    (VDM's choice), scaled to the toy MLP's timestep range: TIME_SCALE (gamma - gamma_min) /
    (gamma_max - gamma_min)."""

    def eps_fn(z, g):
        return network.apply(params, z, TIME_SCALE * (g - GAMMA_MIN) / (GAMMA_MAX - GAMMA_MIN))

    return eps_fn


def init_state(network, key: jax.Array, learning_rate: float = 1e-3):
    """(params {'net', 'gamma'}, optax Adam state) of a VDM with a learned schedule."""
    import optax

    check_key(key)
    params = {"net": network.init(jax.random.fold_in(key, 0)),
              "gamma": init_gamma(jax.random.fold_in(key, 1))}
    return params, optax.adam(learning_rate).init(params)


@functools.partial(jax.jit, static_argnames=("network", "T", "batch", "steps", "learning_rate"))
def train_chunk(network, params, opt_state, data, key, start, T: int, batch: int, steps: int,
                learning_rate: float = 1e-3):
    """`steps` Adam steps on the diffusion loss (T steps; 0: continuous), network and schedule
    together, i.i.d. minibatches of `batch` rows of data (N, D); step s draws from
    fold_in(key, start + s). Returns (params, opt_state, losses (steps,))."""
    import optax

    tx = optax.adam(learning_rate)

    def loss_fn(p, x, k):
        return diffusion_loss(network_eps(network, p["net"]),
                              functools.partial(gamma, p["gamma"]), x, k, T)

    def body(carry, s):
        p, o = carry
        k_batch, k_loss = jax.random.split(jax.random.fold_in(key, start + s))
        x = data[jax.random.randint(k_batch, (batch,), 0, data.shape[0])]
        loss, grads = jax.value_and_grad(loss_fn)(p, x, k_loss)
        updates, o = tx.update(grads, o, p)
        return (optax.apply_updates(p, updates), o), loss

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), jnp.arange(steps))
    return params, opt_state, losses
