"""The paper budget one model at a time: units resume and are reused, and their assembly into the
full preset's grid is the grid the study would have trained (states, losses, curve), sampled and
scored by the study itself."""

import json

import jax
import numpy as np
import pytest

from mi_jax import checkpoint
from mi_jax.studies import gmm1d, mixture_models, mixture_study, paper_budget
from mi_jax.training import train as tr
from mi_jax.validation import InputError

# Two mixtures with different epoch budgets (7 and 4 batches of 64 per epoch, 2 epochs).
TINY_1D = dict(seeds=[0, 1], epochs=2, batch_size=64, num_train=450, num_train_b=300,
               sizes=[450], separations=[1.0], steps=14, train_chunk=2, curve_every=2,
               curve_samples=64, num_samples=64, chunk_size=64, T=60, width=16)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(gmm1d.PRESETS, "paper", dict(gmm1d.PRESETS["paper"], **TINY_1D))


def test_units_follow_the_presets_and_refuse_unknown_names(tiny):
    names = [u.name for u in paper_budget.units() if u.study == "gmm1d"]
    assert names == ["gmm1d_m123_n450_s0", "gmm1d_m123_n450_s1", "gmm1d_m1245_n300_s0",
                     "gmm1d_m1245_n300_s1"]
    steps = {u.name: u.config().steps for u in paper_budget.units() if u.study == "gmm1d"}
    assert steps["gmm1d_m123_n450_s0"] == 14 and steps["gmm1d_m1245_n300_s1"] == 8
    assert [u.name for u in paper_budget.select("gmm1d_m1245", paper_budget.units())] == names[2:]
    with pytest.raises(InputError, match=r"^units=gmm3d: 'gmm3d' names no unit"):
        paper_budget.select("gmm3d", paper_budget.units())


@pytest.mark.slow
def test_assembled_units_are_the_full_presets_grid(tiny, tmp_path):
    mine = [u for u in paper_budget.units() if u.study == "gmm1d"]
    with pytest.raises(InputError, match="units not finished yet: gmm1d_m123_n450_s0"):
        paper_budget.assemble(tmp_path, "gmm1d")
    paper_budget.run_units(tmp_path, mine)
    assert all(paper_budget.status(tmp_path, u) == "finished" for u in mine)
    metrics = paper_budget.run_assembled(tmp_path, "gmm1d")
    out = tmp_path / "gmm1d"
    full = mixture_models.load_models(out)
    assert full.grid.num_models == 4 and full.config.steps == 14
    # Grid order (config-major, then seeds) holds each unit's own trained params, bit for bit.
    for m, name in enumerate(["gmm1d_m123_n450_s0", "gmm1d_m123_n450_s1",
                              "gmm1d_m1245_n300_s0", "gmm1d_m1245_n300_s1"]):
        unit = mixture_models.load_models(tmp_path / "units" / name)
        for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(unit.params)):
            np.testing.assert_array_equal(np.asarray(a)[m:m + 1], np.asarray(b))
        with np.load(tmp_path / "units" / name / tr.TRAIN_LOSSES) as f:
            own = f["losses"][0]
        with np.load(out / tr.TRAIN_LOSSES) as f:
            row = f["losses"][m]
        np.testing.assert_array_equal(row[:len(own)], own)
        assert np.all(np.isnan(row[len(own):]))  # the 300-point mixture stopped at step 8
        # The study scored each model as its unit did (same sampler keys; a vmapped grid may
        # round differently, so rates agree to a sample or two of 64).
        unit_rates = json.loads((tmp_path / "units" / name / "metrics.json").read_text())
        conf = unit.grid.configs[0].name
        c = [x.name for x in full.grid.configs].index(conf)
        got = metrics["bridges"][conf]["bridge"]["per_seed"][m % 2]
        assert got == pytest.approx(unit_rates["bridges"][conf]["bridge"]["per_seed"][0],
                                    abs=2 / 64)
        assert c == m // 2
    assert np.isfinite(metrics["final_loss"]["mean"]).all()
    curve = json.loads((out / mixture_study.CONVERGENCE_FILE).read_text())["points"]
    assert [p["step"] for p in curve] == list(range(2, 15, 2))
    # Past step 8 the 300-point models are frozen: their last point is kept.
    assert curve[-1]["models"][2] == curve[3]["models"][2]
    state = checkpoint.load(out / tr.TRAIN_CHECKPOINT, mixture_study.init_grid(
        full.network, mixture_study.train_config_from(full.config), full.grid))
    assert np.asarray(state.step).tolist() == [14] * 4
    # A second call finds the finished result and reuses it.
    assert paper_budget.run_assembled(tmp_path, "gmm1d")["bridges"] == metrics["bridges"]


def test_progress_rows_carry_a_finished_units_headline_numbers():
    """The committed units under results/paper: a finished one shows its own metrics' numbers,
    every row has the header's seven cells."""
    from pathlib import Path

    from mi_jax import workdir as wd

    root = Path(__file__).resolve().parent.parent / "results" / "paper"
    header_cells = paper_budget.PROGRESS_HEADER.splitlines()[0].count("|")
    finished = 0
    for u in paper_budget.units():
        row = paper_budget.unit_row(root, u)
        assert row.count("|") == header_cells, row
        if paper_budget.status(root, u) == "finished":
            finished += 1
            (b,) = wd.read_json(root / paper_budget.UNITS_DIR / u.name / "metrics.json")[
                "bridges"].values()
            assert f"({b['num_bridges'][0]} of 200000)" in row
            assert f"| {b['bridges_auroc']['mean']:.3f} |" in row
    assert finished >= 1


def test_a_unit_with_a_checkpoint_reads_where_it_resumes(tiny, tmp_path):
    unit = paper_budget.units()[0]
    assert paper_budget.status(tmp_path, unit) == "not started"
    d = tmp_path / paper_budget.UNITS_DIR / unit.name
    d.mkdir(parents=True)
    (d / tr.TRAIN_CHECKPOINT).write_bytes(b"state")
    np.savez(d / tr.TRAIN_LOSSES, losses=np.zeros((1, 6), np.float32))
    assert paper_budget.status(tmp_path, unit) == "checkpoint at step 6 of 14"
    assert "| checkpoint at step 6 of 14 |" in paper_budget.unit_row(tmp_path, unit)
