"""Isotropic Gaussian mixtures as padded, masked pytrees, and their exact diffusion quantities.

A mixture holds `K` slots; the first slots are real modes and any trailing slots are padding
(`mask == False`, weight 0). Padding lets mixtures with different numbers of modes be stacked
and vmapped together (`stack`). Every function here works on one mixture; vmap over stacks.

The exact forward-process quantities use q(x_t | x_0) = N(a x_0, (1 - a^2) I) with a = sqrt(alpha_bar_t).
For a mixture sum_k pi_k N(mu_k, s_k^2 I) the noised marginal is again a mixture,
sum_k pi_k N(a mu_k, (a^2 s_k^2 + 1 - a^2) I), so its score and E[x_0 | x_t] are closed forms.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax.validation import check, is_concrete


@jax.tree_util.register_pytree_node_class
class GaussianMixture:
    """Isotropic Gaussian mixture: `means` (K, D), per-mode `stds` (K,), `weights` (K,), `mask` (K,).

    `GaussianMixture(means, stds, weights=None)`: `means` may be a flat sequence for 1D
    (`[1, 2, 3]` -> shape (3, 1)); `stds` may be a scalar; `weights` default to equal and are normalised.
    """

    def __init__(self, means, stds, weights=None, mask=None):
        means_np = _as_float_array(means, "means")
        if means_np.ndim == 1:
            means_np = means_np[:, None]
        check(means_np.ndim == 2 and means_np.shape[0] >= 1 and means_np.shape[1] >= 1,
              "means", means_np.shape, "must have shape (num_modes, dim)")
        k = means_np.shape[0]
        stds_np = _as_float_array(stds, "stds")
        if stds_np.ndim == 0:
            stds_np = np.full((k,), float(stds_np))
        check(stds_np.shape == (k,), "stds", stds_np.shape, f"must be a scalar or have shape ({k},)")
        mask_np = np.ones((k,), bool) if mask is None else np.asarray(mask, bool)
        check(mask_np.shape == (k,) and mask_np.any(), "mask", mask_np.tolist(),
              f"must have shape ({k},) with at least one True")
        check(bool(np.all(mask_np[: mask_np.sum()])), "mask", mask_np.tolist(),
              "padding slots must come after all real modes")
        check(np.all(np.isfinite(means_np)), "means", means_np.tolist(), "must be finite")
        valid_stds = stds_np[mask_np]
        check(np.all(np.isfinite(valid_stds)) and np.all(valid_stds > 0), "stds",
              valid_stds.tolist(), "must be finite and > 0")
        if weights is None:
            weights_np = mask_np.astype(np.float64)
        else:
            weights_np = _as_float_array(weights, "weights")
            check(weights_np.shape == (k,), "weights", weights_np.shape, f"must have shape ({k},)")
            check(np.all(np.isfinite(weights_np)) and np.all(weights_np >= 0)
                  and weights_np[mask_np].sum() > 0, "weights", weights_np.tolist(),
                  "must be finite, >= 0 and not all zero")
        weights_np = np.where(mask_np, weights_np, 0.0)
        weights_np = weights_np / weights_np.sum()
        # Padding slots get a harmless std so that no NaN can leak out of masked arithmetic.
        stds_np = np.where(mask_np, stds_np, 1.0)
        self.means = jnp.asarray(means_np, jnp.float32)
        self.stds = jnp.asarray(stds_np, jnp.float32)
        self.weights = jnp.asarray(weights_np, jnp.float32)
        self.mask = jnp.asarray(mask_np)

    # -- pytree protocol: unflattening bypasses validation so tracers pass through --
    def tree_flatten(self):
        return (self.means, self.stds, self.weights, self.mask), None

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        obj = object.__new__(cls)
        obj.means, obj.stds, obj.weights, obj.mask = leaves
        return obj

    def __repr__(self):
        if is_concrete(self.means) and self.means.ndim == 2:
            n = int(np.asarray(self.mask).sum())
            return f"GaussianMixture(modes={n}, slots={self.num_slots}, dim={self.dim})"
        return f"GaussianMixture(means={self.means.shape})"

    @property
    def num_slots(self) -> int:
        return self.means.shape[-2]

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def num_modes(self):
        """Number of real (unpadded) modes; an array under vmap."""
        return jnp.sum(self.mask, axis=-1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """Draw `n` i.i.d. samples, shape (n, D)."""
        return sample(self, key, n)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log density at `x` (..., D) -> (...)."""
        return log_prob(self, x)

    def pad(self, num_slots: int) -> "GaussianMixture":
        """Same mixture with `num_slots` slots (trailing slots masked out)."""
        return pad(self, num_slots)


