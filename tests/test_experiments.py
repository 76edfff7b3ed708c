"""End-to-end runs of the entry points with tiny settings, and their handling of bad input."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mi_jax import cli
from mi_jax import workdir as wd
from mi_jax.studies import runner
from mi_jax.validation import InputError

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--steps=30", "--train_chunk=15", "--batch_size=64", "--num_samples=64", "--T=60",
        "--focus_steps=10",
        "--seeds=0,1", "--width=16", "--num_train=500"]


def run(module, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


GMM1D = ["--sizes=100,500", "--separations=1,2", "--num_train_b=300"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny gmm1d and gmm2d runs: checked end to end below, and the models the analyses load."""
    root = tmp_path_factory.mktemp("models")
    for name, extra in (("gmm1d", GMM1D), ("gmm2d", ["--curve_every=15", "--curve_samples=32"])):
        out = run(name, f"--workdir={root / name}", *TINY, *extra)
        assert out.returncode == 0, out.stderr[-2000:]
    return root


def test_gmm1d_end_to_end(tiny_models):
    work = tiny_models / "gmm1d"
    for name in ("config.json", "metrics.json", "arrays.npz", "fig2_density.png", "sweeps.png",
                 "appendix_c_density.png", "losses.png", "models.npz", "train_state.msgpack"):
        assert (work / name).stat().st_size > 0, name
    metrics = json.loads((work / "metrics.json").read_text())
    assert len(metrics["size_sweep"]["mean"]) == 2 and len(metrics["separation_sweep"]["mean"]) == 2
    assert metrics["provenance"]["jax"]
    import numpy as np

    with np.load(work / "arrays.npz") as arrays:
        # --steps=30 reached training (one loss per step) and --num_samples=64 sampling, for 4
        # distinct configurations x 2 seeds: {1,2,3} N=500 (Fig. 2, --sizes 500, separation 1
        # de-duplicated), {1,2,4,5} N=300, {1,2,3} N=100, {0,2,4} N=500 (separation 2).
        assert arrays["losses"].shape == (8, 30) and np.isfinite(arrays["losses"]).all()
        assert arrays["samples"].shape == (8, 64)
    # Same workdir, different config: refused without --overwrite, results untouched.
    before = (work / "metrics.json").read_bytes()
    again = run("gmm1d", f"--workdir={work}", *TINY, *GMM1D[:1], "--separations=1,3",
                *GMM1D[2:])
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (work / "metrics.json").read_bytes() == before


def test_gmm2d_end_to_end(tiny_models):
    work = tiny_models / "gmm2d"
    metrics = json.loads((work / "metrics.json").read_text())
    assert set(metrics["rate"]) == {"square", "rotated"}
    assert (work / "fig3_scatter.png").stat().st_size > 0
    # Bridges and blur split every hallucination; the convergence curve has a point per 15 steps.
    for name, b in metrics["bridges"].items():
        for s, (h, br, bl) in enumerate(zip(b["hallucinated"]["per_seed"], b["bridge"]["per_seed"],
                                            b["blur"]["per_seed"])):
            assert h == pytest.approx(br + bl), (name, s)
        assert metrics["convergence"][name]["steps"] == [15, 30]
        assert len(metrics["convergence"][name]["bridge"]["mean"]) == 2
    assert (work / "convergence.png").stat().st_size > 0


