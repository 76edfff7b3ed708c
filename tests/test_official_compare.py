"""The official code beside mi_jax: its saved samples are scored with mi_jax's labels, runs of
another protocol or other modes are refused, and agreement follows the Welch rule. The official
training script itself runs where the torch environment exists (.venv-torch)."""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks import official_compare as oc
from mi_jax import config
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.studies import gmm2d
from mi_jax.evaluation import intervals
from mi_jax.validation import InputError

ROOT = Path(__file__).resolve().parent.parent
INFO = {"dataset": "gaussian25", "size": 100_000, "steps": 40, "batch_size": 10_000,
        "samples": 2000, "window": 10, "timesteps": 50, "train_s": 1.0}


def _official_file(path, seed, bridge_share, means=None):
    mixture = mx.grid_2d("square", 0.05)
    rng = np.random.default_rng(seed)
    means_all = np.asarray(mixture.means)
    std = float(np.asarray(mixture.stds)[0])
    n = INFO["samples"]
    idx = rng.integers(0, 25, n)
    x = means_all[idx] + std * rng.standard_normal((n, 2))
    nb = int(bridge_share * n)  # midpoints of horizontal neighbours: bridges
    left = rng.integers(0, 20, nb)
    x[:nb] = (means_all[left] + means_all[left + 5]) / 2
    hal = rng.random(n) * 0.1
    hal[:nb] += 0.2  # bridges have the larger variance
    np.savez(path, x=x, hal=hal, losses=np.zeros(3, np.float32),
             means=means_all if means is None else means, std=np.float64(std),
             info=json.dumps(dict(INFO, seed=seed)))
    return path


def _mi_jax_dir(root, bridges, steps=40, extra=None):
    per = lambda v: {"per_seed": v, "mean": float(np.mean(v))}
    root.mkdir()
    b = {"bridge": per(bridges), "blur": per([0.0] * len(bridges)),
         "width_vs_exact": per([1.0] * len(bridges)), "bridges_auroc": per([1.0] * len(bridges)),
         "bridges_removed_at_96_kept": per([1.0] * len(bridges)),
         "num_bridges": [int(2000 * v) for v in bridges], "oracle_mode_width": 0.05 / 2.82887}
    (root / "metrics.json").write_text(json.dumps({"bridges": {"square": b}}))
    # The study's own paper preset, as experiments.gmm2d writes it (config.json version 2).
    cfg = config.preset(gmm2d.Config, gmm2d.PRESETS, "paper", **{
        "layout": "square", "seeds": list(range(len(bridges))), "steps": steps, "T": 50,
        "num_samples": 2000, "epochs": 0, **(extra or {})})
    (root / "config.json").write_text(json.dumps(wd.config_record(cfg)))
    return root


def test_official_samples_scored_with_mi_jax_labels_and_compared(tmp_path):
    files = [_official_file(tmp_path / f"s{s}.npz", s, share) for s, share in
             ((0, 0.050), (1, 0.055), (2, 0.045))]
    ours, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / "mj", [0.05, 0.052, 0.048])])
    official = oc.official_rows([str(f) for f in files], width, recipe)
    rows = official["square"]
    assert [r["bridge"] for r in rows] == pytest.approx([0.050, 0.055, 0.045])
    assert all(r["bridges_auroc"] == 1.0 for r in rows)  # every bridge above every in-support
    table = oc.compare(official, ours, recipe)
    q = table["square"]["quantities"]["bridge"]
    assert q["agree"] is True and q["difference"] == pytest.approx(0.0, abs=1e-9)
    # Welch by hand: the variances' degrees of freedom, floored, and the t quantile at them.
    a, b = np.array([0.05, 0.055, 0.045]), np.array([0.05, 0.052, 0.048])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    df = math.floor((va + vb) ** 2 / (va**2 / 2 + vb**2 / 2))
    half = intervals.t_quantile_975(df) * math.sqrt(va + vb)
    assert q["interval"][1] == pytest.approx(a.mean() - b.mean() + half)
    # A clearly different mi_jax rate does not agree.
    ours2, width2, recipe2 = oc.mi_jax_rows([_mi_jax_dir(tmp_path / "mj2", [0.20, 0.21, 0.19])])
    far = oc.compare(official, ours2, recipe2)["square"]["quantities"]["bridge"]
    assert far["agree"] is False
    assert "**no**" in oc.markdown(oc.compare(official, ours2, recipe2))


