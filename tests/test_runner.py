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