def test_gmm1d_runs_one_mixture_with_the_official_batches(tmp_path):
    """--single_mixture --batch_order=in_order: one configuration, trained on the official
    round-robin data in fixed-order batches (the same losses as the library's in-order run)."""
    import numpy as np

    from mi_jax import config, sweeps
    from mi_jax import workdir as wd
    from mi_jax.studies import gmm1d, mixture_study

    cfg = config.preset(gmm1d.Config, gmm1d.PRESETS, "quick", steps=20, train_chunk=10,
                        batch_size=100, num_samples=32, chunk_size=32, T=60, focus_steps=10,
                        seeds=[0, 1], width=16, num_train=300, single_mixture=True,
                        batch_order="in_order", lr_schedule="constant")
    metrics = gmm1d.run(cfg, wd.prepare(tmp_path / "w", cfg, False), log=lambda *_: None)
    assert list(metrics["configs"]) == ["modes=1,2,3 N=300"]
    assert metrics["size_sweep"]["x"] == [300] and metrics["separation_sweep"]["x"] == [1.0]
    built = gmm1d.build_configs(cfg)
    grid = sweeps.Grid(built["configs"], [0, 1])
    from mi_jax.nets import make_mlp

    _, losses = sweeps.train_grid(make_mlp(1, 16, 3, True, num_timesteps=60),
                                  mixture_study.schedule_from_config(cfg),
                                  mixture_study.train_config_from(cfg), grid, 20, chunk_steps=10)
    with np.load(tmp_path / "w" / "arrays.npz") as arrays:
        np.testing.assert_array_equal(arrays["losses"], losses)


@pytest.mark.parametrize("module, flag", [
    ("gmm1d", "--modes=1,,x"), ("gmm1d", "--modes=1,x"), ("gmm1d", "--modes=1"),
    ("gmm1d", "--modes=1,1,2"), ("gmm1d", "--std=-0.1"), ("gmm1d", "--std=0"),
    ("gmm1d", "--std=nan"), ("gmm1d", "--hal_window=5,5"), ("gmm1d", "--hal_window=0,2000"),
    ("gmm1d", "--hal_window=-1,3"), ("gmm1d", "--hal_window=1,2,3"), ("gmm1d", "--T=1"),
    ("gmm1d", "--preset=huge"), ("gmm1d", "--seeds=0,x"), ("gmm1d", "--seeds=-1"),
    ("gmm1d", "--steps=0"), ("gmm1d", "--num_samples=abc"), ("gmm1d", "--sizes=100,0"),
    ("gmm1d", "--separations=inf"), ("gmm1d", "--lr=0"), ("gmm1d", "--beta_end=1.5"),
    ("gmm1d", "--tied=maybe"), ("gmm1d", "--no_such_flag=1"),
    ("gmm2d", "--layout=hexagonal"), ("gmm2d", "--num_train=-5"), ("gmm2d", "--width=1"),
    ("gmm2d", "--k=0"), ("gmm2d", "--batch_size=2.5"), ("gmm2d", "--focus_steps=2000"),
    ("gmm1d", "--epochs=-1"), ("gmm1d", "--curve_every=7"),
    ("shapes", "--resolution=48"), ("shapes", "--mults=1,2,2,2,2,2,2,2"),
    ("shapes", "--sampling_steps=2000"), ("shapes", "--images_dir=/no/such/dir"),
    ("shapes", "--hal_window=0,200"), ("shapes", "--batch_size=100000"),
    ("shapes", "--compute_dtype=float16"), ("shapes", "--snapshot_steps=2000"),
    ("gmm2d", "--compute_dtype=float16"),
])
def test_bad_flags_fail_in_one_line(module, flag):
    """In-process: the line the entry point prints before it touches its work directory."""
    line = cli.check_args(runner.load(module), ["prog", "--workdir=w", flag])
    assert line is not None and "\n" not in line
    name = flag.split("=")[0]
    assert line.startswith("error:") and name.lstrip("-") in line, line


@pytest.mark.parametrize("module, flag", [
    ("gmm1d", "--tied=maybe"), ("gmm1d", "--hal_window=0,2000"), ("gmm2d", "--focus_steps=2000"),
    ("detection", "--models_from=/nonexistent/dir"),
])
def test_bad_flags_exit_2_in_one_line_and_write_nothing(tmp_path, module, flag):
    """The whole path once per kind of error (absl parse, value, cross-flag, analysis input)."""
    work = tmp_path / "work"
    out = run(module, f"--workdir={work}", flag, timeout=120)
    lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error:") and flag.split("=")[0].lstrip("-") in lines[0]
    assert not work.exists()


SHAPES_TINY = ["--steps=2", "--train_chunk=1", "--batch_size=8", "--num_train=64", "--base=8",
               "--mults=1,2", "--sampling_steps=10", "--hal_window=0,5", "--num_samples=8",
               "--chunk_size=8", "--grid=2", "--seeds=0"]


