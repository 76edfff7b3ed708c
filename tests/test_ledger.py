"""The claims ledger: verdicts follow the stated rule on hand-made numbers (Student-t over seeds,
counting intervals, too few positives, not converged), rows read the experiments' metrics, and
a missing experiment is 'not measured'."""

import json
import math

import numpy as np
import pytest

from mi_jax import ledger
from mi_jax.evaluation import intervals

NAN = float("nan")


@pytest.mark.parametrize("values, full, weak, higher, kwargs, want", [
    # Three seeds whose Student-t bound (t(0.975, 2) = 4.30 standard errors) clears the bar.
    ([0.975, 0.98, 0.978], 0.95, 0.75, True, {}, ledger.REPRODUCED),
    # Mean - 2 se = 0.956 > 0.95 (the old rule's "reproduced"), but mean - 4.30 se = 0.935.
    ([0.97, 0.99, 0.96], 0.95, 0.75, True, {}, ledger.PARTLY),
    # Two seeds can never be "reproduced", however tight.
    ([0.99, 0.99], 0.95, 0.75, True, {}, ledger.PARTLY),
    ([0.99], 0.95, 0.75, True, {}, ledger.PARTLY),
    # A zero effect is not a direction: strict comparisons against 0.
    ([0.0, 0.0, 0.0], 0.0, 0.0, True, {}, ledger.NOT_REPRODUCED),
    ([0.02, -0.01, 0.03], 0.0, 0.0, True, {}, ledger.PARTLY),  # direction, not beyond spread
    ([0.60, 0.70, 0.65], 0.95, 0.75, True, {}, ledger.NOT_REPRODUCED),
    # The seeds agree, the pooled counts do not clear the bar (e.g. 11 of 11 removed: ~72 %).
    ([1.0, 1.0, 1.0], 0.95, 0.5, True, {"counting": intervals.wilson(11, 11)}, ledger.PARTLY),
    ([0.97, 0.97, 0.97], 0.95, 0.5, True, {"counting": (0.955, 0.98)}, ledger.REPRODUCED),
    # A counted claim whose counts are missing cannot be reproduced.
    ([0.97, 0.97, 0.97], 0.95, 0.5, True, {"counting": (NAN, NAN)}, ledger.PARTLY),
    # Detection rows: too few pooled positives is its own verdict, whatever the values.
    ([1.0, 1.0, 1.0], 0.95, 0.5, True, {"positives": 11, "min_positives": 100}, ledger.TOO_FEW),
    ([1.0, 1.0, 1.0], 0.95, 0.5, True, {"positives": None, "min_positives": 100},
     ledger.TOO_FEW),
    ([0.99, 0.99, 0.995], 0.95, 0.5, True, {"positives": 100, "min_positives": 100},
     ledger.REPRODUCED),
    # Rows on unconverged models.
    ([0.2, 0.2, 0.2], 0.001, 0.0, True, {"converged": False}, ledger.NOT_CONVERGED),
    ([0.2, 0.21, 0.2], 0.001, 0.0, True, {"converged": True}, ledger.REPRODUCED),
    # Ceilings (smaller supports the claim): both upper bounds must stay under the bar.
    ([0.01, 0.02, 0.015], 0.05, 0.2, False, {"counting": (0.01, 0.03)}, ledger.REPRODUCED),
    ([0.01, 0.02, 0.015], 0.05, 0.2, False, {"counting": (0.01, 0.06)}, ledger.PARTLY),
    ([0.01, 0.30, 0.02], 0.05, 0.2, False, {}, ledger.PARTLY),
    ([0.40, 0.50, 0.45], 0.05, 0.2, False, {}, ledger.NOT_REPRODUCED),
    # NaN seeds are dropped; none left is "not measured".
    ([0.975, NAN, 0.98, 0.978], 0.95, 0.75, True, {}, ledger.REPRODUCED),
    ([NAN, 0.99, NAN], 0.95, 0.75, True, {}, ledger.PARTLY),
    ([], 0.0, 0.0, True, {}, ledger.NOT_MEASURED),
    ([NAN, NAN], 0.0, 0.0, True, {"converged": False}, ledger.NOT_MEASURED),
])
def test_verdict_rule(values, full, weak, higher, kwargs, want):
    assert ledger.verdict(values, full, weak, higher, **kwargs) == want


