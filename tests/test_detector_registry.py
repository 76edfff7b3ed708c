"""The detector registry: one entry makes a detector known to the benchmark, the detection
study's scoring and the recursion's filters, with no other file edited."""

import dataclasses

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax import recursive as rec
from mi_jax.detection import benchmark as bm
from mi_jax.detection import registry
from mi_jax.validation import InputError
from tests.test_detection import _tempered_oracle
from tests.test_recursive import _problem, _training

TOY = "toy_small_eps"


@pytest.fixture
def toy():
    """A test-local detector: the final |eps_hat| with the opposite direction (a small final
    eps norm = more likely hallucinated), reading an observer under its own name."""
    det = mj.register_detector(mj.Detector(
        TOY, "the final |eps_hat|, lower = more likely hallucinated",
        lambda setup: {"toy_eps": mj.FinalEpsNorm()}, lambda o, c: o["toy_eps"], direction=-1))
    yield det
    mj.unregister_detector(TOY)
    assert TOY not in mj.detector_names()


def test_a_registered_detector_is_scored_by_the_benchmark_oriented(toy):
    schedule = mj.linear_schedule()
    eps = _tempered_oracle([1.0, 2.0, 3.0], 0.05, schedule, 150.0)
    dets = bm.standard_detectors([(0, 10)], (0, 10))
    assert TOY in [d.name for d in dets]
    res = mj.sample(eps, schedule, jax.random.key(0), 500, (1,),
                    observers=bm.merged_observers(dets))
    scores = bm.score_all(dets, res.observed, {"flipd": np.zeros(500)}, 500)
    np.testing.assert_array_equal(scores[TOY], -scores["eps_norm_last"])  # direction applied
    assert TOY not in bm.fusion_inputs(list(scores))  # the fusion's inputs are named, not all


def test_a_registered_detector_works_as_a_recursion_filter(toy):
    rcfg = rec.RecursionConfig(generations=1, num_train=120, num_candidates=160,
                               filters=("none", f"detector:{TOY}"))
    assert rcfg.detectors == ("var_x0", TOY)
    res = rec.run_recursion(_problem(), _training(), rcfg, [0], log=lambda *_: None)
    kept_by = dict(zip(rcfg.filters, res.metrics[0]["kept"]["first"]))
    # The toy filter keeps the largest final eps norms: a different set from 'none' (first 120).
    assert kept_by["none"] != kept_by[f"detector:{TOY}"]


def test_a_detectors_scores_drive_select_in_its_direction(toy):
    rng = np.random.default_rng(0)
    norms = rng.uniform(size=50)
    scores = {TOY: mj.score_detector(TOY, {"toy_eps": norms}, mj.DetectorContext(50))}
    kept = rec.select(f"detector:{TOY}", scores, np.ones(50, bool), 10, jax.random.key(0))
    assert norms[kept].min() > np.delete(norms, kept).max()  # the 10 largest norms kept


def test_unknown_detector_names_are_one_input_error_listing_the_registered():
    with pytest.raises(InputError, match=r"^detector='nope': not registered; registered: var_x0,"):
        registry.get("nope")
    with pytest.raises(InputError, match=r"^filters='detector:nope': must be one of .*var_xt"):
        rec.RecursionConfig(filters=("detector:nope",))
    with pytest.raises(InputError, match="^detector=.var_x0.: is already registered"):
        mj.register_detector(registry.get("var_x0"))
    with pytest.raises(InputError, match="^score=.bad.: needs exactly one"):
        mj.Detector("bad", "neither score nor post_hoc")
    with pytest.raises(InputError, match="^scores=.*lacks the detector.s. nope"):
        mj.fit_fused_detector({"var_xt": np.ones(4)}, np.array([0, 1, 0, 1], bool), ["nope"])


def test_every_consumer_reads_the_registry():
    """The benchmark reports every registered detector marked for it, the detection study
    compares the ones marked for it, the recursion accepts every pass-scored one."""
    names = set(mj.detector_names())
    reported = {d.source for d in bm.standard_detectors([(0, 10), (0, 5)], (0, 10),
                                                        regions=np.ones((2, 3)))}
    assert reported == {n for n in names if registry.get(n).in_benchmark}
    from mi_jax.detection import evaluate
    assert set(evaluate.detection_detectors()) <= names
    for n in registry.filter_names():
        rec.RecursionConfig(filters=(f"detector:{n}",))
    assert dataclasses.replace(registry.get("var_x0")).label == "x0 var"
    assert "| flipd | the model (post hoc) |" in registry.describe()