def _as_float_array(value, name) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        check(False, name, value, "must be numeric")
    return arr


def _lead(a, like):
    """`a` (K, ...) with `like`'s extra leading axes as ones: explicit broadcasting of per-mode
    arrays against batched ones (the tests run with jax_numpy_rank_promotion='raise')."""
    return a.reshape((1,) * (like.ndim - a.ndim) + a.shape)


def _log_normal(sq_dist, var, dim):
    var = _lead(var, sq_dist)
    return -0.5 * sq_dist / var - 0.5 * dim * jnp.log(2 * jnp.pi * var)


def _sq_dist(x, centres):
    """Squared distances (..., K) from x (..., D) to centres (K, D)."""
    centres = centres.reshape((1,) * (x.ndim - 1) + centres.shape)
    return jnp.sum((x[..., None, :] - centres) ** 2, axis=-1)


def _masked_log_weights(mixture):
    return jnp.where(mixture.mask, jnp.log(jnp.where(mixture.mask, mixture.weights, 1.0)), -jnp.inf)


def sample(mixture: GaussianMixture, key: jax.Array, n: int) -> jax.Array:
    """`n` i.i.d. samples (n, D): a categorical mode per sample, then Gaussian noise."""
    k_mode, k_noise = jax.random.split(key)
    modes = jax.random.categorical(k_mode, _masked_log_weights(mixture), shape=(n,))
    return _draw_around(mixture, modes, k_noise)


def sample_stratified(mixture: GaussianMixture, key: jax.Array, n: int, n_valid=None,
                      round_robin: bool = False) -> jax.Array:
    """`n` samples whose first `n_valid` have mode counts exactly proportional to the weights.

    The official code assigns modes round-robin, so every mode has the same count; this is the
    weighted generalisation (quantiles of the mode CDF), with rows grouped by mode. `n_valid` may
    be a traced value, so training sets of different sizes share one padded shape; rows past
    `n_valid` repeat the pattern. round_robin=True: row i comes from mode i mod K, the official
    order itself (equal weights only; what fixed-order, unshuffled batches need).
    """
    n_valid = n if n_valid is None else n_valid
    i = jnp.arange(n)
    if round_robin:
        return _draw_around(mixture, jnp.mod(jnp.mod(i, n_valid), jnp.sum(mixture.mask)), key)
    u = (jnp.mod(i, n_valid) + 0.5) / n_valid
    cdf = jnp.cumsum(mixture.weights)
    modes = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), jnp.sum(mixture.mask) - 1)
    return _draw_around(mixture, modes, key)


def _draw_around(mixture, modes, key):
    noise = jax.random.normal(key, (modes.shape[0], mixture.dim))
    return mixture.means[modes] + mixture.stds[modes, None] * noise


def log_prob(mixture: GaussianMixture, x: jax.Array) -> jax.Array:
    """log p(x) for x (..., D)."""
    comp = _log_normal(_sq_dist(x, mixture.means), mixture.stds**2, mixture.dim)
    return jax.nn.logsumexp(comp + _lead(_masked_log_weights(mixture), comp), axis=-1,
                            where=_lead(mixture.mask, comp))