def test_shapes_paper_preset_runs_at_64x64_with_its_unet(tmp_path):
    """The GPU-sized preset's path on the CPU: the official 64x64 images, four UNet levels and
    bottleneck attention, with only the channel width and every count cut to toy size."""
    work = tmp_path / "paper"
    out = run("shapes", f"--workdir={work}", "--preset=paper", "--steps=1", "--train_chunk=1",
              "--batch_size=2", "--num_train=16", "--base=8", "--sampling_steps=4",
              "--hal_window=0,2", "--num_samples=4", "--chunk_size=4", "--grid=2", "--seeds=0")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((work / "metrics.json").read_text())
    assert "attn=True" in metrics["network"] and "(1, 2, 2, 2)" in metrics["network"]
    assert metrics["train_in_support"] == 1.0  # the counter reads every 64x64 training image
    assert metrics["rates"]["num_images"] == 4
    arrays = np.load(work / "arrays.npz")
    assert arrays["samples"].shape == (1, 4, 64, 64, 1)
    assert arrays["hal_columns"].shape == (1, 4, 3) and np.all(np.isfinite(arrays["hal"]))


def test_shapes_end_to_end_and_bring_your_own_pngs(tmp_path):
    from mi_jax.data import images, shapes

    out = run("shapes", f"--workdir={tmp_path / 'shapes'}", *SHAPES_TINY, "--snapshot_steps=1")
    assert out.returncode == 0, out.stderr[-3000:]
    work = tmp_path / "shapes"
    for name in ("fig5_samples.png", "fig7_variance.png", "embedding_bottleneck.png",
                 "training_examples.png", "arrays.npz", "train_state.msgpack"):
        assert (work / name).stat().st_size > 0, name
    metrics = json.loads((work / "metrics.json").read_text())
    assert metrics["train_in_support"] == 1.0
    assert metrics["rates"]["num_images"] == 8
    assert sum(metrics["rates"]["count_primary_total"].values()) == round(
        8 * metrics["rates"]["hallucination_rate"]["mean"])
    assert not (work / "sample_chunks").exists()
    # Detection by kind, region and window on fresh samples of the trained model (dense tail).
    det = tmp_path / "det"
    out = run("shapes_detection", f"--workdir={det}", f"--models_from={work}", "--num_samples=12",
              "--chunk_size=12", "--dense_steps=6", "--strided_steps=4", "--windows=0:5,0:2,5:60",
              "--snapshots")
    assert out.returncode == 0, out.stderr[-3000:]
    dmet = json.loads((det / "metrics.json").read_text())
    # The snapshot after step 1 is evaluated beside the final state (step 2), as its own model.
    assert {n: r["train_steps"] for n, r in dmet["sources"].items()} == {"shapes@1": 1, "shapes": 2}
    from mi_jax.studies import shapes_detection as sd
    snap = sd.load_models(work, work / "snapshots" / "step_1.msgpack")[3]
    final = sd.load_models(work)[3]
    assert int(snap.step[0]) == 1 and int(final.step[0]) == 2
    flat = [np.concatenate([np.ravel(a) for a in jax.tree.leaves(s.params)]) for s in (snap, final)]
    assert not np.allclose(*flat)
    src = dmet["sources"]["shapes"]
    assert src["sampling_steps"] == 10 and src["seeds"] == [0]
    assert sum(np.mean(v) for v in src["composition"].values()) == pytest.approx(1.0)
    rows = src["detection"]["column_max"]
    assert [r["window"] for r in rows] == [[0, 5], [0, 2], [5, 60]]
    assert rows[0]["pooled"]["all"]["num"] == 12
    assert (det / "samples_shapes.png").stat().st_size > 0
    assert (det / "compute_curve.png").stat().st_size > 0
    assert set(src["detection"]) == {"whole_image", "column_max", "square_column", "column_ink_max"}
    assert len(src["controls"]["stratified"]["whole_image"]) == 3
    ink_auroc = dmet["headline"]["shapes"]["controls"]["final_ink_column_max"]
    # None (JSON's NaN) when none of the 12 images is a duplicate, or none is in support.
    assert (ink_auroc is None) == (0.0 in (src["composition"]["duplicate"][0],
                                           src["composition"]["in_support"][0]))
    assert ink_auroc is None or 0.0 <= ink_auroc <= 1.0
    # The main job's summary renders this headline: one row per region and window (official,
    # best), none for the composition / held-out / controls entries, and the held-out line.
    from mi_jax import report
    text = report.summary_markdown({"shapes_detection": dmet}, "quick")
    regions = ("whole_image", "column_max", "square_column", "column_ink_max")
    rows = [ln for ln in text.splitlines() if ln.startswith(tuple(f"| {r}_" for r in regions))]
    assert len(rows) == 2 * len(regions) * len(dmet["headline"])  # sources: snapshot, final
    assert "| column_max_official | [0, 5] |" in text
    assert "AUROC on the odd-numbered ones" in text
    # The detector benchmark on the same UNet: duplicates and all hallucinations, every detector.
    bench = tmp_path / "bench"
    out = run("detectors", f"--workdir={bench}", f"--models_from={work}", "--num_images=12",
              "--chunk_size=12", "--dense_steps=6", "--strided_steps=4", "--windows=0:5,0:2",
              "--cost_images=4", "--t0=2")
    assert out.returncode == 0, out.stderr[-3000:]
    tasks = json.loads((bench / "metrics.json").read_text())["sources"]["shapes"]["configs"]
    assert set(tasks["SIMPLE SHAPES"]) == {"duplicates", "all"}
    assert "var_x0 0:5 max over regions" in tasks["SIMPLE SHAPES"]["all"]
    assert (bench / "roc_shapes.png").stat().st_size > 0
    bad = run("shapes_detection", f"--workdir={tmp_path / 'bad'}", f"--models_from={work}",
              "--windows=0:5000")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --windows=0:5000")
    # The same pipeline on a folder of PNGs (same size, so the compiled programs are reused).
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, img in enumerate(shapes.generate(9, 64, 32).images):
        images.save_png(pngs / f"img{i:03d}.png", img)
    out = run("shapes", f"--workdir={tmp_path / 'byo'}", f"--images_dir={pngs}", *SHAPES_TINY)
    assert out.returncode == 0, out.stderr[-3000:]
    byo = json.loads((tmp_path / "byo" / "metrics.json").read_text())
    assert "rates" not in byo and byo["headline"]["sample_images_per_s"] > 0
    assert (tmp_path / "byo" / "fig5_samples.png").exists()


