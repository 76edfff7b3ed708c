"""The detector benchmark's pieces: the detector interface, the held-out evaluation, the fusion."""

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax.detection import benchmark as bm
from mi_jax.validation import InputError
from tests.test_detection import _tempered_oracle


def test_standard_detectors_read_the_same_pass_as_the_papers_statistics():
    """One merged pass on a known answer (the tempered 1D denoiser that bridges): each
    detector's score equals the statistic computed by the plain observers with the same key,
    and the bridges are found (variance and curvature AUROC > 0.9, the random floor ~0.5)."""
    schedule = mj.linear_schedule()
    eps = _tempered_oracle([1.0, 2.0, 3.0], 0.05, schedule, 150.0)
    dets = bm.standard_detectors([(0, 10), (0, 5)], (0, 10))
    res = mj.sample(eps, schedule, jax.random.key(0), 3000, (1,),
                    observers=bm.merged_observers(dets))
    plain = mj.sample(eps, schedule, jax.random.key(0), 3000, (1,),
                      observers={"hal": mj.window_variance([(0, 10), (0, 5)]),
                                 "trace": mj.jacobian_trace((0, 10))})
    scores = bm.score_all(dets, res.observed, {"flipd": np.zeros(3000)}, 3000)
    np.testing.assert_array_equal(scores["var_x0 0:10"], plain.observed["hal"].var[0])
    np.testing.assert_array_equal(scores["var_x0 0:5"], plain.observed["hal"].var[1])
    np.testing.assert_array_equal(scores["curvature"],
                                  mj.curvature_score(plain.observed["trace"]))
    labels = mj.classify(res.x, mj.mixture_1d([1.0, 2.0, 3.0]), 4.0)
    sel = (labels == 0) | (labels == 1)
    bridge = labels[sel] == 1
    assert bridge.sum() >= 20
    for name, floor in (("var_x0 0:10", 0.9), ("curvature", 0.9)):
        assert mj.auroc(scores[name][sel], bridge) > floor, name
    assert abs(mj.auroc(scores[bm.RANDOM][sel], bridge) - 0.5) < 0.15


def test_merged_observers_refuse_two_different_observers_under_one_name():
    a = bm.ReportedDetector("a", {"v": mj.window_variance((0, 10))}, "var_x0")
    b = bm.ReportedDetector("b", {"v": mj.window_variance((0, 5))}, "var_x0")
    assert set(bm.merged_observers([a, a])) == {"v"}
    with pytest.raises(InputError, match="^observers=.v.: is needed by two"):
        bm.merged_observers([a, b])


def test_fitted_detectors_are_measured_on_the_other_half_only():
    """A window that is perfect on the fit half and random on the test half is picked as the
    best window (selection sees only the fit half) but reported at chance (no leak); a truly
    informative window would be reported high."""
    rng = np.random.default_rng(0)
    n = 4000
    positive = rng.random(n) < 0.1
    fit = bm.fit_split(n, 0)
    leaky = np.where(fit, positive + 0.01 * rng.random(n), rng.random(n))
    honest = positive * 0.5 + rng.random(n)
    out = bm.evaluate_task({"var_x0 0:10": rng.random(n), "var_x0 0:5": leaky,
                            "var_x0 5:10": honest}, positive, fit)
    assert out[bm.BEST_WINDOW]["window"] == "var_x0 0:5"
    assert abs(out[bm.BEST_WINDOW]["auroc"] - 0.5) < 0.06
    assert out["var_x0 5:10"]["auroc"] > 0.55
    assert out["var_x0 0:10"]["num"] == int((~fit).sum())
    assert fit.sum() == n // 2


def test_logistic_fusion_recovers_the_informative_direction():
    """Data from a known logistic model on two features (the second pure noise): the fitted
    score ranks the test half like the true logit, and puts ~no weight on the noise."""
    rng = np.random.default_rng(1)
    n = 20000
    f = rng.normal(size=(n, 2))
    logit = 3.0 * f[:, 0] - 2.0
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    fit = bm.fit_logistic(f[: n // 2], y[: n // 2], l2=1e-4)
    s = bm.logistic_score(f[n // 2:], fit)
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    assert np.corrcoef(rank(s), rank(logit[n // 2:]))[0, 1] > 0.99
    assert abs(fit[2][1]) < 0.05 * abs(fit[2][0])
    assert fit[2][0] > 0
    with pytest.raises(InputError, match="^positive"):
        bm.fit_logistic(f[:10], np.zeros(10, bool))


def test_fusion_beats_its_inputs_when_they_carry_independent_signal():
    rng = np.random.default_rng(2)
    n = 8000
    positive = rng.random(n) < 0.05
    a = np.exp(positive * 1.0 + rng.normal(size=n))   # a variance-like, log-normal score
    b = positive * 1.0 + rng.normal(size=n)          # a signed score
    # window 0:5 carries no signal: the fusion must take the window best on the fit half
    scores = {"var_x0 0:5": np.exp(rng.normal(size=n)), "var_x0 0:10": a,
              "curvature": np.exp(b), "random": rng.random(n)}
    fit = bm.fit_split(n, 3)
    out = bm.evaluate_task(scores, positive, fit, bm.fusion_inputs(list(scores)))
    assert out[bm.FUSED]["inputs"] == ["var_x0 0:10", "curvature"]
    assert bm.fusion_inputs(["curvature", "flipd"]) == ["curvature", "flipd"]
    assert out[bm.FUSED]["auroc"] > max(out["var_x0 0:10"]["auroc"], out["curvature"]["auroc"]) + 0.03


def test_sample_seed_draws_an_independent_set_and_zero_keeps_the_default():
    from mi_jax import sweeps
    from mi_jax.studies.detectors import sample_keys

    def data(keys):
        return np.asarray(jax.vmap(lambda k: jax.random.normal(k, (4,)))(keys))

    default = data(sweeps.seed_keys([0, 1], 5))
    np.testing.assert_array_equal(data(sample_keys(2, 5)), default)
    other = data(sample_keys(2, 5, sample_seed=1))
    assert other.shape == default.shape and not np.allclose(other, default)
    assert not np.allclose(other[0], other[1])  # still one stream per model
