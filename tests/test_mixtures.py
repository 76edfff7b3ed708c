import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mi_jax.data import mixtures as mx
from mi_jax.validation import InputError


def np_log_prob(x, means, stds, weights):
    """float64 reference: log sum_k w_k N(x; mu_k, s_k^2 I)."""
    x = np.asarray(x, np.float64)
    d = means.shape[1]
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    comp = -0.5 * sq / stds**2 - 0.5 * d * np.log(2 * np.pi * stds**2) + np.log(weights)
    mx_ = comp.max(1, keepdims=True)
    return (mx_ + np.log(np.exp(comp - mx_).sum(1, keepdims=True)))[:, 0]


MEANS = np.array([[0.0, 0.0], [1.0, 0.5], [-0.7, 2.0]])
STDS = np.array([0.3, 0.5, 0.2])
WEIGHTS = np.array([0.2, 0.5, 0.3])


def test_log_prob_matches_numpy_float64():
    m = mx.GaussianMixture(MEANS, STDS, WEIGHTS)
    x = np.random.default_rng(0).normal(size=(50, 2)) * 1.5
    np.testing.assert_allclose(m.log_prob(jnp.asarray(x, jnp.float32)),
                               np_log_prob(x, MEANS, STDS, WEIGHTS), rtol=1e-5, atol=1e-4)


def test_padding_changes_nothing():
    m = mx.GaussianMixture(MEANS, STDS, WEIGHTS)
    p = m.pad(7)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(20, 2)), jnp.float32)
    np.testing.assert_allclose(m.log_prob(x), p.log_prob(x), rtol=1e-6)
    a, b = jnp.float32(0.8), jnp.float32(0.6)
    for fn in (mx.noised_score, mx.posterior_mean, mx.exact_eps):
        np.testing.assert_allclose(fn(m, x, a, b), fn(p, x, a, b), rtol=1e-5, atol=1e-6)
    counts = np.bincount(np.asarray(mx.index(mx.stack([p]), 0).sample(jax.random.key(0), 4000)
                                    [:, 0] > 5), minlength=2)
    assert counts[1] == 0  # padding slots (mean 0 here) are never drawn as extra modes
    modes = jax.random.categorical(jax.random.key(3), mx._masked_log_weights(p), shape=(5000,))
    assert int(modes.max()) <= 2


def test_sample_frequencies_match_weights(key):
    m = mx.GaussianMixture(MEANS, 0.05, WEIGHTS)
    x = np.asarray(m.sample(key, 20_000))
    nearest = np.argmin(((x[:, None] - MEANS[None]) ** 2).sum(-1), axis=1)
    freq = np.bincount(nearest, minlength=3) / len(x)
    se = np.sqrt(WEIGHTS * (1 - WEIGHTS) / len(x))
    assert np.all(np.abs(freq - WEIGHTS) < 4 * se), (freq, WEIGHTS)
    spread = x - MEANS[nearest]
    assert abs(spread.std() - 0.05) < 0.002


def test_stratified_counts_are_exact(key):
    m = mx.mixture_1d([1.0, 2.0, 4.0, 5.0])
    x = np.asarray(mx.sample_stratified(m, key, 1000, n_valid=400))[:400, 0]
    counts = np.bincount(np.rint(x).astype(int), minlength=6)[[1, 2, 4, 5]]
    np.testing.assert_array_equal(counts, [100, 100, 100, 100])
    w = mx.GaussianMixture([[0.0], [10.0]], 0.01, [0.25, 0.75])
    y = np.asarray(mx.sample_stratified(w, key, 1000))[:, 0]
    assert int((y > 5).sum()) == 750


