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


def test_neighbour_pairs_follow_the_grid_geometry():
    """Gabriel neighbours: axis pairs of the square grid, diagonal pairs of the rotated one (its
    x-axis pairs are second-nearest), adjacent modes in 1D whatever their spacing."""
    for layout in ("square", "rotated"):
        g = mx.grid_2d(layout)
        means = np.asarray(g.means)
        pairs = support.neighbour_pairs(g)
        d = np.linalg.norm(means[pairs[:, 0]] - means[pairs[:, 1]], axis=1)
        assert len(pairs) == 40
        np.testing.assert_allclose(d, mx.min_mode_distance(g), rtol=1e-5)
        delta = means[pairs[:, 1]] - means[pairs[:, 0]]
        angle = np.degrees(np.arctan2(delta[:, 1], delta[:, 0])) % 180
        expected = {0.0, 90.0} if layout == "square" else {45.0, 135.0}
        assert set(np.round(angle, 3)) == expected
    pairs = support.neighbour_pairs(mj.mixture_1d([1.0, 2.0, 4.0, 5.0]))
    assert pairs.tolist() == [[0, 1], [1, 2], [2, 3]]


def test_bridge_and_blur_on_hand_placed_points():
    s = 0.05
    one = mj.mixture_1d([1.0, 2.0, 4.0], std=s)
    x = np.array([[1.0], [1.0 + 3.9 * s], [1.0 + 4.5 * s], [1.5], [1.26], [1.74], [3.0], [2.3],
                  [0.5], [np.nan], [np.inf]])
    want = [0, 0, 2, 1, 1, 1, 1, 2, 2, 2, 2]
    np.testing.assert_array_equal(support.classify(x, one, k=4.0), want)
    # 2D square grid (normalised, spacing 0.707): on an axis segment's middle = bridge; the cell
    # centre (between four modes, off every segment) and a shell around a mode = blur; the
    # diagonal midpoint of the rotated grid's x-axis pair is not on a neighbour segment either.
    g = mx.grid_2d("square")
    sp = float(mx.min_mode_distance(g))
    sg = float(g.stds[0])
    x = np.array([[0.0, 0.0], [sp / 2, 0.0], [sp / 2, 0.1 * sp], [sp / 2, 0.3 * sp],
                  [sp / 2, sp / 2], [6 * sg, 0.0], [0.0, 0.4 * sp]])
    np.testing.assert_array_equal(support.classify(x, g), [0, 1, 1, 2, 2, 2, 1])
    r = mx.grid_2d("rotated")
    means = np.asarray(r.means)
    on_x = means[np.isclose(means[:, 1], 0.0, atol=1e-6)]
    on_x = on_x[np.argsort(on_x[:, 0])]
    mid_x = (on_x[1] + on_x[2]) / 2  # x-axis neighbours of the rotated grid: second-nearest
    diag = (means[0] + means[np.argmin(np.linalg.norm(means - means[0], axis=1)
                                       + 1e9 * np.all(means == means[0], axis=1))]) / 2
    np.testing.assert_array_equal(support.classify(np.stack([mid_x, diag]), r), [2, 1])
    rates = support.label_rates(support.classify(x, g))
    assert rates["hallucinated"] == pytest.approx(rates["bridge"] + rates["blur"])
    with pytest.raises(InputError, match="tube"):
        support.classify(x, g, tube=0.0)


def test_mode_width_of_the_data_is_one_sigma():
    g = mx.grid_2d("square")
    x = np.asarray(g.sample(mj_key(0), 50_000))
    # Truncating at k = 4 sigma removes ~3e-4 of the chi^2_2 mass: width within 1 % of 1.
    assert support.mode_width(x, g) == pytest.approx(1.0, rel=0.01)
    assert support.mode_width(np.asarray(g.means) + 0.5 * np.asarray(g.stds)[:, None], g) == \
        pytest.approx(0.5, rel=1e-4)


def mj_key(seed):
    import jax

    return jax.random.key(seed)
