"""The one-call GPU script runs end to end at toy size on the CPU (--dry), so it cannot rot."""

import json
import os
import subprocess
from pathlib import Path

from mi_jax import workdir as wd

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_paper_script_dry_run_writes_studies_benchmark_and_ledger(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_paper.sh"), "--dry",
                          f"--out={tmp_path / 'gp'}"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "gp_dry"
    for name in ("gmm1d/metrics.json", "gmm2d/metrics.json", "bench_core.json", "ledger.md"):
        assert (run / name).stat().st_size > 0, name
    cfg = wd.read_config(run / "gmm2d")
    assert cfg["preset"] == "paper" and cfg["grid_size"] == 5 and cfg["seeds"] == [0, 1, 2]
    ledger = json.loads((run / "ledger.json").read_text())["ledger"]
    measured = {r["key"] for r in ledger if r["verdict"] != "not measured"}
    assert {"control", "interpolation_1d", "interpolation_2d"} <= measured  # toy: maybe no bridge
    bad = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_paper.sh"), "--fast"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown argument --fast")


def test_install_ranges_admit_the_installed_jax_and_accelerator_extras_use_jax_extras():
    import tomllib

    import jax
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    assert reqs["jax"].specifier.contains(jax.__version__)
    for line in ("0.10.2", "0.11.0", "0.11.3"):  # the jax lines a GPU/TPU image may carry
        assert reqs["jax"].specifier.contains(line) and reqs["jaxlib"].specifier.contains(line)
    assert not reqs["jax"].specifier.contains("0.12.0")
    extras = project["optional-dependencies"]
    for name, jax_extra in (("cuda", "cuda12"), ("tpu", "tpu")):
        (req,) = [Requirement(r) for r in extras[name]]
        assert req.name == "jax" and req.extras == {jax_extra}
        assert req.specifier == reqs["jax"].specifier