def _noised_components(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar):
    """Responsibilities (..., K), noised component variances (K,), noised centres (K, D)."""
    a = sqrt_alpha_bar
    var = a**2 * mixture.stds**2 + sqrt_one_minus_alpha_bar**2
    centres = a * mixture.means
    logits = _log_normal(_sq_dist(x, centres), var, mixture.dim)
    logits = logits + _lead(_masked_log_weights(mixture), logits)
    resp = jax.nn.softmax(jnp.where(_lead(mixture.mask, logits), logits, -jnp.inf), axis=-1)
    return resp, var, centres


def noised_log_prob(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar):
    """log p_t(x) of the noised marginal at x (..., D)."""
    var = sqrt_alpha_bar**2 * mixture.stds**2 + sqrt_one_minus_alpha_bar**2
    comp = _log_normal(_sq_dist(x, sqrt_alpha_bar * mixture.means), var, mixture.dim)
    return jax.nn.logsumexp(comp + _lead(_masked_log_weights(mixture), comp), axis=-1,
                            where=_lead(mixture.mask, comp))


def noised_score(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar):
    """Exact score grad_x log p_t(x), x (..., D) -> (..., D)."""
    resp, var, centres = _noised_components(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar)
    offsets = _lead(centres, x[..., None, :]) - x[..., None, :]
    return jnp.einsum("...k,...kd->...d", resp / _lead(var, resp), offsets)


def exact_eps(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar):
    """The optimal epsilon prediction, -sqrt(1 - alpha_bar) * score (well conditioned at every t)."""
    resp, var, centres = _noised_components(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar)
    weights = resp * _lead(sqrt_one_minus_alpha_bar / var, resp)
    return jnp.einsum("...k,...kd->...d", weights, x[..., None, :] - _lead(centres, x[..., None, :]))


def mode_eps(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar):
    """The exact eps of x's most probable mode alone, k* = argmax_k p_t(k | x): the denoiser
    that commits x_t to one mode (for guidance toward it). x (..., D) -> (..., D)."""
    resp, var, centres = _noised_components(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar)
    best = jax.nn.one_hot(jnp.argmax(resp, axis=-1), resp.shape[-1], dtype=resp.dtype)
    weights = best * _lead(sqrt_one_minus_alpha_bar / var, resp)
    return jnp.einsum("...k,...kd->...d", weights, x[..., None, :] - _lead(centres, x[..., None, :]))


def posterior_mean(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar):
    """E[x_0 | x_t = x] in closed form: sum_k r_k(x) (mu_k + a s_k^2 / v_k (x - a mu_k))."""
    resp, var, centres = _noised_components(mixture, x, sqrt_alpha_bar, sqrt_one_minus_alpha_bar)
    gain = sqrt_alpha_bar * mixture.stds**2 / var
    offsets = x[..., None, :] - _lead(centres, x[..., None, :])
    comp_means = _lead(mixture.means, offsets) + _lead(gain[:, None], offsets) * offsets
    return jnp.einsum("...k,...kd->...d", resp, comp_means)


def pad(mixture: GaussianMixture, num_slots: int) -> GaussianMixture:
    extra = num_slots - mixture.num_slots
    check(extra >= 0, "num_slots", num_slots, f"must be >= the mixture's {mixture.num_slots} slots")
    padded = [
        jnp.pad(mixture.means, ((0, extra), (0, 0))),
        jnp.pad(mixture.stds, (0, extra), constant_values=1.0),
        jnp.pad(mixture.weights, (0, extra)),
        jnp.pad(mixture.mask, (0, extra)),
    ]
    return GaussianMixture.tree_unflatten(None, padded)


def stack(mixtures: Sequence[GaussianMixture]) -> GaussianMixture:
    """Stack mixtures of one dimension (padding to the largest) along a new leading axis."""
    check(len(mixtures) > 0, "mixtures", mixtures, "must be a non-empty sequence")
    dims = {m.dim for m in mixtures}
    check(len(dims) == 1, "mixtures", sorted(dims), "must all have the same dimension")
    slots = max(m.num_slots for m in mixtures)
    return jax.tree.map(lambda *xs: jnp.stack(xs), *[pad(m, slots) for m in mixtures])