@pytest.mark.parametrize("module, extra, outputs", [
    ("detection", ["--num_samples=200", "--chunk_size=200", "--windows=0:10,20:35,0:40", "--t0=2"],
     ["roc_windows_gmm1d.png", "roc_windows_gmm2d.png", "arrays.npz"]),
    ("trajectories", ["--num_samples=64", "--t_max=30"], ["fig6_gmm1d.png", "fig6_gmm2d.png"]),
    ("score_analysis", ["--timesteps=0,5,20", "--grid_points=200"], ["fig4_gmm1d.png", "fig4_gmm2d.png"]),
    ("ablations", ["--num_samples=64", "--sampling_steps=10", "--checkpoints=20,40"],
     ["fig11_ablations.png"]),
    ("detectors", ["--num_samples=200", "--chunk_size=200", "--windows=0:10,0:3,20:40", "--t0=2",
                   "--cost_samples=50"], ["roc_gmm1d.png", "roc_gmm2d.png", "table.md"]),
    ("mode_mass", ["--num_samples=300", "--chunk_size=300"],
     ["mode_share_gmm1d.png", "mode_share_gmm2d.png", "arrays.npz"]),
])
def test_analyses_end_to_end(tmp_path, tiny_models, module, extra, outputs):
    sources = f"{tiny_models / 'gmm1d'},{tiny_models / 'gmm2d'}"
    out = run(module, f"--workdir={tmp_path}", f"--models_from={sources}", *extra)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["headline"]
    for name in outputs:
        assert (tmp_path / name).stat().st_size > 0, name
    if module == "detectors":
        for src in metrics["sources"].values():
            assert src["cost"]["multiple_of_plain"]["var_x0 0:10"] == 1.0
            for tasks in src["configs"].values():
                assert set(tasks) == {"bridges", "blur"}
                for dets in tasks.values():
                    assert {"var_x0 0:10", "curvature", "flipd", "eps_norm_last",
                            "random"} <= set(dets)
    if module == "detection":
        for row in metrics["headline"].values():
            for key in ("var_x0_auroc", "flipd_auroc", "random_auroc", "best_window",
                        "rate_after_calibrated_filter", "preemptive_steps_saved"):
                assert key in row, key


