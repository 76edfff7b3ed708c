"""SIMPLE SHAPES: generator geometry, the shape counter, the UNet, and the image loader."""

from collections import deque

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.data import images as imgs
from mi_jax.data import shape_counter as sc
from mi_jax.data import shapes as sh
from mi_jax.validation import InputError


def test_generator_is_seeded_and_follows_the_official_geometry():
    a = sh.generate(3, 4000)
    b = sh.generate(3, 4000)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, sh.generate(4, 4000).images)
    assert a.images.shape == (4000, 64, 64) and set(np.unique(a.images)) == {-1.0, 1.0}
    assert a.present.any(axis=1).all()  # all-black draws rejected
    # Each shape present w.p. 1/2 given at least one: 0.5 / (7/8) = 4/7; binomial sd ~0.008.
    np.testing.assert_allclose(a.present.mean(0), 4 / 7, atol=0.03)
    on = a.images > 0
    assert not on[:, 63].any() and not on[:, :, 63].any()  # last row and column stay black
    for j, shape in enumerate(sh.SHAPES):
        cols = on[:, :, j * 21:(j + 1) * 21]
        alone = a.present[:, j]
        np.testing.assert_array_equal(cols.any(axis=(1, 2)), alone)  # a shape only in its column
        areas = cols[alone].sum(axis=(1, 2))
        lo, hi = {"triangle": (60, 65), "square": (64, 64), "pentagon": (60, 72)}[shape]
        assert areas.min() >= lo and areas.max() <= hi, (shape, areas.min(), areas.max())
    sq = a.images[a.present[:, 1]][:, :, 21:42] > 0
    assert np.all(sq.sum(axis=(1, 2)) == 64)  # the official assert: exactly 64 px
    ys, xs = np.nonzero(sq[0])
    assert xs.max() - xs.min() == 7 and ys.max() - ys.min() == 7


def test_downsampled_resolution_is_average_pooling():
    full = sh.generate(1, 50)
    half = sh.generate(1, 50, resolution=32)
    ref = ((full.images + 1) / 2).reshape(50, 32, 2, 32, 2).mean(axis=(2, 4)) * 2 - 1
    np.testing.assert_allclose(half.images, ref, atol=1e-6)


def _bfs_labels(binary):
    """Reference 8-connected labelling by breadth-first search (label = smallest flat index)."""
    h, w = binary.shape
    out = np.full((h, w), -1)
    for start in range(h * w):
        y, x = divmod(start, w)
        if not binary[y, x] or out[y, x] >= 0:
            continue
        out[y, x] = start
        queue = deque([(y, x)])
        while queue:
            cy, cx = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < h and 0 <= nx < w and binary[ny, nx] and out[ny, nx] < 0:
                        out[ny, nx] = start
                        queue.append((ny, nx))
    return out


def test_connected_components_match_breadth_first_search():
    rng = np.random.default_rng(0)
    binary = rng.random((6, 24, 24)) < np.array([0.1, 0.3, 0.45, 0.55, 0.2, 0.0])[:, None, None]
    got = np.asarray(sc.label_components(jnp.asarray(binary)))
    for i in range(len(binary)):
        np.testing.assert_array_equal(got[i], _bfs_labels(binary[i]))


@pytest.mark.parametrize("resolution", [64, 32])
def test_counter_finds_every_training_image_in_support(resolution):
    data = sh.generate(5, 1500, resolution)
    count = sc.count_shapes(data.images, resolution)
    assert count.in_support.all()
    np.testing.assert_array_equal(count.counts[:, np.arange(3), np.arange(3)], data.present)
    assert count.counts.sum() == data.present.sum() and not count.malformed.any()


def test_counter_labels_hand_made_counter_examples():
    acc = sc.counter_accuracy(64, per_kind=15, seed=2)
    assert acc == {k: 1.0 for k in acc}, acc
    images, expected, kinds = sc.labelled_examples(64, per_kind=5, seed=1)
    count = sc.count_shapes(images, 64)
    two = kinds == "two_squares"
    assert np.all(count.counts[two, 1, 1] == 2)
    rates = count.rates()
    assert rates["count_primary"]["duplicate"] == 5 and rates["count_primary"]["empty"] == 5
    assert abs(rates["hallucination_rate"] - 25 / 30) < 1e-9


