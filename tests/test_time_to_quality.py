"""Time to quality on hand-made reference units and convergence curves: where each bar is
reached, the FLOPs ratio, and the refusals."""

import subprocess
import sys
from pathlib import Path

import pytest

from mi_jax import workdir as wd
from mi_jax.studies import paper_budget as pb
from mi_jax.studies import time_to_quality as ttq
from mi_jax.validation import InputError

ROOT = Path(__file__).resolve().parent.parent


def _reference(root: Path, bridges: list, aurocs: list) -> None:
    """Finished square-layout 2D units with these per-seed numbers (200 000 samples each)."""
    square = [u for u in pb.units() if u.name.startswith("gmm2d_square")]
    for u, b, a in zip(square, bridges, aurocs):
        d = wd.prepare(root / pb.UNITS_DIR / u.name, u.config())
        wd.write_json(d / wd.METRICS_FILE, {
            "bridges": {"square": {"bridge": {"mean": b}, "bridges_auroc": {"mean": a},
                                   "num_bridges": [int(b * 200_000)]}},
            "seconds": {"train": 10_000.0}})


def _curves(root: Path, points: list) -> Path:
    """A finished convergence run: one recipe, the square layout, two seeds; points are
    (step, seconds, [bridge per seed], [AUROC per seed])."""
    d = wd.prepare(root, {"layouts": "square", "seeds": [0, 1]})
    curve = [{"step": s, "train_seconds": sec,
              "models": [{"bridge": b, "bridges": {"auroc": a}} for b, a in zip(bs, aus)]}
             for s, sec, bs, aus in points]
    wd.write_json(d / wd.METRICS_FILE, {"results": {"focus": {
        "recipe": {"batch_size": 1000, "width": 64}, "curve": curve}}})
    return d


def test_the_first_point_within_the_reference_spread_and_its_compute_ratio(tmp_path):
    _reference(tmp_path / "paper", [0.010, 0.012, 0.014], [0.95, 0.96, 0.97])
    conv = _curves(tmp_path / "conv", [(1000, 100.0, [0.03, 0.03], [0.90, 0.90]),
                                       (2000, 200.0, [0.013, 0.015], [0.93, 0.95]),
                                       (3000, 300.0, [0.012, 0.012], [0.96, 0.95]),
                                       (4000, 400.0, [0.020, 0.020], [0.97, 0.97])])
    metrics = ttq.run(tmp_path / "paper", conv, tmp_path / "out", log=lambda *_: None)
    row = metrics["table"]["square"]["focus"]
    assert row["bars"]["bridge_max"] == pytest.approx(0.014)   # mean + seed std (ddof 1)
    assert row["bars"]["auroc_min"] == pytest.approx(0.95)
    assert row["bridge"]["step"] == 2000 and row["auroc"]["step"] == 3000
    assert row["both"] == {"step": 3000, "seconds": 300.0}
    want = (3000 * 1000 * ttq.forward_flops(64)) / (100_000 * 10_000 * ttq.forward_flops(128))
    assert row["flops_ratio"] == pytest.approx(want, rel=1e-9)
    assert row["seconds_ratio"] == pytest.approx(300.0 / 10_000.0)
    assert "| square | focus |" in (tmp_path / "out" / "table.md").read_text()
    assert (tmp_path / "out" / "time_to_quality.png").stat().st_size > 0


def test_a_curve_that_never_reaches_the_bars_says_so(tmp_path):
    _reference(tmp_path / "paper", [0.001], [0.99])  # one seed: counting errors as the spread
    conv = _curves(tmp_path / "conv", [(1000, 10.0, [0.02, 0.02], [0.9, 0.9])])
    row = ttq.run(tmp_path / "paper", conv, tmp_path / "out", log=lambda *_: None)[
        "table"]["square"]["focus"]
    assert row["both"] is None and row["flops_ratio"] is None
    assert row["bars"]["seeds"] == 1 and row["bars"]["bridge_max"] > 0.001
    assert "not reached" in (tmp_path / "out" / "table.md").read_text()


def test_missing_inputs_are_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="^reference=.*no finished 2D paper-budget unit"):
        ttq.reference(tmp_path)
    with pytest.raises(InputError, match="^curves=.*no finished experiments.convergence"):
        ttq.curves(tmp_path)
    out = subprocess.run([sys.executable, "-m", "experiments.time_to_quality",
                          f"--workdir={tmp_path / 'w'}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == (
        "error: --curves=<unset>: name a finished experiments.convergence directory")
    assert not (tmp_path / "w").exists()