@pytest.mark.parametrize("module, flag", [
    ("detection", "--windows=5:2"), ("detection", "--windows=0:10,x"), ("detection", "--t0=-1"),
    ("detection", "--models_from=/nonexistent/dir"), ("trajectories", "--num_samples=1"),
    ("score_analysis", "--timesteps=0,,5"), ("ablations", "--checkpoints=20,10"),
    ("ablations", "--imbalance=0.5"), ("detectors", "--trace_window=5"),
    ("detectors", "--split_seed=-1"), ("detectors", "--models_from=/nonexistent/dir"),
    ("mode_mass", "--chunk_size=0"),
])
def test_analysis_bad_flags(module, flag):
    line = cli.check_args(runner.load(module), ["prog", "--workdir=w", flag])
    assert line is not None and line.startswith("error:")
    assert flag.split("=")[0].lstrip("-") in line, line


@pytest.mark.filterwarnings("ignore:sampler produced")  # 20-step models may diverge
def test_recipe_ab_runs_and_skips_finished_recipes(tmp_path):
    """The recipe A/B writes one curve per recipe and reuses a finished recipe on a rerun."""
    from mi_jax import config
    from mi_jax import workdir as wd
    from mi_jax.studies import convergence

    cfg = config.preset(convergence.Config, convergence.PRESETS, "quick", recipes="cosine,focus",
                        layouts="square", grid_size=2, seeds=[0, 1], steps=20, eval_every=10,
                        num_samples=40, num_train=2000)
    work = wd.prepare(tmp_path / "ab", cfg, False)
    metrics = convergence.run(cfg, work, log=lambda *_: None)
    assert [p["step"] for p in metrics["results"]["focus"]["curve"]] == [10, 20]
    assert set(metrics["summary"]) == {"cosine", "focus"}
    assert (work / "convergence.png").stat().st_size > 0
    logged = []
    convergence.run(cfg, work, log=logged.append)
    assert sum("finished earlier" in line for line in logged) == 2
    with pytest.raises(InputError, match="eval_every"):
        convergence.validate(cfg.replace(eval_every=7))


