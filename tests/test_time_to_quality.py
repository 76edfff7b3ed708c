"""Time to quality on hand-made reference units and convergence curves: where each bar is
reached, the FLOPs ratio, and the refusals."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mi_jax import workdir as wd
from mi_jax.studies import paper_budget as pb
from mi_jax.studies import time_to_quality as ttq
from mi_jax.training import train as tr
from mi_jax.validation import InputError

ROOT = Path(__file__).resolve().parent.parent


def _reference(root: Path, bridges: list, aurocs: list) -> None:
    """Finished square-layout 2D units with these per-seed numbers (200 000 samples each)."""
    square = [u for u in pb.units() if u.name.startswith("gmm2d_square")]
    for u, b, a in zip(square, bridges, aurocs):
        d = wd.prepare(root / pb.UNITS_DIR / u.name, u.config())
        wd.write_npz(d / tr.TRAIN_LOSSES, losses=np.zeros((1, 100_000), np.float32))
        wd.write_json(d / wd.METRICS_FILE, {
            "bridges": {"square": {"bridge": {"mean": b}, "bridges_auroc": {"mean": a},
                                   "hallucinated": {"mean": 2 * b},
                                   "num_bridges": [int(b * 200_000)]}},
            "seconds": {"train": 10_000.0}})


def _curves(root: Path, points: list, grid_size: int = 5) -> Path:
    """A finished convergence run: one recipe, the square layout, two seeds; points are
    (step, seconds, [bridge per seed], [AUROC per seed])."""
    d = wd.prepare(root, {"layouts": "square", "seeds": [0, 1], "grid_size": grid_size, "k": 4.0})
    curve = [{"step": s, "train_seconds": sec,
              "models": [{"bridge": b, "bridges": {"auroc": a}} for b, a in zip(bs, aus)]}
             for s, sec, bs, aus in points]
    wd.write_json(d / wd.METRICS_FILE, {"results": {"focus": {
        "recipe": {"batch_size": 1000, "width": 64}, "curve": curve}}})
    return d


def test_the_first_point_within_the_reference_spread_and_its_compute_ratio(tmp_path):
    _reference(tmp_path / "paper", [0.010, 0.012, 0.014], [0.95, 0.96, 0.97])
    conv = _curves(tmp_path / "conv", [(1000, 100.0, [0.03, 0.03], [0.90, 0.90]),
                                       (2000, 200.0, [0.012, 0.012], [0.96, 0.96]),  # a dip
                                       (3000, 300.0, [0.020, 0.020], [0.97, 0.97]),
                                       (4000, 400.0, [0.013, 0.014], [0.93, 0.95]),
                                       (5000, 500.0, [0.012, 0.012], [0.96, None])])
    metrics = ttq.run(tmp_path / "paper", conv, tmp_path / "out", log=lambda *_: None)
    row = metrics["table"]["square"]["focus"]
    assert row["bars"]["bridge_max"] == pytest.approx(0.014)   # mean + seed std (ddof 1)
    assert row["bars"]["auroc_min"] == pytest.approx(0.95)
    # Reached from the first point that every later point holds too; the dip at 2000 does not
    # count, and a seed's missing AUROC (no bridges) leaves the other's.
    assert row["bridge"]["step"] == 4000 and row["auroc"]["step"] == 5000
    assert row["both"] == {"step": 5000, "seconds": 500.0}
    want = (5000 * 1000 * ttq.forward_flops(64, 1000)) / (
        100_000 * 10_000 * ttq.forward_flops(128, 10_000))
    assert row["flops_ratio"] == pytest.approx(want, rel=1e-9)
    # The toy MLP's time path costs per distinct timestep: per-sample cost falls with the batch.
    assert ttq.forward_flops(128, 10_000) < ttq.forward_flops(128, 256)
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
    _reference(tmp_path / "paper", [0.01], [0.95])
    small = _curves(tmp_path / "small", [(1000, 1.0, [0.01, 0.01], [0.9, 0.9])], grid_size=3)
    with pytest.raises(InputError, match="grid_size=3 is not the reference's 5"):
        ttq.run(tmp_path / "paper", small, tmp_path / "out", log=lambda *_: None)
    out = subprocess.run([sys.executable, "-m", "experiments.time_to_quality",
                          f"--workdir={tmp_path / 'w'}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == (
        "error: --curves=<unset>: name a finished experiments.convergence directory")
    assert not (tmp_path / "w").exists()