def test_the_rule_is_written_where_users_read_it():
    for text in (f"fewer than {ledger.MIN_POSITIVES} hallucinations", f">= {ledger.MIN_SEEDS} seeds",
                 "Student-t", "Wilson", "Hanley-McNeil", "Not converged"):
        assert text in ledger.RULE, text
    from experiments import ledger as entry

    assert ledger.RULE in entry.__doc__  # absl's --help prints the module docstring


def _t_cdf(x, df):
    """Student-t CDF by float64 Simpson integration of its density (a reference, no SciPy)."""
    t = np.linspace(0.0, x, 400_001)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = c * (1 + t * t / df) ** (-(df + 1) / 2)
    h = t[1] - t[0]
    return 0.5 + h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 29, 30, 31, 60, 500])
def test_t_quantile_is_the_975_quantile(df):
    assert _t_cdf(intervals.t_quantile_975(df), df) == pytest.approx(0.975, abs=2e-6)


def test_wilson_and_hanley_mcneil_against_closed_forms():
    # Wilson at 0 of n has the closed form z^2 / (n + z^2) as its upper end.
    z2 = intervals.Z_975 ** 2
    assert intervals.wilson(0, 50) == pytest.approx((0.0, z2 / (50 + z2)))
    lo, hi = intervals.wilson(11, 11)
    assert hi == 1.0 and 0.70 < lo < 0.75
    # Symmetric around 1/2 for k = n/2; shrinks like 1/sqrt(n).
    lo1, hi1 = intervals.wilson(50, 100)
    lo2, hi2 = intervals.wilson(5000, 10000)
    assert lo1 + hi1 == pytest.approx(1.0) and (hi1 - lo1) / (hi2 - lo2) == pytest.approx(10, rel=0.03)
    # Hanley-McNeil at AUC 0.5 with equal counts n: var = (0.25 + (n-1)(1/3 - 1/4) * 2) / n^2.
    n = 40
    want = math.sqrt((0.25 + 2 * (n - 1) * (1 / 3 - 0.25)) / n**2)
    assert intervals.auroc_se(0.5, n, n) == pytest.approx(want)
    lo, hi = intervals.mean_auroc_interval([0.9, 0.9], [100, 100], [900, 900])
    se = intervals.auroc_se(0.9, 100, 900)
    assert (hi - lo) / 2 == pytest.approx(intervals.Z_975 * se / math.sqrt(2))


def _per(values):
    v = np.asarray([NAN if x is None else x for x in values], np.float64)
    ok = v[np.isfinite(v)]
    return {"per_seed": list(values), "mean": float(ok.mean()) if ok.size else NAN,
            "std": float(ok.std(ddof=1)) if ok.size > 1 else None}


def _bridges(bridge, auroc, removed, num_bridges, oracle=0.0):
    """An entry of `mixture_study.bridge_table` (the layout the studies write)."""
    return {"bridge": _per(bridge), "blur": _per([0.01] * len(bridge)),
            "hallucinated": _per([b + 0.01 for b in bridge]), "width_vs_exact": _per([1.1] * 3),
            "bridges_auroc": _per(auroc), "bridges_removed_at_96_kept": _per(removed),
            "num_bridges": list(num_bridges),
            "oracle": {"bridge": oracle, "blur": 0.0, "hallucinated": oracle}}


def _curve(steps, bridge):
    """An entry of `mixture_study.convergence_summary`: the mean bridge rate per curve point."""
    return {"steps": list(steps), "bridge": {"mean": list(bridge), "std": [0.0] * len(bridge)}}


CFG = {"preset": "quick", "steps": 4000, "batch_size": 1000, "width": 64, "lr": 0.002,
       "lr_schedule": "cosine", "num_samples": 10000, "seeds": [0, 1, 2], "grid_size": 5,
       "num_train": 100000, "k": 4.0, "focus_steps": 100, "focus_prob": 0.5, "ema_decay": 0.999,
       "curve_every": 1000, "curve_samples": 10000}