def test_repair_end_to_end_and_refuses_1d_models(tmp_path, tiny_models):
    out = run("repair", f"--workdir={tmp_path / 'rep'}", f"--models_from={tiny_models / 'gmm2d'}",
              "--num_samples=200", "--chunk_size=200", "--restart_t=10", "--guidance_weights=0.5",
              "--guidance_t_max=20", "--window=0,5", "--flag_fractions=0.04,0.2")
    assert out.returncode == 0, out.stderr[-3000:]
    table = json.loads((tmp_path / "rep" / "metrics.json").read_text())["table"]
    assert set(table) == {"square", "rotated"}
    for arms in table.values():
        assert set(arms) == {"plain", "filter f=0.04", "filter f=0.2", "restart t'=10 f=0.04",
                             "restart t'=10 f=0.2", "guided w=0.5"}
        assert arms["plain"]["compute"]["mean"] == 1.0
        # Flagging 5x more restarts ~5x more samples: compute over plain grows with f.
        small, large = (arms[f"restart t'=10 f={f}"]["compute"]["mean"] - 1 for f in ("0.04", "0.2"))
        assert 0 < small < large
        assert arms["filter f=0.2"]["compute"]["mean"] == pytest.approx(1 / 0.8, rel=0.02)
    head = json.loads((tmp_path / "rep" / "metrics.json").read_text())["headline"]
    assert head["square"]["best_repair"].startswith("restart")
    assert head["square"]["filter_at_same_fraction"].startswith("filter f=")
    assert (tmp_path / "rep" / "repair.png").stat().st_size > 0
    bad = run("repair", f"--workdir={tmp_path / 'bad'}", f"--models_from={tiny_models / 'gmm1d'}")
    assert bad.returncode == 2 and "not a 2D mixture run" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_smoothness_end_to_end_resumes_and_refuses_repeated_weights(tmp_path):
    tiny = [a for a in TINY if not a.startswith("--seeds")] + ["--seeds=0", "--layout=square",
                                                             "--chunk_size=64"]
    args = [f"--workdir={tmp_path / 'sm'}", *tiny, "--arms=jacobian:1,between:10",
            "--jacobian_t_max=20",
            "--timesteps=2,20", "--heldout_samples=1000"]
    out = run("smoothness", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    work = tmp_path / "sm"
    metrics = json.loads((work / "metrics.json").read_text())
    assert set(metrics["table"]["square"]) == {"plain", "jacobian_1", "between_10"}
    # Each arm is an ordinary gmm2d run; the penalised one trained with the term.
    plain = wd.read_config(work / "plain")
    arm = wd.read_config(work / "jacobian_1")
    assert plain["jacobian_weight"] == 0.0 and plain["jacobian_t_max"] == 0
    assert arm["jacobian_weight"] == 1.0 and arm["jacobian_t_max"] == 20
    between = wd.read_config(work / "between_10")
    assert between["between_weight"] == 10.0 and between["jacobian_weight"] == 0.0
    row = metrics["table"]["square"]["jacobian_1"]
    assert np.isfinite(row["heldout_loss"]["mean"]) and "between_mass_t20" in row
    for name in ("table.md", "smoothness.png", "profiles.png"):
        assert (work / name).stat().st_size > 0, name
    again = run("smoothness", *args)
    assert again.returncode == 0 and again.stdout.count("finished result found") == 3
    bad = run("smoothness", f"--workdir={tmp_path / 'bad'}", *tiny, "--arms=jacobian:1,jacobian:1")
    assert bad.returncode == 2 and "arms=jacobian:1,jacobian:1: 'jacobian:1' is not a new" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_precision_benchmark_pairs_float32_and_bf16_samples_of_a_mixture_run(tiny_models,
                                                                             tmp_path):
    """benchmarks.bench_precision on a gmm2d run: the float32 arm redraws the run's own samples
    bit for bit (same keys), the bf16 arm differs from it, and every figure is reported."""
    out_file = tmp_path / "precision.json"
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_precision",
                          f"--workdir={tiny_models / 'gmm2d'}", "--num_samples=64",
                          "--chunk_size=64", f"--out={out_file}"], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "same label %" in out.stdout and "samples/s" in out.stdout
    r = json.loads(out_file.read_text())
    assert r["kind"] == "mixture" and len(r["models"]) == 4  # 2 layouts x 2 seeds
    assert r["float32_max_diff_from_run_samples"] == 0.0
    assert all(d > 0 for d in r["mean_distance"])  # bf16 really changes the samples
    assert all(0.0 <= a <= 1.0 for a in r["agreement_label"])
    for dtype in ("float32", "bfloat16"):
        assert r[dtype]["samples_per_s"] > 0 and len(r[dtype]["hallucination_rate"]) == 4


def test_a_runs_saved_compute_dtype_rebuilds_its_network_and_can_be_overridden(tiny_models,
                                                                             tmp_path):
    import shutil

    from mi_jax.studies import mixture_models

    src = tiny_models / "gmm2d"
    assert "bfloat16" not in mixture_models.load_models(src).network.name
    copy = tmp_path / "gmm2d_bf16"
    shutil.copytree(src, copy)
    record = json.loads((copy / "config.json").read_text())
    record["protocol"]["compute_dtype"] = "bfloat16"
    (copy / "config.json").write_text(json.dumps(record))
    models = mixture_models.load_models(copy)
    assert "bfloat16" in models.network.name and models.config.compute_dtype == "bfloat16"
    assert "bfloat16" not in mixture_models.load_models(copy, compute_dtype="float32").network.name
