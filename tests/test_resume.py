"""Kill a run with SIGKILL in the middle of training, resume it, and get the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--steps=300", "--train_chunk=10", "--batch_size=32", "--num_samples=32", "--T=40",
        "--seeds=0,1", "--width=16", "--num_train=200", "--num_train_b=200", "--sizes=200",
        "--separations=1", "--lr_schedule=cosine"]


def _cmd(workdir):
    return [sys.executable, "-m", "experiments.gmm1d", f"--workdir={workdir}", *ARGS]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")


def _strip(metrics):
    metrics.pop("seconds", None)
    metrics.pop("provenance", None)
    return metrics


def test_sigkill_during_training_then_resume_matches_uninterrupted(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    out = subprocess.run(_cmd(whole), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]

    proc = subprocess.Popen(_cmd(killed), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    ckpt = killed / "train_state.msgpack"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # a few more chunks
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists() and not (killed / "metrics.json").exists()

    out = subprocess.run(_cmd(killed), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    resumed_at = [l for l in out.stdout.splitlines() if "resuming training" in l]
    assert resumed_at, out.stdout[-2000:]
    step = int(resumed_at[0].split()[-1])
    assert 0 < step < 300, step

    a = _strip(json.loads((whole / "metrics.json").read_text()))
    b = _strip(json.loads((killed / "metrics.json").read_text()))
    assert a == b
    with np.load(whole / "arrays.npz") as fa, np.load(killed / "arrays.npz") as fb:
        for name in fa.files:
            np.testing.assert_array_equal(fa[name], fb[name], err_msg=name)


def test_corrupted_checkpoint_fails_with_one_line_naming_the_file(tmp_path):
    work = tmp_path / "w"
    args = _cmd(work)[:-12] + ["--steps=20", "--train_chunk=10", "--batch_size=16",
                               "--num_samples=8", "--T=20", "--seeds=0", "--width=8",
                               "--num_train=50", "--num_train_b=50", "--sizes=50",
                               "--separations=1"]
    assert subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, timeout=600).returncode == 0
    (work / "train_state.msgpack").write_bytes(b"\x93not a checkpoint")
    out = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "train_state.msgpack" in lines[0] and lines[0].startswith("error: checkpoint=")