@pytest.mark.parametrize("t_scale", [(0.99, 0.14), (0.7, 0.71), (0.2, 0.98)])
def test_noised_quantities_closed_forms_float64(t_scale):
    a, b = t_scale
    b = math.sqrt(1 - a * a)
    with jax.enable_x64(True):
        m = mx.GaussianMixture(MEANS, STDS, WEIGHTS)
        m = jax.tree.map(lambda leaf: leaf.astype(jnp.float64) if leaf.dtype == jnp.float32 else leaf, m)
        x = jnp.asarray(np.random.default_rng(2).normal(size=(30, 2)), jnp.float64)
        score = mx.noised_score(m, x, a, b)
        grad = jax.vmap(jax.grad(lambda xi: mx.noised_log_prob(m, xi, a, b)))(x)
        np.testing.assert_allclose(score, grad, rtol=1e-9, atol=1e-9)
        # The noised marginal is the mixture with scaled means and inflated variances.
        # (reference built from the mixture's stored float32-rounded parameters)
        means, stds, weights = (np.asarray(v, np.float64) for v in (m.means, m.stds, m.weights))
        np.testing.assert_allclose(mx.noised_log_prob(m, x, a, b),
                                   np_log_prob(np.asarray(x), a * means,
                                               np.sqrt(a**2 * stds**2 + b**2), weights), rtol=1e-10)
        # Tweedie: E[x0 | x_t] = (x_t + (1 - a^2) score) / a.
        np.testing.assert_allclose(mx.posterior_mean(m, x, a, b), (x + b**2 * score) / a,
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(mx.exact_eps(m, x, a, b), -b * score, rtol=1e-9, atol=1e-9)


def test_stack_and_vmap_equal_individual():
    m1 = mx.mixture_1d([1.0, 2.0, 3.0])
    m2 = mx.mixture_1d([1.0, 2.0, 4.0, 5.0])
    stacked = mx.stack([m1, m2])
    assert stacked.means.shape == (2, 4, 1)
    x = jnp.linspace(0, 6, 25)[:, None]
    both = jax.vmap(lambda m: m.log_prob(x))(stacked)
    np.testing.assert_allclose(both[0], m1.log_prob(x), rtol=1e-6)
    np.testing.assert_allclose(both[1], m2.log_prob(x), rtol=1e-6)


def test_presets_match_official_code():
    assert mx.OFFICIAL_GRID_NORMALISER == pytest.approx(2.82887, abs=1e-5)
    sq = mx.grid_2d("square")
    means = np.asarray(sq.means)
    assert means.shape == (25, 2)
    np.testing.assert_allclose(np.unique(np.round(means[:, 0], 6)),
                               np.array([-4, -2, 0, 2, 4]) / 2.82887, atol=1e-5)
    assert mx.min_mode_distance(sq) == pytest.approx(2 / 2.82887, rel=1e-5)
    np.testing.assert_allclose(np.asarray(sq.stds), 0.05 / 2.82887, rtol=1e-6)
    rot = mx.grid_2d("rotated")
    assert mx.min_mode_distance(rot) == pytest.approx(np.sqrt(2) / 2.82887, rel=1e-5)
    on_axis = np.sort(np.asarray(rot.means)[np.abs(np.asarray(rot.means)[:, 1]) < 1e-6, 0])
    np.testing.assert_allclose(np.diff(on_axis), 2 / 2.82887, rtol=1e-5)  # second-nearest
    one = mx.mixture_1d([1, 2, 4, 5])
    np.testing.assert_allclose(np.asarray(one.means)[:, 0], [1, 2, 4, 5])
    np.testing.assert_allclose(np.asarray(one.stds), 0.05)
    w = mx.imbalanced_weights(25, 10.0)
    assert w.sum() == pytest.approx(1.0) and w.max() / w.min() == pytest.approx(10.0)


def test_shifted_grid_moves_every_mode_and_keeps_the_geometry():
    sq, moved = mx.grid_2d("square"), mx.grid_2d("square", shift=1.0)
    delta = np.asarray(moved.means) - np.asarray(sq.means)
    np.testing.assert_allclose(delta, np.full_like(delta, 1 / 2.82887), rtol=1e-6)
    # No mode on the input origin any more: the nearest ones sit at a cell's corners.
    radii = np.linalg.norm(np.asarray(moved.means), axis=1)
    assert np.sum(np.isclose(radii, radii.min())) == 4
    assert radii.min() == pytest.approx(np.sqrt(2) / 2.82887, rel=1e-5)
    assert mx.min_mode_distance(moved) == pytest.approx(mx.min_mode_distance(sq), rel=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    (dict(means=[1, 2], stds=0.0), "stds"),
    (dict(means=[1, 2], stds=-1.0), "stds"),
    (dict(means=[1, float("nan")], stds=0.1), "means"),
    (dict(means=[1, 2], stds=[0.1, 0.1, 0.1]), "stds"),
    (dict(means=[1, 2], stds=0.1, weights=[1, -1]), "weights"),
    (dict(means=[1, 2], stds=0.1, weights=[0, 0]), "weights"),
    (dict(means=[], stds=0.1), "means"),
    (dict(means="abc", stds=0.1), "means"),
])
def test_bad_mixtures_raise_one_line(kwargs, name):
    with pytest.raises(InputError) as err:
        mx.GaussianMixture(**kwargs)
    msg = str(err.value)
    assert msg.startswith(name) and "\n" not in msg