FLAT = _curve([1000, 2000, 3000, 4000], [0.2, 0.06, 0.03, 0.031])


def _write(root, experiments):
    """Finished study directories: `metrics` plus every other key the study's schema declares
    (null: no value), as the ledger reads only checked files."""
    from mi_jax.studies import registry

    for name, (metrics, cfg) in experiments.items():
        schema = registry.get(name).schema
        full = {**{k: None for k in schema.metrics},
                "headline": {k: None for k in schema.headline}, **metrics}
        (root / name).mkdir()
        (root / name / "metrics.json").write_text(json.dumps(full))
        (root / name / "config.json").write_text(json.dumps(cfg))


def test_ledger_rows_from_hand_made_metrics(tmp_path):
    name1 = "modes=1,2,3 N=20000"
    gmm1d = {"fig2": {name1: {}},
             "bridges": {name1: _bridges([0.02, 0.03, 0.025], [0.99] * 3, [0.97, 0.98, 0.99],
                                         [200, 300, 250])},
             "size_sweep": {"x": [1000, 20000], "per_seed": [[0.05, 0.06, 0.07], [0.01, 0.02, 0.01]]},
             "separation_sweep": {"x": [0.5, 2.0], "per_seed": [[0.2, 0.2, 0.2], [0.3, 0.3, 0.3]]},
             "convergence": {name1: FLAT}}
    gmm2d = {"bridges": {"square": _bridges([0.05, 0.04, 0.05], [0.96, 0.97, 0.98], [0.9] * 3,
                                            [500, 400, 500]),
                         "rotated": _bridges([0.05, 0.06, 0.05], [0.97, 0.98, 0.99], [0.9] * 3,
                                             [500, 600, 500])},
             "pairs": {"square": {"axis_share": {"per_seed": [0.5, 0.5, 0.5], "mean": 0.5}},
                       "rotated": {"axis_share": {"per_seed": [0.01, 0.02, 0.0], "mean": 0.01},
                                   "num_hallucinations": [600, 700, 600]}},
             "convergence": {"square": FLAT, "rotated": FLAT}}
    gaps = [{"max_slope_exact": e, "max_slope_learned": l} for e, l in
            ((20.0, 2.0), (18.0, 3.0), (21.0, 1.5), (19.0, 2.5))]
    score = {"sources": {"gmm1d": {"per_timestep": {"0": {"gaps": []}, "5": {"gaps": gaps}}},
                         "gmm2d": {"summary": {}}}}
    _write(tmp_path, {"gmm1d": (gmm1d, CFG), "gmm2d": (gmm2d, CFG), "score_analysis": (score, CFG)})
    rows = {r["key"]: r for r in ledger.ledger_from_workdir(tmp_path)}
    assert list(rows) == [c.key for c in ledger.claims()]
    assert rows["interpolation_1d"]["verdict"] == ledger.REPRODUCED
    assert rows["interpolation_1d"]["mean"] == pytest.approx(0.025)
    # 750 bridges in 30 000 samples: Wilson around 2.5 %, minus the exact score's (0 of 10 000).
    lo, hi = rows["interpolation_1d"]["counting"]
    assert lo == pytest.approx(intervals.wilson(750, 30000)[0] - intervals.wilson(0, 10000)[1])
    assert rows["more_data"]["verdict"] == ledger.REPRODUCED            # 0.05 +- small > 0
    assert rows["more_data"]["per_seed"] == pytest.approx([0.04, 0.04, 0.06])
    assert rows["separation"]["verdict"] == ledger.NOT_REPRODUCED       # wrong direction
    assert rows["rotated_no_x_axis"]["verdict"] == ledger.REPRODUCED
    assert rows["detect_auroc_2d"]["mean"] == pytest.approx(np.mean([0.965, 0.975, 0.985]))
    assert rows["detect_auroc_2d"]["positives"] == 3000
    assert rows["detect_auroc_2d"]["verdict"] == ledger.REPRODUCED
    assert rows["detect_95_96_2d"]["verdict"] == ledger.PARTLY          # 90 % < 95 %
    assert rows["detect_95_96_1d"]["verdict"] == ledger.REPRODUCED      # 750 bridges, 98 %
    assert rows["control"]["verdict"] == ledger.REPRODUCED  # exact score: 0 of 10^4, thrice
    assert rows["control"]["n"] == 3
    assert rows["smooth_x0"]["verdict"] == ledger.REPRODUCED and rows["smooth_x0"]["n"] == 4
    assert rows["smooth_x0"]["mean"] == pytest.approx(np.mean([10, 6, 14, 7.6]))
    for key in ("shapes_duplicates", "shapes_detect", "shapes_detect_controlled", "recursive_2d",
                "recursive_shapes", "recursive_digits"):
        assert rows[key]["verdict"] == ledger.NOT_MEASURED, key
    assert "EMA 0.999" in rows["interpolation_2d"]["protocol"]
    text = ledger.ledger_markdown(list(rows.values()))
    assert text.count("\n| ") == len(ledger.claims()) and ledger.RULE in text  # + header at 0
    assert "counts [" in text and "3000 positives" in text
    one_seed = dict(rows["control"], per_seed=[0.0], n=1, mean=0.0, std=None, seed_interval=None)
    assert "(1 value, no spread)" in ledger.ledger_markdown([one_seed])