def test_column_masks_partition_the_columns():
    for r in (64, 32, 16):
        m = sc.column_masks(r)[..., 0]
        assert m.shape == (3, r, r) and m.sum(0).max() == 1
        centres = (np.arange(r) + 0.5) * 64 / r  # in full-resolution pixels
        for j in range(3):
            inside = (centres >= 21 * j) & (centres < 21 * (j + 1))
            np.testing.assert_array_equal(m[j], np.broadcast_to(inside[None, :], (r, r)))


def test_unet_shapes_time_paths_and_zero_init_output():
    net = mj.make_unet(1, base=8, mults=(1, 2), attention=True)
    apply = jax.jit(net.apply)  # eager NNX dispatches op by op: slow to test
    params = jax.jit(net.init)(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (3, 16, 16, 1))
    t5 = jnp.array([5, 5, 5])
    np.testing.assert_array_equal(apply(params, x, t5), 0.0)  # zero-initialised output conv
    perturbed = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(2), a.shape),
                             params)
    vec = apply(perturbed, x, t5)
    assert vec.shape == x.shape
    np.testing.assert_allclose(apply(perturbed, x, jnp.int32(5)), vec, rtol=1e-5, atol=1e-6)
    assert not np.allclose(apply(perturbed, x, jnp.array([7, 7, 7])), vec)
    # Each image is processed on its own (GroupNorm, not BatchNorm): permuting the batch permutes
    # the output.
    np.testing.assert_allclose(apply(perturbed, x[::-1], t5[::-1]), vec[::-1], rtol=1e-5,
                               atol=1e-6)
    feats = jax.eval_shape(net.features, perturbed, x, jnp.int32(5))  # values: the e2e test
    assert feats.shape == (3, 8, 8, 16)  # 16x16 -> 8x8 at the second level, 2 x 8 channels
    stacked = jax.eval_shape(jax.vmap(net.init), jax.random.split(jax.random.key(3), 2))
    assert jax.tree.leaves(stacked)[0].shape[0] == 2


def test_bf16_unet_shares_params_and_stays_close_to_float32():
    # One level keeps the three compiles cheap; attention is on to cover its bf16 path.
    f32 = mj.make_unet(1, base=8, mults=(1,), attention=True)
    bf16 = mj.make_unet(1, base=8, mults=(1,), attention=True, compute_dtype="bfloat16")
    params = jax.jit(f32.init)(jax.random.key(0))
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(2), a.shape),
                          params)  # non-zero output conv
    assert jax.tree.structure(jax.eval_shape(bf16.init, jax.random.key(0))) == \
        jax.tree.structure(params)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(jax.eval_shape(bf16.init,
                                                                              jax.random.key(0))))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    t = jnp.array([3, 50, 400, 900])
    ref = np.asarray(jax.jit(f32.apply)(params, x, t))
    lowered = jax.jit(bf16.apply).lower(params, x, t)
    assert "bf16" in lowered.as_text()  # the matmuls really run in bf16
    out = lowered.compile()(params, x, t)
    assert out.dtype == jnp.float32 and out.shape == ref.shape
    # bf16 keeps 8 mantissa bits (relative error ~4e-3 per op); a dozen layers stay within ~5 %.
    rel = np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref)
    assert 1e-4 < rel < 0.05, rel
    grads = jax.grad(lambda p: jnp.mean(bf16.apply(p, x, t) ** 2))(params)
    assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    with pytest.raises(InputError, match="compute_dtype"):
        mj.make_unet(compute_dtype="float16")


