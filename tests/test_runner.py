"""The main job's machinery (mi_jax.studies.runner) end to end, with a tiny preset patched in."""

import json

import pytest

from mi_jax.studies import gmm1d, registry, runner
from mi_jax.validation import InputError

TINY = dict(steps=30, train_chunk=15, batch_size=64, num_samples=64, chunk_size=64, T=60,
            focus_steps=10, seeds=[0, 1], width=16, num_train=500, sizes=[500],
            separations=[1.0], num_train_b=300, curve_every=0)


def test_main_job_runs_reuses_and_writes_the_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gmm1d.PRESETS, "quick", dict(gmm1d.PRESETS["quick"], **TINY))
    text = runner.main_job(tmp_path, "quick", ["gmm1d"])
    assert (tmp_path / "gmm1d" / "metrics.json").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "quick" and "gmm1d" in summary and summary["ledger"]
    assert "|" in text and (tmp_path / "summary.md").read_text() == text
    capsys.readouterr()
    runner.main_job(tmp_path, "quick", ["gmm1d"])  # finished and unchanged: reused, not rerun
    assert "finished result found" in capsys.readouterr().out
    assert runner.selected("gmm2d, gmm1d", registry.MAIN_JOB) == ["gmm2d", "gmm1d"]
    assert runner.selected(None, registry.MAIN_JOB) == list(registry.MAIN_JOB)
    with pytest.raises(InputError, match=r"^only=gmm3d: unknown experiment 'gmm3d'"):
        runner.selected("gmm3d", registry.MAIN_JOB)


def test_the_summary_times_every_sitting_of_a_study(tmp_path, monkeypatch, capsys):
    """An interrupted study's sitting is recorded, the resumed one added to it, a reused result
    adds none, and a refused input leaves no record (nor anything else) behind."""
    monkeypatch.setitem(gmm1d.PRESETS, "quick", dict(gmm1d.PRESETS["quick"], **TINY))
    real_run = gmm1d.run

    def interrupted(cfg, workdir):
        raise KeyboardInterrupt

    monkeypatch.setattr(gmm1d, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.main_job(tmp_path, "quick", ["gmm1d"])
    first = json.loads((tmp_path / "gmm1d" / "sittings.json").read_text())
    assert [s["finished"] for s in first] == [False] and first[0]["seconds"] >= 0
    monkeypatch.setattr(gmm1d, "run", real_run)
    runner.main_job(tmp_path, "quick", ["gmm1d"])
    runner.main_job(tmp_path, "quick", ["gmm1d"])  # reused: no third sitting
    sittings = json.loads((tmp_path / "gmm1d" / "sittings.json").read_text())
    assert [s["finished"] for s in sittings] == [False, True]
    total = sum(s["seconds"] for s in sittings)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["wall_seconds"] == {"gmm1d": pytest.approx(total)}
    text = (tmp_path / "summary.md").read_text()
    assert f"| gmm1d | {total / 60:.1f} min | 2 |" in text
    assert f"| **total** | **{total / 3600:.2f} h** |" in text

    def refused(cfg, workdir):
        raise InputError("num_samples=0: must be positive")

    monkeypatch.setattr(gmm1d, "run", refused)
    with pytest.raises(InputError):
        runner.run_or_reuse("gmm1d", "quick", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_a_study_timed_before_sittings_were_recorded_reads_unknown():
    from mi_jax import report

    lines = report.time_lines({"gmm1d": (120.0, 1), "vdm": None})
    assert lines[-3:-1] == ["| vdm | unknown | - |", "| **total** | **0.03 h** (1 unknown) | |"]