def test_few_bridges_give_too_few_positives_not_a_verdict(tmp_path):
    # The main job's 1D case: 4, 5 and 2 bridges removed in full (se = 0 over seeds).
    name1 = "modes=1,2,3 N=20000"
    gmm1d = {"fig2": {name1: {}},
             "bridges": {name1: _bridges([0.001, 0.00125, 0.0005], [0.99] * 3, [1.0] * 3,
                                         [4, 5, 2])},
             "convergence": {name1: FLAT}}
    _write(tmp_path, {"gmm1d": (gmm1d, dict(CFG, num_samples=4000))})
    rows = {r["key"]: r for r in ledger.ledger_from_workdir(tmp_path)}
    assert rows["detect_95_96_1d"]["verdict"] == ledger.TOO_FEW
    assert rows["detect_95_96_1d"]["positives"] == 11
    assert rows["detect_95_96_1d"]["counting"][0] < 0.75  # 11 of 11: a lower bound near 72 %


@pytest.mark.parametrize("curve, cfg, converged, why", [
    (FLAT, {}, True, ""),
    # Still falling by a third over the last quarter: an under-trained model.
    (_curve([1000, 2000, 3000, 4000], [0.6, 0.5, 0.42, 0.28]), {}, False, "42.00% at step 3000"),
    # The curve stops before the end of training.
    (_curve([1000, 2000, 3000], [0.2, 0.1, 0.1]), {}, False, "stops before step 4000"),
    # One point in the last quarter: no change can be measured.
    (_curve([2000, 4000], [0.1, 0.1]), {}, False, "fewer than 2 curve points"),
    # Counting noise is allowed for: 30 vs 45 bridges of 30 000 is within 2 se.
    (_curve([1000, 3000, 4000], [0.01, 0.001, 0.0015]), {}, True, ""),
    # A model that stops at its own official budget (epochs) is judged up to that step.
    (_curve([500, 1000, 1500, 2000, 3000, 4000], [0.3, 0.1, 0.05, 0.05, 0.05, 0.05]),
     {"epochs": 20, "batch_size": 10, "num_train": 1000}, True, ""),
    (_curve([500, 1000, 1500, 2000, 3000, 4000], [0.3, 0.2, 0.1, 0.05, 0.05, 0.05]),
     {"epochs": 20, "batch_size": 10, "num_train": 1000}, False, "step 1500"),
])
def test_convergence_rule(curve, cfg, converged, why):
    results = {"gmm2d": {"metrics": {"convergence": {"square": curve}},
                         "config": dict(CFG, **cfg)}}
    ok, note = ledger.convergence(results, "gmm2d")
    assert ok is converged and why in note


