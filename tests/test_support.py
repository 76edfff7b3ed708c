import math

import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.validation import InputError


def test_in_support_matches_numpy_and_ignores_padding():
    m = mj.GaussianMixture([[0.0, 0.0], [1.0, 0.0]], [0.1, 0.2])
    x = np.random.default_rng(0).uniform(-0.5, 1.5, size=(500, 2))
    d = np.stack([np.linalg.norm(x - [0, 0], axis=1) / 0.1, np.linalg.norm(x - [1, 0], axis=1) / 0.2])
    for k in (1.0, 3.0):
        ref = d.min(0) <= k
        np.testing.assert_array_equal(mj.in_support(jnp.asarray(x), m, k), ref)
        np.testing.assert_array_equal(mj.in_support(jnp.asarray(x), m.pad(5), k), ref)
        assert float(mj.hallucination_rate(jnp.asarray(x), m, k)) == pytest.approx(1 - ref.mean())


def test_true_outside_rate_closed_forms():
    one = mj.mixture_1d([0.0, 5.0], std=0.1)
    two = mx.grid_2d()
    for k in (3.0, 4.0, 6.0):
        assert float(support.true_outside_rate(one, k)) == pytest.approx(math.erfc(k / math.sqrt(2)),
                                                                         rel=1e-4)
        assert float(support.true_outside_rate(two, k)) == pytest.approx(math.exp(-k * k / 2), rel=1e-4)


def test_flat_1d_input_and_shape_errors():
    m = mj.mixture_1d([1.0, 2.0])
    np.testing.assert_array_equal(mj.in_support(jnp.array([1.0, 1.5, 2.01]), m, 4.0),
                                  [True, False, True])
    with pytest.raises(InputError, match="^x="):
        mj.in_support(jnp.zeros((3, 2)), m)
    with pytest.raises(InputError, match="^k="):
        mj.in_support(jnp.zeros((3, 1)), m, -1.0)


def test_pairs_rotated_grid_axis_vs_diagonal():
    rot = mx.grid_2d("rotated")
    means = np.asarray(rot.means)
    a = means[12]  # centre mode (0, 0)
    right = means[np.argmin(np.linalg.norm(means - [0.707, 0.0], axis=1))]
    diag = means[np.argmin(np.linalg.norm(means - [0.354, 0.354], axis=1))]
    on_axis = np.stack([a + f * (right - a) for f in (0.2, 0.3, 0.4)])
    on_diag = np.stack([a + f * (diag - a) for f in (0.3, 0.5, 0.7)])
    info = support.hallucination_pairs(np.concatenate([on_axis, on_diag]), rot)
    np.testing.assert_allclose(info["separation"][:3], math.sqrt(2), rtol=1e-4)  # second-nearest
    np.testing.assert_allclose(info["angle"][:3], 0.0, atol=1e-3)
    np.testing.assert_allclose(info["separation"][3:], 1.0, rtol=1e-4)  # nearest neighbours
    np.testing.assert_allclose(info["segment_distance"], 0.0, atol=1e-6)
    summary = support.pair_summary(np.concatenate([on_axis, on_diag]), rot, 4.0)
    assert summary["num_hallucinations"] == 6
    assert summary["axis_share"] == pytest.approx(0.5) and summary["nearest_share"] == pytest.approx(0.5)


def test_pairs_1d_gap_between_non_neighbours():
    m = mj.mixture_1d([1.0, 2.0, 4.0, 5.0])
    info = support.hallucination_pairs(np.array([[1.5], [3.0], [3.5], [4.5]]), m)
    assert [tuple(p) for p in info["pairs"]] == [(0, 1), (1, 2), (1, 2), (2, 3)]
    np.testing.assert_allclose(info["separation"], [1, 2, 2, 1])