def test_runs_of_another_budget_or_other_modes_are_refused(tmp_path):
    f = _official_file(tmp_path / "s0.npz", 0, 0.05)
    ours, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / "mj", [0.05, 0.05], steps=80)])
    with pytest.raises(InputError, match=r"not the protocol of the mi_jax run of square \(steps 40 vs 80\)"):
        oc.official_rows([str(f)], width, recipe)
    # An epoch budget counts: 4 epochs of 10 batches stop the mi_jax model at step 40 of 80.
    ours, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / "mj_ep", [0.05, 0.05], steps=80,
                                                      extra={"epochs": 4})])
    assert recipe["square"]["steps"] == 40
    oc.official_rows([str(f)], width, recipe)
    ours, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / "mj_f", [0.05, 0.05],
                                                      extra={"focus_steps": 100})])
    with pytest.raises(InputError, match=r"focus_steps 0 vs 100"):
        oc.official_rows([str(f)], width, recipe)
    bad = _official_file(tmp_path / "s1.npz", 1, 0.05,
                         means=np.asarray(mx.grid_2d("square", 0.05).means) * 2)
    ours, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / "mj3", [0.05, 0.05])])
    with pytest.raises(InputError, match="its modes are not mi_jax's square mixture"):
        oc.official_rows([str(bad)], width, recipe)


TORCH = ROOT / ".venv-torch" / "bin" / "python"


@pytest.mark.skipif(not TORCH.exists() or not (ROOT.parent / "shared" / "official").exists(),
                    reason="needs the torch environment and the official code")
def test_official_training_script_writes_what_the_comparison_reads(tmp_path):
    out = tmp_path / "s3.npz"
    run = subprocess.run([str(TORCH), str(ROOT / "benchmarks" / "official_train.py"),
                          "--dataset=gaussian25", "--steps=3", "--samples=64", "--chunk=32",
                          "--timesteps=20", "--seed=3", f"--out={out}"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    with np.load(out) as f:
        assert f["x"].shape == (64, 2) and f["hal"].shape == (64,) and f["losses"].shape == (3,)
        assert np.all(f["hal"] >= 0) and json.loads(str(f["info"]))["steps"] == 3
        oc.config_of(json.loads(str(f["info"])), f["means"], float(f["std"]))  # mi_jax's grid
    bad = subprocess.run([str(TORCH), str(ROOT / "benchmarks" / "official_train.py"),
                          "--steps=0", f"--out={out}"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --steps=0: must be >= 1"


def test_labels_follow_the_mi_jax_runs_k_and_every_protocol_field_is_checked(tmp_path):
    files = [_official_file(tmp_path / f"s{s}.npz", s, 0.05) for s in (0, 1)]
    # The official samples are labelled at the mi_jax run's own k: a tighter radius turns
    # in-support samples of the mixture (2.5 std out, say) into blur, so the rates move.
    rates = {}
    for k in (4.0, 1.5):
        _, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / f"mj_k{k}", [0.05, 0.05],
                                                       extra={"k": k})])
        rows = oc.official_rows([str(f) for f in files], width, recipe)["square"]
        rates[k] = rows[0]["blur"]
    assert rates[1.5] > rates[4.0] + 0.05
    # Any protocol field beyond the budget differing from the official constants is refused.
    for extra, named in (({"tied": False}, "tied True vs False"),
                         ({"beta_end": 0.02}, "beta_end 0.2 vs 0.02"),
                         ({"std": 0.1}, "std 0.05 vs 0.1"),
                         ({"input_bias": True}, "input_bias False vs True"),
                         ({"compute_dtype": "bfloat16"}, "compute_dtype float32 vs bfloat16")):
        _, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / f"mj_{named[:6]}", [0.05, 0.05],
                                                       extra=extra)])
        with pytest.raises(InputError, match=named):
            oc.official_rows([str(files[0])], width, recipe)