def test_an_under_trained_model_reads_not_converged(tmp_path):
    # A 200-step run: no curve point lies inside its training, so no convergence is shown.
    name1 = "modes=1,2,3 N=20000"
    gmm1d = {"fig2": {name1: {}}, "convergence": {},
             "bridges": {name1: _bridges([0.42, 0.41, 0.43], [0.6] * 3, [0.1] * 3, [800] * 3)}}
    _write(tmp_path, {"gmm1d": (gmm1d, dict(CFG, steps=200, curve_every=1500))})
    rows = {r["key"]: r for r in ledger.ledger_from_workdir(tmp_path)}
    assert rows["interpolation_1d"]["verdict"] == ledger.NOT_CONVERGED
    assert "no convergence curve" in rows["interpolation_1d"]["note"]
    assert rows["control"]["verdict"] != ledger.NOT_CONVERGED  # the exact score is not trained


def test_ledger_reads_shapes_and_recursive_metrics():
    per_seed = [{"category_primary": {"duplicate": d}} for d in (0.08, 0.09, 0.07)]
    det = lambda a: {"per_seed": [{"auroc": v, "num_positive": 60, "num": 400} for v in a],
                     "pooled": {"auroc": float(np.mean(a))}}
    curve = lambda last: {"per_seed": [[0.1, 0.1, 0.1], last],
                          "mean": [0.1, float(np.mean(last))]}
    results = {
        "shapes": {"metrics": {"rates": {"per_seed": per_seed},
                               "detection": {"whole_image": det([0.6, 0.62]),
                                             "column_max": det([0.7, 0.66])}},
                   "config": {"preset": "quick", "resolution": 32, "seeds": [0, 1, 2],
                              "num_samples": 2000}},
        "recursive": {"metrics": {"results": {
            "gmm2d": {"curves": {"generated": {"hallucination_rate": {
                "random": curve([0.50, 0.55, 0.52]), "variance": curve([0.30, 0.36, 0.33])}}}},
            "digits": {"curves": {"generated": {"frechet": {
                "random": curve([60.0, 70.0]), "variance": curve([75.0, 66.0])}}}}}},
            "config": {"preset": "quick", "seeds": [0, 1, 2]},
            "datasets": {"gmm2d": {"num_candidates": 4000}}},
    }
    rows = {r["key"]: r for r in ledger.ledger(results)}
    assert rows["shapes_duplicates"]["verdict"] == ledger.REPRODUCED
    assert rows["shapes_detect"]["per_seed"] == [0.7, 0.66]       # the best detector, per seed
    assert rows["shapes_detect"]["verdict"] == ledger.PARTLY
    assert rows["shapes_detect"]["positives"] == 120
    assert rows["recursive_2d"]["per_seed"] == pytest.approx([0.20, 0.19, 0.19])
    assert rows["recursive_2d"]["verdict"] == ledger.REPRODUCED
    assert rows["recursive_digits"]["verdict"] == ledger.NOT_REPRODUCED  # filter is worse
    assert rows["recursive_shapes"]["verdict"] == ledger.NOT_MEASURED
    assert rows["interpolation_1d"]["verdict"] == ledger.NOT_MEASURED
    # Two seeds of the same recursion: at most "partly".
    two = {k: {kk: (dict(vv, per_seed=[vv["per_seed"][0], vv["per_seed"][1][:2]])
                    if kk in ("random", "variance") else vv) for kk, vv in v.items()}
           for k, v in results["recursive"]["metrics"]["results"]["gmm2d"]["curves"][
               "generated"].items()}
    results["recursive"]["metrics"]["results"]["gmm2d"]["curves"]["generated"] = two
    assert ledger.ledger(results)[15]["verdict"] == ledger.PARTLY


