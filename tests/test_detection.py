import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.detection import metrics as dm
from mi_jax.validation import InputError


def brute_auroc(s, p):
    pos, neg = s[p], s[~p]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(300) < 0.2
    s = np.round(rng.normal(size=300) + 1.5 * p, 1)  # rounding makes ties
    assert dm.auroc(s, p) == pytest.approx(brute_auroc(s, p), abs=1e-12)
    fpr, tpr, _ = dm.roc_curve(s, p)
    assert np.trapezoid(tpr, fpr) == pytest.approx(brute_auroc(s, p), abs=1e-12)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1


def test_auroc_extremes():
    s = np.arange(10.0)
    assert dm.auroc(s, s >= 5) == 1.0 and dm.auroc(s, s < 5) == 0.0
    assert np.isnan(dm.auroc(s, np.zeros(10, bool)))


def test_stratified_auroc_counts_only_pairs_within_a_stratum():
    rng = np.random.default_rng(4)
    strata = rng.integers(0, 3, 600)
    p = rng.random(600) < 0.15 + 0.25 * strata  # positives more common in high strata
    s = np.round(rng.normal(size=600) + 0.8 * p, 1)
    want_num = want_pairs = 0.0
    for k in range(3):
        sel = strata == k
        pairs = p[sel].sum() * (~p[sel]).sum()
        want_num += brute_auroc(s[sel], p[sel]) * pairs
        want_pairs += pairs
    assert dm.stratified_auroc(s, p, strata) == pytest.approx(want_num / want_pairs, abs=1e-12)
    assert dm.stratified_auroc(s, p, np.zeros(600)) == pytest.approx(dm.auroc(s, p), abs=1e-12)
    # A score that is the confounder itself ranks positives high overall but not within strata.
    assert dm.auroc(strata.astype(float), p) > 0.7
    assert dm.stratified_auroc(strata.astype(float), p, strata) == 0.5
    assert np.isnan(dm.stratified_auroc(s, p, np.where(p, 0, 1)))  # no stratum holds both
    with pytest.raises(InputError, match="strata"):
        dm.stratified_auroc(s, p, strata[:10])


def test_rank_correlation():
    rng = np.random.default_rng(5)
    a = rng.normal(size=200)
    assert dm.rank_correlation(a, np.exp(3 * a)) == pytest.approx(1.0)  # any increasing map
    assert dm.rank_correlation(a, -a) == pytest.approx(-1.0)
    b = np.round(a + rng.normal(size=200), 0)  # ties
    ra, rb = dm.average_ranks(a), dm.average_ranks(b)
    assert dm.rank_correlation(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-12)
    assert dm.average_ranks([3.0, 1.0, 3.0]).tolist() == [2.5, 1.0, 2.5]
    assert np.isnan(dm.rank_correlation(a, np.ones(200)))


def test_operating_points_by_brute_force():
    rng = np.random.default_rng(3)
    p = rng.random(2000) < 0.1
    s = rng.normal(size=2000) + 2.5 * p
    neg, pos = np.sort(s[~p]), s[p]
    for kept in (0.9, 0.96):
        thr = neg[int(np.ceil(kept * (len(neg) - 1)))]
        assert np.mean(s[~p] <= thr) >= kept
        assert dm.removed_at_kept(s, p, kept) == pytest.approx(np.mean(pos > thr))
    thr = np.sort(pos)[int(np.floor(0.05 * (len(pos) - 1)))]
    assert dm.kept_at_removed(s, p, 0.95) == pytest.approx(np.mean(s[~p] < thr))
    assert np.mean(pos >= thr) >= 0.95


def test_filters():
    s = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    np.testing.assert_array_equal(dm.keep_lowest(s, 3), [1, 3, 4])
    np.testing.assert_array_equal(dm.keep_fraction(s, 0.4), [1, 3])
    thr = dm.calibrated_threshold(np.arange(101.0), 0.96)
    assert thr == 96.0
    np.testing.assert_array_equal(dm.keep_below(s, 3.0), [1, 3, 4])
    with pytest.raises(InputError, match="^count"):
        dm.keep_lowest(s, 6)
    with pytest.raises(InputError, match="^positive"):
        dm.auroc(s, [True])


def test_flipd_matches_gaussian_closed_form():
    """For data N(0, s^2 I) the exact eps is linear and FLIPD = D (1 - b^2/v) + a^2 b^2 |x|^2 / v^2,
    v = a^2 s^2 + b^2: ~D for a wide Gaussian, ~0 at the centre of a point-like one."""
    import jax
    import jax.numpy as jnp

    import mi_jax as mj
    from mi_jax.detection.detectors import flipd

    schedule = mj.linear_schedule()
    t0 = 5
    a = float(schedule.sqrt_alphas_bar[t0])
    b = float(schedule.sqrt_one_minus_alphas_bar[t0])
    x = jnp.array([[0.0, 0.0], [0.3, -0.1], [1.0, 2.0]])
    for s in (3.0, 0.01):
        g = mj.GaussianMixture([[0.0, 0.0]], s)
        lid = np.asarray(flipd(mj.oracle_eps(g, schedule), schedule, x, t0, jax.random.key(0),
                               probes=64))
        s2 = float(g.stds[0]) ** 2
        v = a * a * s2 + b * b
        ref = 2 * (1 - b * b / v) + a * a * b * b * np.sum(np.asarray(x) ** 2, -1) / v**2
        np.testing.assert_allclose(lid, ref, rtol=0.05, atol=0.05)
    assert abs(lid[0]) < 0.05  # point-like mode, at its centre