def index(mixtures: GaussianMixture, i) -> GaussianMixture:
    """The i-th mixture of a stack (or a stack gathered by an index array)."""
    return jax.tree.map(lambda leaf: leaf[i], mixtures)


def min_mode_distance(mixture: GaussianMixture) -> float:
    """Smallest distance between two real modes (host-side, for analysis)."""
    means = np.asarray(mixture.means)[np.asarray(mixture.mask)]
    if len(means) < 2:
        return math.inf
    d = np.linalg.norm(means[:, None] - means[None], axis=-1)
    return float(d[np.triu_indices(len(means), 1)].min())


# ----------------------------------------------------------------------------------------
# Presets identical to the official code (locuslab/diffusion-model-hallucination, toy_data.py)
# ----------------------------------------------------------------------------------------

OFFICIAL_STD = 0.05
# The official 2D datasets divide by sqrt(0.05^2 + 2^2 * 2), the std of the square grid's values.
OFFICIAL_GRID_NORMALISER = math.sqrt(OFFICIAL_STD**2 + 2.0**2 * 2)


def mixture_1d(modes: Sequence[float] = (1.0, 2.0, 3.0), std: float = OFFICIAL_STD,
               weights=None) -> GaussianMixture:
    """The official `Gaussian1D`: raw (unnormalised) means, std 0.05, equal weights."""
    return GaussianMixture(np.asarray(modes, np.float64)[:, None], std, weights)


def grid_means(layout: str = "square", size: int = 5) -> np.ndarray:
    """Grid centres before normalisation: (2i, 2j) for i, j in {-(size-1)/2 .. (size-1)/2}, or that
    grid rotated 45 deg and scaled 1/sqrt2. size=5 is the official 25-mode grid."""
    check(isinstance(size, int) and size >= 2, "size", size, "must be an integer >= 2")
    half = (size - 1) / 2
    r = np.arange(size) - half
    ij = np.array([(i, j) for i in r for j in r], np.float64)
    if layout == "square":
        return 2.0 * ij
    if layout == "rotated":
        return 2.0 * np.stack([(ij[:, 0] + ij[:, 1]) / 2, (ij[:, 1] - ij[:, 0]) / 2], axis=1)
    check(False, "layout", layout, "must be 'square' or 'rotated'")


def grid_2d(layout: str = "square", std: float = OFFICIAL_STD, weights=None,
            size: int = 5, shift: float = 0.0) -> GaussianMixture:
    """The official `Gaussian25` / `Gaussian25_Rotated`, normalised exactly as the official code.

    shift: added to both raw coordinates of every centre before the normalisation (0: the
    official grid, its centre mode on the input origin; 1: the square grid's origin at the middle
    of a cell, no mode on it).

    The official code draws N(mu, 0.05^2) around the raw centres and then divides every sample by
    2.82887, so the normalised per-mode std is 0.05 / 2.82887 (about 0.0177). Other grid sizes keep
    that normaliser, hence the same spacing and mode width (only the number of modes changes).
    """
    means = (grid_means(layout, size) + float(shift)) / OFFICIAL_GRID_NORMALISER
    return GaussianMixture(means, std / OFFICIAL_GRID_NORMALISER, weights)


def imbalanced_weights(num_modes: int = 25, ratio: float = 10.0, seed: int = 0) -> np.ndarray:
    """Weights in a geometric progression from 1 to `ratio`, in a seeded random mode order."""
    check(ratio >= 1 and math.isfinite(ratio), "ratio", ratio, "must be finite and >= 1")
    w = np.geomspace(1.0, ratio, num_modes)
    return np.random.default_rng(seed).permutation(w) / w.sum()