def test_ledger_grades_shapes_detection_at_the_official_window_and_beyond_content():
    row = lambda window, per_seed: {
        "window": window, "pooled": {"duplicate": {"auroc": float(np.mean(per_seed)),
                                                   "num_positive": 80}},
        "per_seed": [{"duplicate": {"auroc": a, "num_positive": 40, "num": 500}}
                     for a in per_seed]}
    windows = [[0, 10], [200, 400], [0, 600]]
    src = {"detection": {
        "column_max": [row(windows[0], [0.56, 0.61]), row(windows[1], [0.78, 0.73]),
                       row(windows[2], [0.95, 0.93])],
        "whole_image": [row(w, [0.5, 0.5]) for w in windows]},
        "controls": {"final_ink_column_max": 1.0, "ink_correlation": [0.3, 0.6, 0.78],
                     "stratified": {"whole_image": [0.52, 0.66, None],
                                    "column_max": [0.65, 0.76, 0.95]}}}
    results = {"shapes_detection": {"metrics": {"sources": {"a": src, "b": src}},
                                    "config": {"num_samples": 1000, "dense_steps": 50}}}
    rows = {r["key"]: r for r in ledger.ledger(results)}
    # The paper's window per seed, not the wide window whose AUROC is the ink it sees forming.
    assert rows["shapes_detect"]["per_seed"] == [0.56, 0.61, 0.56, 0.61]
    assert rows["shapes_detect"]["positives"] == 160
    assert rows["shapes_detect"]["verdict"] == ledger.NOT_REPRODUCED
    assert "t in [0, 600] 0.940" in rows["shapes_detect"]["note"]
    assert "ink alone 1.000" in rows["shapes_detect"]["note"]
    assert rows["shapes_detect_controlled"]["per_seed"] == [0.66, 0.66]
    assert rows["shapes_detect_controlled"]["verdict"] == ledger.PARTLY
    assert "t in [200, 400] 0.660" in rows["shapes_detect_controlled"]["note"]


def test_a_single_seed_has_no_spread_rather_than_zero():
    from mi_jax import report, sweeps

    one = sweeps.seed_summary(np.array([[0.25], [0.5]]))
    assert one["mean"] == [0.25, 0.5] and all(np.isnan(one["std"]))
    two = sweeps.seed_summary(np.array([[0.2, 0.4]]))
    assert two["std"][0] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert report.pm(0.25, float("nan")) == "25.00% (1 seed)"
    assert report.pm(0.25, None) == "25.00% (1 seed)"  # JSON null, as reloaded
    assert report.pm(0.25, 0.05) == "25.00% +- 5.00%"


def test_a_layout_without_bridges_keeps_its_row_measured():
    # One layout's best-window AUROC undefined (no bridge in any seed): the row still renders,
    # with n/a for that layout, instead of failing into "not measured".
    win = lambda a, r, p: {"auroc": _per([a, a]), "removed_at_96_kept": _per([r, r]),
                           "num_positive": _per([p, p]), "num": _per([1000, 1000])}
    src = {"windows": [[0, 10], [0, 5]],
           "configs": {"square": {"bridge_windows": [win(0.9, 0.3, 80), win(0.97, 0.9, 80)]},
                       "rotated": {"bridge_windows": [win(None, None, 0), win(None, None, 0)]}}}
    results = {"detection": {"metrics": {"sources": {"gmm2d": src}}, "config": {}}}
    rows = {r["key"]: r for r in ledger.ledger(results)}
    row = rows["detect_auroc_2d_best"]
    # Without the gmm2d study its models' convergence is not shown: the row is gated.
    assert row["verdict"] == ledger.NOT_CONVERGED and row["mean"] == pytest.approx(0.97)
    assert row["positives"] == 160
    assert "rotated n/a" in row["note"] and "t in [0, 5)" in row["protocol"]


def test_a_metrics_layout_the_ledger_cannot_read_is_named_in_the_row():
    results = {"gmm2d": {"metrics": {"bridges": {"square": {"bridge": {}}}}, "config": CFG}}
    row = {r["key"]: r for r in ledger.ledger(results)}["interpolation_2d"]
    assert row["verdict"] == ledger.NOT_MEASURED
    assert row["note"].startswith("metrics layout not understood (KeyError")


