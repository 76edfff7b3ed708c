"""Two processes with jax.distributed on localhost (2 CPU devices each) run a sharded sweep and
get the single-process result; a study run that way writes its work directory once.

Both are subprocess tests: the process count and device count must be set before JAX starts.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

SWEEP = textwrap.dedent("""
    import os, sys, jax, numpy as np
    from mi_jax import sharding
    sharding.maybe_initialize_distributed()
    import mi_jax as mj
    from mi_jax import sweeps
    from mi_jax.training import train as tr
    out = sys.argv[1]
    schedule = mj.linear_schedule(T=30)
    net = mj.make_mlp(1, width=16)
    cfg = tr.TrainConfig(batch_size=32)
    grid = sweeps.Grid([sweeps.Config("a", mj.mixture_1d([1.0, 2.0, 3.0]), 200),
                        sweeps.Config("b", mj.mixture_1d([0.0, 2.0]), 100)], [0, 1, 2])  # M = 6
    mesh = sharding.models_mesh() if jax.device_count() > 1 else None
    state, losses = sweeps.train_grid(net, schedule, cfg, grid, 20, chunk_steps=10, mesh=mesh)
    res = sweeps.sample_grid(net, state.params, schedule, grid, 40, (1,), chunk_size=20,
                             mesh=mesh)
    params = sharding.to_host(state.params)
    if jax.process_index() == 0:
        np.savez(out, losses=losses, x=res.x, hal=res.hal,
                 **{f"p{i}": v for i, v in enumerate(jax.tree.leaves(params))})
    print("OK", jax.process_index(), jax.process_count(), jax.device_count(), flush=True)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", **extra,
                XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
                + " --xla_force_host_platform_device_count=2"
                + " --xla_cpu_collective_call_terminate_timeout_seconds=600")  # busy 2-core CI


def _launch(args, num_processes: int = 2, timeout: int = 600):
    """Start `num_processes` copies of `python args...` as one jax.distributed job (the variables
    a SLURM-style launcher would set), wait for all, return their CompletedProcess-like tuples."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, *args], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=_env(MI_JAX_DISTRIBUTED="1",
                                       MI_JAX_COORDINATOR=f"localhost:{port}",
                                       MI_JAX_NUM_PROCESSES=str(num_processes),
                                       MI_JAX_PROCESS_ID=str(i)))
             for i in range(num_processes)]
    outs = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, stdout, stderr))
    return outs


def test_two_processes_give_the_single_process_sweep(tmp_path):
    single = subprocess.run([sys.executable, "-c", SWEEP, str(tmp_path / "one.npz")], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    outs = _launch(["-c", SWEEP, str(tmp_path / "two.npz")])
    for rc, stdout, stderr in outs:
        assert rc == 0, stderr[-3000:]
    oks = [next(l for l in o[1].splitlines() if l.startswith("OK")).split() for o in outs]
    assert sorted(ok[1] for ok in oks) == ["0", "1"]
    assert all(ok[2:4] == ["2", "4"] for ok in oks)  # 2 processes, 4 global devices
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert set(a.files) == set(b.files)
        for name in a.files:  # same keys, same math; devices may tile differently
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_a_study_run_by_two_processes_writes_its_workdir_once(tmp_path):
    work = tmp_path / "g1"
    args = ["-m", "experiments.gmm1d", f"--workdir={work}", "--steps=20", "--train_chunk=10",
            "--batch_size=64", "--num_samples=64", "--chunk_size=64", "--T=30", "--seeds=0,1",
            "--width=16", "--num_train=300", "--sizes=300", "--separations=1",
            "--num_train_b=300", "--focus_steps=10", "--curve_every=0"]
    outs = _launch(args)
    for rc, _, stderr in outs:
        assert rc == 0, stderr[-3000:]
    assert sum("wrote " in o[1] for o in outs) == 1  # only process 0 reports and writes
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["provenance"]["process_count"] == 2
    assert not [p for p in work.rglob("*.tmp")]
    single = subprocess.run([sys.executable, *args[:2], f"--workdir={tmp_path / 'g1_single'}",
                             *args[3:]], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    with np.load(work / "arrays.npz") as a, np.load(tmp_path / "g1_single" / "arrays.npz") as b:
        np.testing.assert_allclose(a["samples"], b["samples"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5, atol=1e-6)
