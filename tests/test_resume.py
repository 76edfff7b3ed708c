"""Kill a run with SIGKILL in the middle of training, resume it, and get the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--steps=300", "--train_chunk=10", "--batch_size=32", "--num_samples=32", "--T=40",
        "--chunk_size=8", "--seeds=0,1", "--width=16", "--num_train=200", "--num_train_b=200", "--sizes=200",
        "--separations=1", "--lr_schedule=cosine", "--focus_steps=10", "--curve_every=50",
        "--curve_samples=16"]


def _cmd(workdir):
    return [sys.executable, "-m", "experiments.gmm1d", f"--workdir={workdir}", *ARGS]


def _killed_after_saves(workdir, target, saves):
    """The same command, in a process that SIGKILLs itself right after the `saves`-th call of
    `target` (in mi_jax.checkpoint) returns: a kill at a known point whatever the machine's speed."""
    owner, _, method = target.rpartition(".")
    script = (
        "import os, runpy, signal, sys\n"
        "import mi_jax.checkpoint as c\n"
        f"owner = {'c.' + owner if owner else 'c'}\n"
        f"real, count = getattr(owner, {method!r}), [0]\n"
        "def counting(*args, **kwargs):\n"
        "    real(*args, **kwargs)\n"
        "    count[0] += 1\n"
        f"    if count[0] == {saves}: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"setattr(owner, {method!r}, counting)\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_module('experiments.gmm1d', run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", script, "gmm1d", *_cmd(workdir)[3:]]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")


def _strip(metrics):
    metrics.pop("seconds", None)
    metrics.pop("provenance", None)
    return metrics


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    whole = tmp_path_factory.mktemp("whole")
    out = subprocess.run(_cmd(whole), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return whole


# Training saves a checkpoint every 10 of 300 steps; sampling writes 4 chunks per model grid and
# 4 for the oracle. SIGKILL lands after the 5th checkpoint (step 50), or after the 2nd chunk.
@pytest.mark.parametrize("phase, target, saves, resumed", [
    ("training", "save", 5, "resuming training from the checkpoint at step 50"),
    ("sampling", "ChunkStore.save", 2, "resuming sampling with 2 finished chunk(s)"),
])
def test_sigkill_then_resume_matches_uninterrupted(tmp_path, uninterrupted, phase, target, saves,
                                                   resumed):
    killed = tmp_path / "killed"
    killed_run = subprocess.run(_killed_after_saves(killed, target, saves), cwd=ROOT, env=_env(),
                                capture_output=True, text=True, timeout=600)
    assert killed_run.returncode == -signal.SIGKILL, killed_run.stderr[-2000:]
    assert (killed / "train_state.msgpack").exists() and not (killed / "metrics.json").exists()

    out = subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert resumed in out.stdout, out.stdout[-2000:]
    assert not (killed / "sample_chunks").exists()  # cleaned up once the study finished

    a = _strip(json.loads((uninterrupted / "metrics.json").read_text()))
    b = _strip(json.loads((killed / "metrics.json").read_text()))
    assert a == b
    with np.load(uninterrupted / "arrays.npz") as fa, np.load(killed / "arrays.npz") as fb:
        assert fa.files == fb.files
        for name in fa.files:
            np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


def test_corrupted_checkpoint_fails_with_one_line_naming_the_file(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "train_state.msgpack").write_bytes(b"\x93not a checkpoint")
    args = [sys.executable, "-m", "experiments.gmm1d", f"--workdir={work}", "--steps=20",
            "--train_chunk=10", "--batch_size=16", "--num_samples=8", "--T=20", "--seeds=0",
            "--width=8", "--num_train=50", "--num_train_b=50", "--sizes=50", "--separations=1",
            "--focus_steps=10"]
    out = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "train_state.msgpack" in lines[0] and lines[0].startswith("error: checkpoint="), lines[0]
    assert not (work / "metrics.json").exists()