def test_equal_counts_read_back_from_float32_are_a_zero_effect(tmp_path):
    # 17 of 10 000 at both ends of the size sweep, as float32 rates: float rounding must not
    # pass for a direction (it gave a difference of ~4e-11, "partly", before counts were snapped).
    r = [float(np.float32(17 / 10000)), float(np.float32(17 / 10000) * np.float32(1.0000001))]
    gmm1d = {"size_sweep": {"x": [1000, 20000], "configs": ["a", "b"],
                            "per_seed": [[r[0]] * 3, [r[1]] * 3]},
             "convergence": {"a": FLAT, "b": FLAT}}
    _write(tmp_path, {"gmm1d": (gmm1d, CFG)})
    row = {r["key"]: r for r in ledger.ledger_from_workdir(tmp_path)}["more_data"]
    assert row["per_seed"] == [0.0, 0.0, 0.0] and row["verdict"] == ledger.NOT_REPRODUCED


def test_review_cases_zero_effect_nulls_and_counts():
    # A zero effect whose per-seed differences do not sum to exactly 0 in floats (62 vs 62
    # hallucinations of 3 000): not a direction.
    first, last = np.array([2, 36, 24]) / 1000, np.array([30, 13, 19]) / 1000
    assert abs(np.mean(first - last)) < 1e-15
    assert ledger.verdict(list(first - last), 0.0, 0.0) == ledger.NOT_REPRODUCED
    # A seed whose value is null (no hallucination there) neither crashes the ledger nor enters
    # the mean or n.
    pairs = {"rotated": {"axis_share": {"per_seed": [0.01, None, 0.02], "mean": 0.015},
                         "num_hallucinations": [100, 0, 100]}}
    row = {r["key"]: r for r in ledger.ledger(
        {"gmm2d": {"metrics": {"pairs": pairs}, "config": CFG}})}["rotated_no_x_axis"]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.015)
    # An AUROC row without counts cannot be reproduced, however tight its seeds.
    assert ledger.verdict([0.97, 0.975, 0.98], 0.9, 0.6, counting=(NAN, NAN), positives=150,
                          min_positives=100) == ledger.PARTLY
    # No bridge in any 1D seed: "too few positives", not an unreadable layout.
    name1 = "modes=1,2,3 N=20000"
    b = _bridges([0.0] * 3, [None] * 3, [None] * 3, [0, 0, 0])
    rows = {r["key"]: r for r in ledger.ledger({"gmm1d": {
        "metrics": {"fig2": {name1: {}}, "bridges": {name1: b}, "convergence": {name1: FLAT}},
        "config": CFG}})}
    # (every seed's fraction is undefined: nothing to grade, and no layout error either)
    assert rows["detect_95_96_1d"]["verdict"] == ledger.NOT_MEASURED
    assert "layout not understood" not in rows["detect_95_96_1d"]["note"]


def test_an_epoch_budget_between_curve_points_ends_at_the_next_point():
    curve = _curve([2500, 5000, 7500, 10000, 12500], [0.3, 0.1, 0.05, 0.05, 0.05])
    cfg = dict(CFG, steps=12500, epochs=1000, batch_size=10, num_train=80)  # ends at step 8000
    ok, note = ledger.convergence({"gmm2d": {"metrics": {"convergence": {"square": curve}},
                                             "config": cfg}}, "gmm2d")
    assert ok and note == ""


def test_results_page_shows_a_budgets_official_comparison_beside_its_ledger(tmp_path):
    # Two budgets: one with the official-vs-mi_jax table beside its ledger, one without.
    rows = ledger.ledger({})
    for name, table in (("quick", "| configuration | quantity |\n|---|---|\n| square | bridge |\n"),
                        ("paper", None)):
        d = tmp_path / name
        d.mkdir()
        (d / "ledger.json").write_text(json.dumps({"ledger": rows}))
        if table:
            (d / ledger.OFFICIAL_COMPARE).mkdir()
            (d / ledger.OFFICIAL_COMPARE / "table.md").write_text(table)
    text = ledger.write_results(tmp_path / "results.md", [f"quick budget:{tmp_path / 'quick'}",
                                                          f"paper budget:{tmp_path / 'paper'}"])
    assert "## quick budget: the official PyTorch code beside mi_jax" in text
    assert "| square | bridge |" in text
    assert "paper budget: the official" not in text
    assert (tmp_path / "results.md").read_text() == text
