"""The claims ledger: verdicts follow the stated rule on hand-made numbers, rows read the
experiments' metrics, and a missing experiment is 'not measured'."""

import json

import numpy as np
import pytest

from mi_jax import ledger


@pytest.mark.parametrize("values, full, weak, higher, want", [
    ([0.97, 0.98, 0.96], 0.95, 0.75, True, ledger.REPRODUCED),     # bound 0.95 >= 0.95
    ([0.99, 0.90, 0.98], 0.95, 0.75, True, ledger.PARTLY),         # mean 0.957 but bound 0.90
    ([0.80, 0.81, 0.79], 0.95, 0.75, True, ledger.PARTLY),         # only the weak bar
    ([0.60, 0.70, 0.65], 0.95, 0.75, True, ledger.NOT_REPRODUCED),
    ([0.99], 0.95, 0.75, True, ledger.PARTLY),                     # one seed: no spread
    ([0.01, 0.02, 0.015], 0.05, 0.2, False, ledger.REPRODUCED),    # ceiling: 0.015 + 2se < 0.05
    ([0.01, 0.30, 0.02], 0.05, 0.2, False, ledger.PARTLY),         # mean 0.11 <= 0.2 only
    ([0.40, 0.50, 0.45], 0.05, 0.2, False, ledger.NOT_REPRODUCED),
    ([0.02, -0.01, 0.03], 0.0, 0.0, True, ledger.PARTLY),          # direction right, not beyond spread
    ([], 0.0, 0.0, True, ledger.NOT_MEASURED),
    ([np.nan, np.nan], 0.0, 0.0, True, ledger.NOT_MEASURED),
])
def test_verdict_rule(values, full, weak, higher, want):
    assert ledger.verdict(values, full, weak, higher) == want


def _bridges(bridge, auroc, removed, oracle=0.0):
    per = lambda v: {"per_seed": v, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1))}
    return {"bridge": per(bridge), "blur": per([0.01] * len(bridge)),
            "hallucinated": per([b + 0.01 for b in bridge]),
            "bridges_auroc": per(auroc), "bridges_removed_at_96_kept": per(removed),
            "num_bridges": [40] * len(bridge),
            "oracle": {"bridge": oracle, "blur": 0.0, "hallucinated": oracle}}