def test_a_seed_or_a_configuration_given_twice_is_refused_or_counted_once(tmp_path):
    f = _official_file(tmp_path / "s0.npz", 0, 0.05)
    _, width, recipe = oc.mi_jax_rows([_mi_jax_dir(tmp_path / "mj", [0.05, 0.05])])
    assert oc._paths(f"{f},{tmp_path}/s*.npz") == [str(f)]  # overlapping names: once
    copy = tmp_path / "copy.npz"
    copy.write_bytes(f.read_bytes())
    with pytest.raises(InputError, match="a second run of square with seed 0"):
        oc.official_rows([str(f), str(copy)], width, recipe)
    # One-seed directories of the same protocol (the paper budget's units) pool their seeds;
    # the same seed twice, or another protocol, is refused.
    with pytest.raises(InputError, match=r"seed\(s\) \[0, 1\] of square given twice"):
        oc.mi_jax_rows([_mi_jax_dir(tmp_path / "a", [0.05, 0.05]),
                        _mi_jax_dir(tmp_path / "b", [0.05, 0.05])])
    units = []
    for seed, share in ((0, 0.04), (1, 0.06)):
        units.append(_mi_jax_dir(tmp_path / f"u{seed}", [share], extra={"seeds": [seed]}))
    pooled, _, _ = oc.mi_jax_rows(units)
    assert [(r["seed"], r["bridge"]) for r in pooled["square"]] == [(0, 0.04), (1, 0.06)]
    with pytest.raises(InputError, match="another protocol than an earlier directory's"):
        oc.mi_jax_rows([units[0], _mi_jax_dir(tmp_path / "u9", [0.05], steps=80)])
    table = oc.compare(oc.official_rows([str(f)], width, recipe),
                       oc.mi_jax_rows([tmp_path / "mj"])[0], recipe)
    text = oc.markdown(table)
    assert "- square: 40 steps x batch 10000 on 100000 points" in text
    assert "official seeds 0 (2000 samples each" in text and "mi_jax seeds 0, 1" in text


@pytest.mark.skipif(not TORCH.exists() or not (ROOT.parent / "shared" / "official").exists(),
                    reason="needs the torch environment and the official code")