def test_png_folder_round_trip_and_errors(tmp_path):
    data = sh.generate(0, 6, 32).images
    for i, img in enumerate(data):
        imgs.save_png(tmp_path / f"{i:02d}.png", img)
    loaded = imgs.load_png_folder(tmp_path, 16)
    assert loaded.shape == (6, 16, 16, 1)
    ref = ((data + 1) / 2).reshape(6, 16, 2, 16, 2).mean(axis=(2, 4)) * 2 - 1
    np.testing.assert_allclose(loaded[..., 0], ref, atol=0.01)
    with pytest.raises(InputError, match="multiple of"):
        imgs.load_png_folder(tmp_path, 24)
    with pytest.raises(InputError, match="not a directory"):
        imgs.load_png_folder(tmp_path / "missing", 16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no .png"):
        imgs.load_png_folder(empty, 16)
    imgs.save_png(tmp_path / "zz.png", np.zeros((16, 16)))
    with pytest.raises(InputError, match="one size"):
        imgs.load_png_folder(tmp_path, 16)



def test_heldout_best_window_is_chosen_on_one_half_and_scored_on_the_other():
    from mi_jax.studies.shapes_detection import heldout_best_window

    rng = np.random.default_rng(0)
    n = 400
    primary = np.where(rng.random((1, n)) < 0.3, sc.CATEGORIES.index("duplicate"), -1)
    dup = (primary == sc.CATEGORIES.index("duplicate")).astype(float)
    noise = rng.random((1, n))
    odd = (np.arange(n) % 2 == 1)[None]
    # Window 0: random. Window 1: separates on every image. Window 2: perfect on the even
    # (fitting) half and reversed on the odd half -- chosen only if selected on the test half.
    scores = np.stack([noise, dup + 0.5 * noise, np.where(odd, -dup, dup) + 0.5 * noise], axis=1)
    out = heldout_best_window(scores, primary, [(0, 10), (10, 20), (20, 30)])
    assert out["window"] == [10, 20] and out["fit_auroc"] == 1.0 and out["test_auroc"] == 1.0
    # With window 1 gone, the over-fitted window 2 is chosen and its held-out AUROC shows it.
    out = heldout_best_window(scores[:, [0, 2]], primary, [(0, 10), (20, 30)])
    assert out["window"] == [20, 30] and out["fit_auroc"] == 1.0 and out["test_auroc"] == 0.0
    assert out["test_positives"] == int(dup[0, 1::2].sum())


def test_content_controls_see_through_a_score_that_only_counts_shapes():
    from mi_jax.studies.shapes_detection import content_controls

    rng = np.random.default_rng(1)
    n, res = 300, 32
    dup = sc.CATEGORIES.index("duplicate")
    primary = np.where(rng.random((1, n)) < 0.3, dup, -1)
    totals = rng.integers(1, 3, (1, n)) + (primary == dup)  # duplicates hold one shape more
    columns = sc.column_masks(res)
    # Final images: the left column's ink is 0.1 per shape (a duplicate's column holds two).
    images = -np.ones((1, n, res, res, 1))
    left = columns[0].astype(bool)
    images[0][:, left] = (-1 + 2 * 0.1 * np.where(primary[0] == dup, 2, 1))[:, None]
    counting = totals[:, None].astype(float)  # (M, W=1, n): a score = the number of shapes
    informed = counting + 2.0 * (primary == dup)[:, None]  # ... plus the truth
    scores = {"whole_image": np.concatenate([counting, informed], 1),
              "column_max": np.concatenate([counting, informed], 1)}
    column_ink = (images[0][:, left].mean(1) + 1) / 2  # the left column's ink, per image
    per_column = np.zeros((1, 2, n, 3))
    per_column[0, 0, :, 0] = column_ink  # window 0 tracks the left column's ink ...
    per_column[0, 1] = rng.random((n, 3))  # ... window 1 does not
    out = content_controls(scores, per_column, images, primary, totals, columns,
                           [(0, 10), (10, 20)])
    assert out["final_ink_column_max"] == 1.0  # the ink alone separates them
    assert out["stratified"]["whole_image"][0] == 0.5  # counting shapes: nothing beyond
    assert out["stratified"]["column_max"][1] == 1.0
    assert sum(pos for pos, _ in out["stratum_sizes"].values()) == int(np.sum(primary == dup))
    assert out["ink_correlation"][0] > 0.5 > abs(out["ink_correlation"][1])