def test_ledger_rows_from_hand_made_metrics(tmp_path):
    gmm1d = {"fig2": {"modes=1,2,3 N=20000": {}},
             "bridges": {"modes=1,2,3 N=20000": _bridges([0.02, 0.03, 0.025], [0.99] * 3,
                                                         [0.97, 0.98, 0.99])},
             "size_sweep": {"x": [1000, 20000], "per_seed": [[0.05, 0.06, 0.07], [0.01, 0.02, 0.01]]},
             "separation_sweep": {"x": [0.5, 2.0], "per_seed": [[0.2, 0.2, 0.2], [0.3, 0.3, 0.3]]}}
    gmm2d = {"bridges": {"square": _bridges([0.05, 0.04, 0.05], [0.96, 0.97, 0.98], [0.9] * 3),
                         "rotated": _bridges([0.05, 0.06, 0.05], [0.97, 0.98, 0.99], [0.9] * 3)},
             "pairs": {"square": {"axis_share": {"per_seed": [0.5, 0.5, 0.5], "mean": 0.5}},
                       "rotated": {"axis_share": {"per_seed": [0.01, 0.02, 0.0], "mean": 0.01}}}}
    cfg = {"preset": "quick", "steps": 100, "batch_size": 10, "width": 64, "lr": 0.002,
           "lr_schedule": "cosine", "num_samples": 8, "seeds": [0, 1, 2], "grid_size": 5,
           "num_train": 100000, "k": 4.0, "focus_steps": 100, "focus_prob": 0.5,
           "ema_decay": 0.999}
    gaps = [{"max_slope_exact": e, "max_slope_learned": l} for e, l in
            ((20.0, 2.0), (18.0, 3.0), (21.0, 1.5), (19.0, 2.5))]
    score = {"sources": {"gmm1d": {"per_timestep": {"0": {"gaps": []}, "5": {"gaps": gaps}}},
                         "gmm2d": {"summary": {}}}}
    for name, metrics in (("gmm1d", gmm1d), ("gmm2d", gmm2d), ("score_analysis", score)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    rows = {r["key"]: r for r in ledger.ledger_from_workdir(tmp_path)}
    assert [r["key"] for r in ledger.ledger_from_workdir(tmp_path)] == [c.key for c in ledger.CLAIMS]
    assert rows["interpolation_1d"]["verdict"] == ledger.REPRODUCED
    assert rows["interpolation_1d"]["mean"] == pytest.approx(0.025)
    assert rows["more_data"]["verdict"] == ledger.REPRODUCED            # 0.05 +- small > 0
    assert rows["more_data"]["per_seed"] == pytest.approx([0.04, 0.04, 0.06])
    assert rows["separation"]["verdict"] == ledger.NOT_REPRODUCED       # wrong direction
    assert rows["rotated_no_x_axis"]["verdict"] == ledger.REPRODUCED
    assert rows["detect_auroc_2d"]["mean"] == pytest.approx(np.mean([0.965, 0.975, 0.985]))
    assert rows["detect_auroc_2d"]["verdict"] == ledger.REPRODUCED
    assert rows["detect_95_96_2d"]["verdict"] == ledger.PARTLY          # 90 % < 95 %
    assert rows["detect_95_96_1d"]["verdict"] == ledger.REPRODUCED
    assert rows["control"]["verdict"] == ledger.REPRODUCED  # exact score: 0 on all three mixtures
    assert rows["control"]["n"] == 3
    assert rows["smooth_x0"]["verdict"] == ledger.REPRODUCED and rows["smooth_x0"]["n"] == 4
    assert rows["smooth_x0"]["mean"] == pytest.approx(np.mean([10, 6, 14, 7.6]))
    for key in ("shapes_duplicates", "shapes_detect", "shapes_detect_controlled", "recursive_2d",
                "recursive_shapes", "recursive_digits"):
        assert rows[key]["verdict"] == ledger.NOT_MEASURED, key
    assert "EMA 0.999" in rows["interpolation_2d"]["protocol"]
    text = ledger.ledger_markdown(list(rows.values()))
    assert text.count("\n| ") == len(ledger.CLAIMS) and ledger.RULE in text  # + header at 0
    one_seed = dict(rows["control"], per_seed=[0.0], n=1, mean=0.0, std=None)
    assert "(1 value, no spread)" in ledger.ledger_markdown([one_seed])


def test_ledger_reads_shapes_and_recursive_metrics():
    per_seed = [{"category_primary": {"duplicate": d}} for d in (0.08, 0.09, 0.07)]
    det = lambda a: {"per_seed": [{"auroc": v} for v in a], "pooled": {"auroc": float(np.mean(a))}}
    curve = lambda last: {"per_seed": [[0.1, 0.1], last], "mean": [0.1, float(np.mean(last))]}
    results = {
        "shapes": {"metrics": {"rates": {"per_seed": per_seed},
                               "detection": {"whole_image": det([0.6, 0.62]),
                                             "column_max": det([0.7, 0.66])}},
                   "config": {"preset": "quick", "resolution": 32, "seeds": [0, 1]}},
        "recursive": {"metrics": {"results": {
            "gmm2d": {"curves": {"generated": {"hallucination_rate": {
                "random": curve([0.50, 0.55]), "variance": curve([0.30, 0.36])}}}},
            "digits": {"curves": {"generated": {"frechet": {
                "random": curve([60.0, 70.0]), "variance": curve([75.0, 66.0])}}}}}},
            "config": {"preset": "quick", "seeds": [0, 1]}},
    }
    rows = {r["key"]: r for r in ledger.ledger(results)}
    assert rows["shapes_duplicates"]["verdict"] == ledger.REPRODUCED
    assert rows["shapes_detect"]["per_seed"] == [0.7, 0.66]       # the best detector, per seed
    assert rows["shapes_detect"]["verdict"] == ledger.PARTLY
    assert rows["recursive_2d"]["per_seed"] == pytest.approx([0.20, 0.19])
    assert rows["recursive_2d"]["verdict"] == ledger.REPRODUCED
    assert rows["recursive_digits"]["verdict"] == ledger.NOT_REPRODUCED  # filter is worse
    assert rows["recursive_shapes"]["verdict"] == ledger.NOT_MEASURED
    assert rows["interpolation_1d"]["verdict"] == ledger.NOT_MEASURED


def test_ledger_grades_shapes_detection_at_the_official_window_and_beyond_content():
    row = lambda window, per_seed: {
        "window": window, "pooled": {"duplicate": {"auroc": float(np.mean(per_seed))}},
        "per_seed": [{"duplicate": {"auroc": a}} for a in per_seed]}
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
    win = lambda a, r: {"auroc": {"mean": a, "per_seed": [a, a]},
                        "removed_at_96_kept": {"mean": r, "per_seed": [r, r]}}
    src = {"windows": [[0, 10], [0, 5]],
           "configs": {"square": {"bridge_windows": [win(0.9, 0.3), win(0.97, 0.9)]},
                       "rotated": {"bridge_windows": [win(None, None), win(None, None)]}}}
    results = {"detection": {"metrics": {"sources": {"gmm2d": src}}, "config": {}}}
    rows = {r["key"]: r for r in ledger.ledger(results)}
    row = rows["detect_auroc_2d_best"]
    assert row["verdict"] != ledger.NOT_MEASURED and row["mean"] == pytest.approx(0.97)
    assert "rotated n/a" in row["note"] and "t in [0, 5)" in row["protocol"]