def test_official_training_continues_from_its_checkpoint_deterministically(tmp_path):
    # The official data is unseeded, so a fresh run cannot be compared with a resumed one;
    # the checkpoint holds every input of the continuation (data, weights, Adam, RNG), and
    # one checkpoint continued twice must give the same run, mid-epoch (4 of 10 batches).
    def run(out, *extra):
        return subprocess.run([str(TORCH), str(ROOT / "benchmarks" / "official_train.py"),
                               "--dataset=gaussian25", "--steps=6", "--checkpoint_every=2",
                               "--samples=32", "--chunk=32", "--timesteps=20", "--seed=1",
                               f"--out={out}", *extra], capture_output=True, text=True, timeout=300)

    out = tmp_path / "a.npz"
    first = run(out, "--stop_at=4")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "stopped at step 4" in first.stdout and not out.exists()
    ckpt = Path(str(out) + ".ckpt.pt")
    saved = ckpt.read_bytes()
    results = []
    for name in ("a", "b"):
        ckpt_here = tmp_path / f"{name}.npz.ckpt.pt"
        ckpt_here.write_bytes(saved)
        done = run(tmp_path / f"{name}.npz")
        assert done.returncode == 0, done.stderr[-2000:]
        assert "resuming from the checkpoint at step 4" in done.stdout
        assert not ckpt_here.exists()  # removed once the output is written
        with np.load(tmp_path / f"{name}.npz") as f:
            results.append((f["losses"].copy(), f["x"].copy(), f["hal"].copy()))
    assert results[0][0].shape == (6,)
    for x, y in zip(*results):
        np.testing.assert_array_equal(x, y)
    # A checkpoint of another run is refused in one line, exit 2.
    (tmp_path / "c.npz.ckpt.pt").write_bytes(saved)
    other = subprocess.run([str(TORCH), str(ROOT / "benchmarks" / "official_train.py"),
                            "--dataset=gaussian25", "--steps=6", "--seed=2", "--timesteps=20",
                            f"--out={tmp_path / 'c.npz'}"], capture_output=True, text=True,
                           timeout=300)
    assert other.returncode == 2 and other.stderr.strip().startswith("error: --out=")
    assert len(other.stderr.strip().splitlines()) == 1
    bad = subprocess.run([str(TORCH), str(ROOT / "benchmarks" / "official_train.py"), "--steps=6",
                          "--stop_at=3", f"--out={tmp_path / 'd.npz'}"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--stop_at=3" in bad.stderr


def test_one_dimensional_runs_are_scored_and_pooled_like_the_grids(tmp_path):
    """An official 1D file against the paper budget's one-seed gmm1d units: the official
    {1, 2, 3} mixture is mi_jax's, midpoints between neighbours are bridges, the units pool."""
    from mi_jax.studies import gmm1d

    name = "modes=1,2,3 N=20000"
    units = []
    for seed, share in ((0, 0.01), (1, 0.02)):
        d = tmp_path / f"unit{seed}"
        d.mkdir()
        per = lambda v: {"per_seed": [v], "mean": v}
        b = {"bridge": per(share), "blur": per(0.0), "width_vs_exact": per(1.0),
             "bridges_auroc": per(1.0), "bridges_removed_at_96_kept": per(1.0),
             "num_bridges": [int(share * 2000)], "oracle_mode_width": 0.05}
        (d / "metrics.json").write_text(json.dumps({"bridges": {name: b}}))
        cfg = config.preset(gmm1d.Config, gmm1d.PRESETS, "paper", seeds=[seed], steps=40,
                            epochs=0, T=50, num_samples=2000, single_mixture=True)
        (d / "config.json").write_text(json.dumps(wd.config_record(cfg)))
        units.append(d)
    ours, width, recipe = oc.mi_jax_rows(units)
    assert [r["seed"] for r in ours[name]] == [0, 1] and recipe[name]["num_train"] == 20_000
    mixture = mx.mixture_1d([1.0, 2.0, 3.0], 0.05)
    rng = np.random.default_rng(0)
    n, nb = 2000, 60
    x = np.asarray(mixture.means)[rng.integers(0, 3, n)] + 0.05 * rng.standard_normal((n, 1))
    x[:nb] = rng.choice([1.5, 2.5], (nb, 1))  # halfway between neighbours: bridges
    hal = rng.random(n) * 0.1
    hal[:nb] += 0.2
    path = tmp_path / "o1d.npz"
    np.savez(path, x=x, hal=hal, losses=np.zeros(3, np.float32),
             means=np.asarray(mixture.means), std=np.float64(0.05),
             info=json.dumps(dict(INFO, dataset="gaussian1d", size=20_000, seed=0)))
    row, = oc.official_rows([str(path)], width, recipe)[name]
    assert row["bridge"] == pytest.approx(nb / n) and row["num_bridges"] == nb
    assert row["bridges_auroc"] == 1.0 and row["bridges_removed_at_96_kept"] == 1.0
    shifted = tmp_path / "o1d_shift.npz"
    np.savez(shifted, x=x, hal=hal, losses=np.zeros(3, np.float32),
             means=np.asarray(mixture.means) + 1.0, std=np.float64(0.05),
             info=json.dumps(dict(INFO, dataset="gaussian1d", size=20_000, seed=0)))
    # Other modes name another mixture, of which no mi_jax run was given.
    with pytest.raises(InputError, match=r"no mi_jax run of modes=2,3,4 N=20000 given"):
        oc.official_rows([str(shifted)], width, recipe)