def _tempered_oracle(means, std, schedule, temperature):
    """The exact 1D mixture denoiser with its responsibilities tempered (softmax(logits / T)):
    a smooth x0_hat between modes, as a network learns it (paper Sec. 4), so it bridges."""
    mu = jnp.asarray(means, jnp.float32)[None]  # (1, K) against x (n, 1)

    def eps_fn(x, t):
        a = schedule.sqrt_alphas_bar[t][:, None]
        b = schedule.sqrt_one_minus_alphas_bar[t][:, None]
        v = a**2 * std**2 + b**2
        r = jax.nn.softmax(-(x - a * mu) ** 2 / (2 * v) / temperature, axis=-1)
        x0 = jnp.sum(r * (mu + a * std**2 / v * (x - a * mu)), axis=-1, keepdims=True)
        return (x - a * x0) / b

    return eps_fn


def test_trajectory_variance_flags_the_bridges_of_a_smoothed_denoiser():
    """Library level, no training: the public sampler + labels + metrics on a known answer. The
    tempered denoiser puts samples between modes; their x0_hat variance over the official window
    is higher than in-support samples' (measured AUROC 0.97 with these seeds)."""
    schedule = mj.linear_schedule()
    mix = mj.mixture_1d([1.0, 2.0, 3.0])
    res = mj.sample(_tempered_oracle([1.0, 2.0, 3.0], 0.05, schedule, 150.0), schedule,
                    jax.random.key(0), 4000, (1,))
    labels = mj.classify(res.x, mix, 4.0)
    bridge, inside = labels == 1, labels == 0
    assert bridge.sum() >= 20
    sel = bridge | inside
    assert mj.auroc(res.hal[sel], bridge[sel]) > 0.9
    # The exact denoiser (temperature 1) is the control: no bridge at all.
    exact = mj.sample(_tempered_oracle([1.0, 2.0, 3.0], 0.05, schedule, 1.0), schedule,
                      jax.random.key(0), 4000, (1,))
    assert np.sum(mj.classify(exact.x, mix, 4.0) == 1) == 0


def test_by_category_scores_each_kind_against_the_negatives_only():
    # negatives score 0..9; kind 0 ("dup") scores above all of them, kind 1 ("empty") below.
    scores = np.r_[np.arange(10.0), 20.0, 21.0, -1.0, -2.0]
    codes = np.r_[np.full(10, -1), 0, 0, 1, 1]
    out = dm.by_category(scores, codes, ("dup", "empty"))
    assert out["dup"]["auroc"] == 1.0 and out["dup"]["num_positive"] == 2 and out["dup"]["num"] == 12
    assert out["empty"]["auroc"] == 0.0
    assert out["all"]["auroc"] == pytest.approx(0.5) and out["all"]["num_positive"] == 4
    with pytest.raises(InputError, match="^codes"):
        dm.by_category(scores, codes[:5], ("dup", "empty"))


def test_curvature_score_flags_the_bridges_of_a_smoothed_denoiser():
    """The Jacobian-trace observer (issue 17's curvature detector) on the same known answer:
    between modes tr(d eps_hat / d x_t) is far from its in-support value, so
    |trace - median| ranks bridges above in-support samples (measured 0.998; variance 0.968)."""
    schedule = mj.linear_schedule()
    mix = mj.mixture_1d([1.0, 2.0, 3.0])
    res = mj.sample(_tempered_oracle([1.0, 2.0, 3.0], 0.05, schedule, 150.0), schedule,
                    jax.random.key(0), 4000, (1,),
                    observers={"trace": mj.jacobian_trace((0, 10)),
                               "hal": mj.window_variance((0, 10))})
    labels = mj.classify(res.x, mix, 4.0)
    bridge, inside = labels == 1, labels == 0
    assert bridge.sum() >= 20
    sel = bridge | inside
    trace = np.asarray(res.observed["trace"])
    assert mj.auroc(mj.curvature_score(trace)[sel], bridge[sel]) > 0.9
    # Smoothed this hard, x0_hat is flat between modes: the trace is high there, not low (a
    # steeper denoiser, temperature 4, gives the opposite sign), hence the two-sided score.
    assert mj.auroc(trace[sel], bridge[sel]) > 0.9


def test_fused_detector_is_one_call_and_matches_the_benchmarks_fusion():
    import mi_jax as mj
    from mi_jax.detection import benchmark as bm

    rng = np.random.default_rng(0)
    n = 600
    positive = rng.random(n) < 0.2
    scores = {"var_x0 [0, 10)": np.exp(rng.normal(positive * 1.5, 1.0)),
              "flipd": rng.normal(positive * 0.8, 1.0),
              "eps_norm_last": np.exp(rng.normal(0.0, 1.0, n))}
    fit = bm.fit_split(n, seed=3)
    task = bm.evaluate_task(scores, positive, fit, ["flipd", "eps_norm_last"])
    fused = mj.fit_fused_detector(scores, positive, ["flipd", "eps_norm_last"], fit_mask=fit)
    got = mj.detection_summary(fused.score(scores)[~fit], positive[~fit])
    assert got["auroc"] == task[bm.FUSED]["auroc"]
    assert fused.weights.tolist() == task[bm.FUSED]["weights"]
    # Fusing the informative detectors beats each alone on the held-out half.
    both = mj.fit_fused_detector(scores, positive, ["var_x0 [0, 10)", "flipd"], fit_mask=fit)
    alone = [mj.auroc(scores[k][~fit], positive[~fit]) for k in ("var_x0 [0, 10)", "flipd")]
    assert mj.auroc(both.score(scores)[~fit], positive[~fit]) > max(alone)
