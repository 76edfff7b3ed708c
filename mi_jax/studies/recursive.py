r"""Recursive retraining on own samples, with and without filtering (paper Fig. 8 and the
appendix's per-generation scatter plots).

Each generation trains fresh models only on the previous generation's kept samples: no filter,
a random subset, or the lowest trajectory variances (any detector of the detection library with
--filters=detector:var_xt etc.). Three datasets, each in its own sub-directory (a full work
directory that resumes after interruption, generation by generation):
  gmm2d   the 2D grid of Gaussians (toy MLP): hallucination rate, modes covered, per-mode mass,
          histogram KL to the true mixture;
  shapes  SIMPLE SHAPES (UNet): hallucination rate by category from the shape counter;
  digits  MNIST from IDX files (--mnist_dir), else digits rendered from matplotlib's fonts
          (offline; NOT MNIST): Frechet distance in the feature space of a small classifier
          trained on the real digits (NOT Inception FID) and the predicted-label distribution.
The per-dataset flags (--steps, --seeds, --num_train, ...) override the preset of every selected
dataset; SIMPLE SHAPES is not in the quick default (a UNet that draws clean shapes costs tens of
minutes per model on 2 CPU cores, and the study trains one per generation, filter and seed).

--pool_from=DIR,DIR,... trains nothing: it pools finished runs that differ only in seeds or
filters (each the study's usual work directory) into one table and Fig. 8 per dataset, so the
seeds of a study too long for one sitting can run apart.

Command line: `python -m experiments.recursive` (every flag and preset: `--help`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import numpy as np

from mi_jax import config, ledger
from mi_jax import plots, report, sweeps
from mi_jax import recursive as rec
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.diffusion import schedule as sched
from mi_jax.evaluation import intervals
from mi_jax.nets import make_mlp, make_unet
from mi_jax.studies.registry import Schema, Study
from mi_jax.training import train as tr
from mi_jax.validation import InputError, check_training_and_sampling

DATASETS = ("gmm2d", "shapes", "digits")
PHASE_REFERENCE = 7  # key phase of the 2D reference sample and of the digits classifier

OPTIONS = (
    config.Option("preset", "choice", "quick (CPU) or paper (official 2D protocol).",
                  choices=("quick", "paper")),
    config.Option("datasets", "str", "Comma-separated subset of: " + ", ".join(DATASETS)),
    config.Option("filters", "str", "Comma-separated filters: none, random, variance, restart "
                  "(repair what variance would drop: re-noise to --restart_t, resample), "
                  "detector:var_xt|var_eps|eps_norm_last|var_x0_two_sided."),
    config.Option("restart_t", "int", "The restart filter's re-noising timestep t' (unset: "
                  f"{rec.RecursionConfig.restart_t}).", low=1, default=None),
    config.Option("real_fraction", "float", "Share of each later generation's training set that is "
                  "real data (0 = the paper's protocol).", low=0, high=0.99),
    config.Option("accumulate", "bool", "Train on real + every generation's kept samples so far."),
    # Per-dataset settings: no value here means the dataset's own preset.
    config.Option("generations", "int", "Generations (0 = trained on real data).", low=1, high=50),
    config.Option("seeds", "ints", "Seeds (each filter x seed is one chain of models).", low=0,
                  high=2**31 - 1),
    config.Option("steps", "int", "Training steps per generation.", low=1),
    config.Option("batch_size", "int", "Training batch size.", low=1),
    config.Option("lr", "float", "Adam learning rate.", low=0, low_open=True),
    config.Option("lr_schedule", "choice", "constant (official) or cosine decay to 0 over --steps "
                  "(unset: cosine, except gmm2d's paper preset).", choices=("constant", "cosine")),
    config.Option("width", "int", "gmm2d / digits: the MLP's width (unset: the dataset's preset).",
                  low=2),
    config.Option("focus_steps", "int", "Importance-weighted timesteps: a share --focus_prob of t "
                  "from [0, focus_steps) (the same objective; unset or 0: uniform t, official).",
                  low=0),
    config.Option("focus_prob", "float", "With --focus_steps: the share of t drawn from [0, "
                  "focus_steps) (unset: 0.5).", low=0, high=1),
    config.Option("batch_order", "choice", "random (i.i.d. rows) or in_order (the official "
                  "fixed-order batches: generation 0's data in the official round-robin mode "
                  "order, later generations' in the order the filter keeps them -- the variance "
                  "filter's by ascending variance; unset: random, except gmm2d's paper preset).",
                  choices=("random", "in_order")),
    config.Option("num_train", "int", "Training-set size of every generation.", low=10),
    config.Option("num_candidates", "int", "Samples drawn per generation, the filter keeps "
                  "num_train of them.", low=10),
    config.Option("train_chunk", "int", "Training steps per jitted call.", low=1),
    config.Option("chunk_size", "int", "Samples per sampler call.", low=1),
    config.Option("sampling_steps", "int", "Reverse steps (strided if below T).", low=2),
    config.Option("hal_window", "window", "Trajectory-variance window lo,hi: training-schedule "
                  "timesteps with --hal_clock=train, reverse-step indices with index.", low=0),
    config.Option("hal_clock", "choice", "How --hal_window is counted: train (timesteps of the "
                  "training schedule, whatever the sampler) or index (the last reverse steps).",
                  choices=("train", "index")),
    config.Option("dense_steps", "int", "Sample every training timestep below this one, and "
                  "--sampling_steps strided ones above it (0: strided throughout).", low=0),
    config.Option("resolution", "int", "Image side for shapes (divides 64) and digits (rendered: "
                  "divides 64; MNIST: divides 28).", low=4, high=64),
    config.Option("mnist_dir", "str", "Folder with MNIST's train-images/-labels IDX files."),
    config.Option("grid_size", "int", "Side of the gmm2d square grid (quick preset: 3; 5: the "
                  "official 25 modes).", low=2, high=10),
    config.Option("between_weight", "float", "Train every generation with the between-points term "
                  f"of experiments.smoothness at this weight (t < {tr.DEFAULT_BETWEEN_T_MAX}; unset: the "
                  "plain objective).",
                  low=0),
    config.Option("input_bias", "bool", "gmm2d: give the MLP's input layer a bias (unset: none, as "
                  "the official network; see experiments.mode_mass)."),
    config.Option("pool_from", "str", "Comma-separated work directories of finished runs of this "
                  "study with the same settings but other seeds (or filters): train nothing, pool "
                  "their curves per filter over every seed into this workdir's table and Fig. 8.",
                  default=None),
)
DATASET_OPTIONS = ("generations", "seeds", "steps", "batch_size", "lr", "lr_schedule",
                   "batch_order", "width", "focus_steps", "focus_prob", "num_train",
                   "num_candidates", "train_chunk",
                   "chunk_size", "sampling_steps", "hal_window", "hal_clock", "dense_steps",
                   "resolution", "mnist_dir", "grid_size", "between_weight",
                   "input_bias")
# Unset per-dataset options mean "the dataset's own preset" (DATASET_PRESETS).
OPTIONS = tuple(dataclasses.replace(o, default=None) if o.name in DATASET_OPTIONS else o
                for o in OPTIONS)
Config = config.config_class("RecursiveConfig", OPTIONS)
MNIST_RESOLUTION = {"quick": 7, "paper": 28}  # MNIST's 28 x 28 pooled (quick: 4x4 blocks)
PRESETS = {
    # SIMPLE SHAPES is not in the quick default: a UNet that draws clean shapes needs ~1 500 steps
    # (~25 min per model with sampling on 2 cores), i.e. hours for the study: --datasets=shapes.
    "quick": dict(datasets="gmm2d,digits", filters="none,random,variance",
                  real_fraction=0.0, accumulate=False),
    "paper": dict(datasets="gmm2d,digits,shapes", filters="none,random,variance",
                  real_fraction=0.0, accumulate=False),
}

# Per-dataset presets. gmm2d/paper is the official protocol (25-mode grid, 100 000 samples,
# 102 500 candidates, keep 100 000; batch 10 000 in the data's order, constant lr; 100 000
# steps; tests/test_paper_presets.py reads it against run.sh). Everything else is [ASSUMED]
# (the paper gives no Shapes/MNIST protocol); quick presets are sized for a 2-core CPU.
DATASET_PRESETS = {
    "quick": {
        # The first 300 of the official 1 000 betas (0.001 -> 0.2): alpha_bar(299) = 8e-5, so the
        # chain starts from noise as before, and no step is spent on the 700 steps of pure noise
        # (3x faster convergence measured: BUILD_NOTES.md).
        "gmm2d": dict(grid_size=3, width=64, T=300, beta_start=1e-3,
                      beta_end=1e-3 + 299 * 0.199 / 999, steps=5000, batch_size=512, lr=2e-3,
                      num_train=5000, num_candidates=5500, train_chunk=1000, chunk_size=5500,
                      sampling_steps=300, hal_window=[0, 10], k=4.0, generations=5, seeds=[0, 1]),
        "digits": dict(resolution=8, width=128, T=1000, beta_start=1e-4, beta_end=0.02,
                       steps=2500, batch_size=256, lr=1e-3, num_train=5000, num_candidates=5500,
                       train_chunk=500, chunk_size=5500, sampling_steps=100, hal_window=[0, 10],
                       classifier_steps=2000, generations=5, seeds=[0, 1]),
        # The UNet of experiments.shapes' quick preset, 1 500 steps on 1 000 images (17.9 %
        # hallucinated at generation 0); a base-8 UNet at lr 2e-3 diverged at sampling
        # (BUILD_NOTES.md). The official window (t = 9..0) sampled step by step after 50 strided
        # steps (issue 15). ~7 min per model on 2 cores, training and sampling.
        "shapes": dict(resolution=32, base=16, mults=[1, 2, 2], T=1000, beta_start=1e-4,
                       beta_end=0.02, steps=1500, batch_size=32, lr=1e-3, num_train=1000,
                       num_candidates=1100, train_chunk=1, chunk_size=550, sampling_steps=50,
                       dense_steps=10, hal_window=[0, 10], hal_clock="train", generations=3,
                       seeds=[0, 1]),
    },
    "paper": {
        "gmm2d": dict(grid_size=5, width=128, T=1000, beta_start=1e-3, beta_end=0.2,
                      steps=100_000, batch_size=10_000, lr=1e-3, lr_schedule="constant",
                      batch_order="in_order", num_train=100_000,
                      num_candidates=102_500, train_chunk=2000, chunk_size=102_500,
                      sampling_steps=1000, hal_window=[0, 10], k=4.0, generations=5,
                      seeds=[0, 1, 2, 3, 4]),
        "digits": dict(resolution=28, width=512, T=1000, beta_start=1e-4, beta_end=0.02,
                       steps=50_000, batch_size=256, lr=1e-4, num_train=60_000,
                       num_candidates=61_500, train_chunk=1000, chunk_size=20_500,
                       sampling_steps=1000, hal_window=[0, 10], classifier_steps=10_000,
                       generations=5, seeds=[0, 1, 2]),
        "shapes": dict(resolution=64, base=64, mults=[1, 2, 2, 2], T=1000, beta_start=1e-4,
                       beta_end=0.02, steps=50_000, batch_size=128, lr=2e-4, num_train=5000,
                       num_candidates=5125, train_chunk=1000, chunk_size=1025,
                       sampling_steps=1000, hal_window=[0, 10], generations=5, seeds=[0, 1, 2]),
    },
}


def _names(text: str, flag: str, allowed=None) -> list:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f"{flag}={text}: must be a non-empty list of distinct names")
    for n in names:
        if allowed is not None and n not in allowed:
            raise InputError(f"{flag}={text}: unknown {n!r} (have {', '.join(allowed)})")
    return names


def dataset_config(cfg: Config, name: str) -> dict:
    """One dataset's resolved config: its preset, then every per-dataset flag that was given."""
    out = dict(DATASET_PRESETS[cfg.preset][name])
    if name == "digits" and cfg.mnist_dir:
        out["resolution"] = MNIST_RESOLUTION[cfg.preset]
    out.update({k: getattr(cfg, k) for k in DATASET_OPTIONS if getattr(cfg, k) is not None})
    out.update({k: getattr(cfg, k) for k in ("preset", "filters", "real_fraction", "accumulate")})
    if cfg.restart_t is not None:  # unset stays out of the saved config (older runs still match)
        out["restart_t"] = cfg.restart_t
    out["dataset"] = name
    return out


def recursion_config(dcfg: dict) -> rec.RecursionConfig:
    return rec.RecursionConfig(dcfg["generations"], dcfg["num_train"], dcfg["num_candidates"],
                               tuple(_names(dcfg["filters"], "filters")),
                               float(dcfg["real_fraction"]), bool(dcfg["accumulate"]),
                               int(dcfg.get("restart_t", rec.RecursionConfig.restart_t)))


def validate(cfg: Config) -> None:
    names = _names(cfg.datasets, "datasets", DATASETS)
    if cfg.pool_from is not None:
        for key in DATASET_OPTIONS + ("restart_t",):
            value = getattr(cfg, key)
            if value is not None:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
                raise InputError(f"{key}={shown}: not used with --pool_from (the pooled runs' "
                                 "own settings are reported)")
        for name in names:
            pool_metrics(_pool_inputs(cfg, name))  # InputError "pool_from=...: why"
        return
    if cfg.grid_size is not None and "gmm2d" not in names:
        raise InputError(f"grid_size={cfg.grid_size}: only the gmm2d dataset has a grid "
                         f"(datasets={cfg.datasets})")
    for name in names:
        d = dataset_config(cfg, name)
        if len(set(d["seeds"])) != len(d["seeds"]):
            raise InputError(f"seeds={','.join(map(str, d['seeds']))}: must be distinct")
        rcfg = recursion_config(d)  # InputError "name=value: why" names the field
        if d["num_candidates"] < rcfg.num_keep:
            raise InputError(f"num_candidates={d['num_candidates']}: must be >= the "
                              f"{rcfg.num_keep} samples each filter keeps ({name})")
        _check_sampler(d, name)
        if cfg.restart_t is not None and "restart" not in rcfg.filters:
            raise InputError(f"restart_t={cfg.restart_t}: only the restart filter uses it "
                             f"(filters={d['filters']})")
        rec.check_restart(rcfg, d["T"], d["hal_window"], _sampling_timesteps(d) is not None)
        if name == "shapes" and 64 % d["resolution"]:
            raise InputError(f"resolution={d['resolution']}: must divide 64 (shapes)")
        if name == "digits":
            if d.get("mnist_dir"):
                from mi_jax.data import digits as dg

                dg.load_mnist(d["mnist_dir"], 28, limit=1)  # InputError "mnist_dir=...: why"
                if 28 % d["resolution"]:
                    raise InputError(f"resolution={d['resolution']}: must divide 28 for MNIST")
            elif 64 % d["resolution"]:
                raise InputError(f"resolution={d['resolution']}: must divide 64 (digits)")
            if d.get("mnist_dir") is None and d["num_train"] > 100_000:
                raise InputError(f"num_train={d['num_train']}: at most 100000 rendered digits")


# ----------------------------------------------------------------------------------------
# Datasets as recursion problems
# ----------------------------------------------------------------------------------------


def _sampling_timesteps(d: dict):
    """Training timesteps the sampler visits (None: all T)."""
    return sched.plan_timesteps(d["T"], d["sampling_steps"], d.get("dense_steps") or 0)


def _check_sampler(d: dict, name: str) -> None:
    clock, dense, (lo, hi) = d.get("hal_clock", "index"), d.get("dense_steps", 0), d["hal_window"]
    if dense and dense + d["sampling_steps"] > d["T"]:
        raise InputError(f"dense_steps={dense}: with sampling_steps={d['sampling_steps']} must "
                         f"be at most T={d['T']} steps ({name})")
    if clock == "index":
        check_training_and_sampling(d["batch_size"], d["num_train"], d["sampling_steps"] + dense, d["T"],
                                    d["hal_window"], name)
        return
    check_training_and_sampling(d["batch_size"], d["num_train"], d["sampling_steps"], d["T"],
                                (0, 1), name)
    visited = _sampling_timesteps(d)
    visited = np.arange(d["T"]) if visited is None else visited
    if hi > d["T"] or not np.any((visited >= lo) & (visited < hi)):
        raise InputError(f"hal_window={lo},{hi}: must hold a training timestep the sampler "
                         f"visits, inside [0, T={d['T']}) ({name})")


def _schedules(d: dict):
    train_sched = sched.linear_schedule(d["T"], d["beta_start"], d["beta_end"])
    if _sampling_timesteps(d) is None:
        return train_sched, None, None
    s, ts = sched.sampling_plan(train_sched, d["sampling_steps"], d.get("dense_steps") or 0)
    return train_sched, s, ts


def _training(d: dict, network, unroll=False, vectorise=True, checkpoint_every_s=0.0
              ) -> rec.Training:
    train_sched, samp_sched, ts = _schedules(d)
    schedule = d.get("lr_schedule", "cosine")
    train_cfg = tr.TrainConfig(d["batch_size"], d["lr"], schedule,
                               d["steps"] if schedule == "cosine" else 0,
                               batch_order=d.get("batch_order", "random"),
                               focus_steps=d.get("focus_steps") or 0,
                               focus_prob=0.5 if d.get("focus_prob") is None else d["focus_prob"],
                               between_weight=d.get("between_weight") or 0.0)
    return rec.Training(network, train_sched, train_cfg,
                        d["steps"], d["train_chunk"], unroll, samp_sched, ts,
                        tuple(d["hal_window"]), d.get("hal_clock", "index"), d["chunk_size"],
                        vectorise, checkpoint_every_s=checkpoint_every_s)


def gmm2d_problem(d: dict):
    from mi_jax.evaluation.mixture import mixture_quality

    mixture = mx.grid_2d("square", size=d["grid_size"])
    reference = np.asarray(mixture.sample(jax.random.key(PHASE_REFERENCE), d["num_candidates"]))

    in_order = d.get("batch_order") == "in_order"

    def real(seed):  # each seed its own training set, as in the mixture sweeps
        key = jax.random.fold_in(jax.random.key(seed), 0)
        return np.asarray(mx.sample_stratified(mixture, key, d["num_train"],
                                               round_robin=in_order))

    problem = rec.Problem("gmm2d", (2,), real,
                          lambda x: mixture_quality(x, mixture, reference, d["k"]))
    info = {"mixture": mixture, "source": f"{d['grid_size']}x{d['grid_size']} square grid of "
                                          f"Gaussians, k = {d['k']:g}"}
    network = make_mlp(2, d["width"], 3, True, d["T"], input_bias=bool(d.get("input_bias")))
    return problem, _training(d, network), info


def digits_problem(d: dict, log=print):
    from mi_jax.data import digits as dg
    from mi_jax.evaluation.classifier import fit_judge

    size = d["resolution"]
    if d.get("mnist_dir"):
        data = dg.load_mnist(d["mnist_dir"], size)
        train, clf_x, clf_y = data.images[:d["num_train"]], data.images[10_000:], data.labels[10_000:]
        test_x, test_y = data.images[:10_000], data.labels[:10_000]
        reference, source = data.images[:10_000], data.source
    else:
        data = dg.render(0, d["num_train"], size)
        clf = dg.render(1, 20_000, size)
        test = dg.render(2, 5000, size)
        train, clf_x, clf_y, test_x, test_y = data.images, clf.images, clf.labels, test.images, test.labels
        reference, source = test.images, data.source + " -- NOT MNIST"
    t0 = time.perf_counter()
    judge = fit_judge(clf_x, clf_y, test_x, test_y, jax.random.key(PHASE_REFERENCE),
                      steps=d["classifier_steps"], reference=reference)
    floor = judge.evaluate(train[:5000])["frechet"]
    log(f"digits: {source}; feature classifier test accuracy {100 * judge.test_accuracy:.1f}% "
        f"({time.perf_counter() - t0:.0f}s); Frechet distance of the training digits to the "
        f"reference {floor:.2f}")
    dim = size * size
    neighbours = train[:NEAREST_REFERENCE].reshape(-1, dim)

    def evaluate(x):
        out = judge.evaluate(x.reshape(len(x), size, size))
        # Distance to the closest training digit: large for novel images (rare or invented).
        out["nearest_train"] = nearest_distance(x.reshape(len(x), dim), neighbours)
        return out

    problem = rec.Problem("digits", (dim,), lambda seed: train.reshape(len(train), dim), evaluate)
    info = {"source": source, "classifier_accuracy": judge.test_accuracy, "frechet_real": floor,
            "feature_space": "penultimate layer (64 units) of an MLP classifier trained on the "
                             "real digits; not Inception FID"}
    return problem, _training(d, make_mlp(dim, d["width"], 3, False, d["T"])), info


NEAREST_REFERENCE = 5000  # training digits searched for each sample's nearest neighbour


def nearest_distance(x: np.ndarray, reference: np.ndarray) -> float:
    """Median over the finite rows of x of the Euclidean distance to the closest reference row."""
    x = np.asarray(x, np.float64)
    x = x[np.all(np.isfinite(x), axis=1)]
    if not len(x):
        return float("nan")
    ref = np.asarray(reference, np.float64)
    best = np.concatenate([
        (np.sum(c * c, 1)[:, None] - 2 * c @ ref.T + np.sum(ref * ref, 1)[None]).min(1)
        for c in np.array_split(x, max(1, len(x) // 2048))])
    return float(np.median(np.sqrt(np.maximum(best, 0.0))))


def shapes_problem(d: dict):
    from mi_jax.data import shape_counter as sc
    from mi_jax.data import shapes as sh

    res = d["resolution"]
    images = sh.generate(0, d["num_train"], res).images[..., None]

    def evaluate(x):
        rates = sc.count_shapes(x[..., 0], res).rates()
        return {"hallucination_rate": rates["hallucination_rate"],
                **{c: v for c, v in rates["category_primary"].items()}}

    network = make_unet(1, d["base"], tuple(d["mults"]))
    on_cpu = jax.default_backend() == "cpu"
    # XLA:CPU: conv weight gradients are ~30x slower inside a loop body and vmapped UNets ~3.5x
    # per model (BUILD_NOTES.md), so on CPU models train unrolled, one after another, one step
    # per call (compiles in half the time of five) with a checkpoint every 30 s.
    training = _training(d, network, unroll=on_cpu, vectorise=not on_cpu,
                         checkpoint_every_s=30.0 if on_cpu else 0.0)
    info = {"source": f"SIMPLE SHAPES {res}x{res}, {d['num_train']} training images"}
    return rec.Problem("shapes", (res, res, 1), lambda seed: images, evaluate), training, info


PROBLEMS = {"gmm2d": gmm2d_problem, "digits": digits_problem, "shapes": shapes_problem}

# The per-generation curve each dataset's Fig. 8 panel shows.
HEADLINE_METRIC = {"gmm2d": "hallucination_rate", "shapes": "hallucination_rate",
                   "digits": "frechet"}


# ----------------------------------------------------------------------------------------
# Running and reporting
# ----------------------------------------------------------------------------------------


def run_dataset(name: str, d: dict, workdir: Path, log=print) -> dict:
    builder = PROBLEMS[name]
    problem, training, info = builder(d, log) if name == "digits" else builder(d)
    rcfg = recursion_config(d)
    result = rec.run_recursion(problem, training, rcfg, d["seeds"], workdir=workdir, log=log)
    metric = HEADLINE_METRIC[name]
    curves = {}
    scalar_names = [k for k, v in result.metrics[0]["generated"].items()
                    if np.ndim(v[0]) == 0]
    for which in ("generated", "kept", "removed"):
        if which not in result.metrics[0]:
            continue
        curves[which] = {}
        for key in scalar_names:
            c = result.curve(key, which)  # (G, F, R)
            curves[which][key] = {f: {"mean": c[:, i].mean(-1).tolist(),
                                      "std": sweeps.seed_std(c[:, i]).tolist(),
                                      "per_seed": c[:, i].tolist()}
                                  for i, f in enumerate(result.filters)}
    metrics = {"experiment": "recursive", "dataset": name, "filters": list(result.filters),
               "seeds": list(result.seeds), "generations": rcfg.generations,
               "num_train": rcfg.num_train, "num_candidates": rcfg.num_candidates,
               "num_keep": rcfg.num_keep, "headline_metric": metric, "curves": curves,
               "per_generation": result.metrics,
               "info": {k: v for k, v in info.items() if k != "mixture"},
               "seconds": result.seconds, "provenance": wd.provenance()}
    last = {f: curves["generated"][metric][f]["mean"][-1] for f in result.filters}
    metrics["headline"] = {"metric": metric, "first_generation": curves["generated"][metric][
        result.filters[0]]["mean"][0], "last_generation": last}
    _dataset_figures(name, workdir, metrics, info, d)
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    return metrics


TABLE_METRICS = {"gmm2d": ("hallucination_rate", "bridge_rate", "blur_rate", "modes_covered",
                           "hist_kl"),
                 "shapes": ("hallucination_rate",), "digits": ("frechet",)}
# The pooled table also splits SIMPLE SHAPES' rate by category (the recursion table's per-model
# columns do not fit three seeds per cell).
POOLED_EXTRA = {"shapes": ("duplicate", "empty", "malformed")}


def min_mode_share(mode_mass, true_weights) -> np.ndarray:
    """Per model, the smallest per-mode in-support mass relative to the mode's true weight:
    mode_mass (models, modes), true_weights (modes,) -> (models,); 1 = every mode at its
    weight, 0 = a mode lost."""
    mass = np.asarray(mode_mass, np.float64)
    return np.min(mass / np.asarray(true_weights, np.float64), axis=-1)


def mass_curves_figure(path: Path, metrics: dict, true_weights) -> None:
    """gmm2d: bridge rate (generated candidates and the kept training set) and the smallest
    mode share of the generated candidates per generation, one line per filter (mean +- std
    over seeds): the two quantities of a bridge-and-mass target."""
    r, gens = len(metrics["seeds"]), metrics["per_generation"]
    panels = [("bridge_rate", "generated", "bridge % (generated candidates)"),
              ("bridge_rate", "kept", "bridge % (kept: next training set)"),
              ("min_mode_share", "generated", "smallest mode share (generated)")]
    fig, axes = plots.figure(ncols=len(panels), width=3.8, height=3.0)
    for ax, (name, which, title) in zip(axes[0], panels):
        for i, f in enumerate(metrics["filters"]):
            per_gen = [min_mode_share(g[which]["mode_mass"], true_weights)[i * r:(i + 1) * r]
                       if name == "min_mode_share" else
                       100.0 * np.asarray(g[which][name][i * r:(i + 1) * r], np.float64)
                       for g in gens]
            mean = np.asarray([v.mean() for v in per_gen])
            std = np.nan_to_num(np.asarray([sweeps.seed_std(v) for v in per_gen]))
            x = [g["generation"] for g in gens]
            ax.plot(x, mean, marker="o", label=f)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        if which == "generated":  # the reference lines of a bridge-and-mass target
            first = np.asarray(gens[0]["generated"]["bridge_rate"][:r], np.float64).mean()
            level, text = ((0.5, "half the true mass") if name == "min_mode_share" else
                           (150.0 * first, "1.5x generation 0"))
            ax.axhline(level, color="grey", ls="--", lw=0.8, label=text)
        ax.set_xlabel("generation")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    wd.save_figure(fig, path)


def recursion_table(metrics: dict, true_weights=None) -> str:
    """Markdown, one row per generation and filter: the generated and the kept candidates'
    metrics (TABLE_METRICS; rates in %), mean +- std over seeds. With `true_weights` (the valid
    modes' weights), also each model's smallest per-mode in-support mass relative to its mode's
    true weight ('min mode share'; 1 for the data, 0 once a mode is lost)."""
    filters, r = metrics["filters"], len(metrics["seeds"])
    names = [n for n in TABLE_METRICS[metrics["dataset"]]
             if n in metrics["per_generation"][0]["generated"]]
    if true_weights is not None:
        names.append("min_mode_share")
    cols = [(w, n) for w in ("generated", "kept") for n in names]

    def cell(gen: dict, which: str, name: str, f: int) -> str:
        if name == "min_mode_share":
            vals = min_mode_share(gen[which]["mode_mass"][f * r:(f + 1) * r], true_weights)
        else:
            vals = np.asarray(gen[which][name][f * r:(f + 1) * r], np.float64)
        scale = 100.0 if name.endswith("_rate") else 1.0
        mean, std = scale * float(np.mean(vals)), scale * float(sweeps.seed_std(vals))
        return f"{mean:.2f}" + ("" if np.isnan(std) else f" +- {std:.2f}")

    label = lambda n: n.replace("_rate", " %").replace("_", " ")  # noqa: E731
    head = ["gen", "filter"] + [f"{w}: {label(n)}" for w, n in cols]
    lines = [f"# {metrics['dataset']}: recursive retraining ({r} seed(s), mean +- std; 'kept' "
             "is the next generation's training set)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gen in metrics["per_generation"]:
        for i, f in enumerate(filters):
            lines.append("| " + " | ".join([str(gen["generation"]), f] + [
                cell(gen, w, n, i) for w, n in cols]) + " |")
    return "\n".join(lines) + "\n"


# Settings that change how work is batched, not what is computed (float rounding at most), and
# the two axes a pool adds runs along.
POOL_FREE_KEYS = ("seeds", "filters", "chunk_size", "train_chunk")


def _pool_dirs(text: str) -> list:
    dirs = _names(text, "pool_from")
    if len(dirs) < 2:
        raise InputError(f"pool_from={text}: needs at least two work directories")
    return [Path(d) for d in dirs]


def _pool_inputs(cfg: Config, name: str) -> list:
    """(label, dataset config, dataset metrics) of every finished run named by --pool_from."""
    runs = []
    for d in _pool_dirs(cfg.pool_from):
        sub = d / name
        try:
            runs.append((str(d), wd.read_json(sub / wd.CONFIG_FILE),
                         wd.read_json(sub / wd.METRICS_FILE)))
        except (OSError, ValueError):
            raise InputError(f"pool_from={cfg.pool_from}: {d} holds no finished recursive/{name} "
                             f"run ({sub / wd.METRICS_FILE})") from None
    return runs


def pool_metrics(runs: list) -> dict:
    """Pool finished runs of one dataset that differ only in seeds, filters or batching.

    runs: (label, dataset config, dataset metrics) per run. Every (filter, seed) chain must come
    from one run only. Returns the dataset's metrics with curves pooled per filter: per_seed
    (generations, seeds of that filter), their mean and sample std, `filter_seeds` and, per
    chain, the run it came from (`sources`)."""
    label0, cfg0, m0 = runs[0]
    text = ",".join(label for label, _, _ in runs)
    fixed = lambda c: {k: v for k, v in c.items() if k not in POOL_FREE_KEYS}  # noqa: E731
    for label, cfg, m in runs[1:]:
        a, b = fixed(cfg0), fixed(cfg)
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                raise InputError(f"pool_from={text}: the runs differ in {key} ({label0}: "
                                 f"{a.get(key)}, {label}: {b.get(key)})")
    whichs = [w for w in m0["curves"] if all(w in m["curves"] for _, _, m in runs)]
    names = [n for n in m0["curves"]["generated"]
             if all(n in m["curves"][w] for _, _, m in runs for w in whichs)]
    filters, filter_seeds, sources = [], {}, {}
    columns = {}  # (which, name, filter) -> per-generation lists of per-seed values
    for label, _, m in runs:
        for f in m["filters"]:
            if f not in filters:
                filters.append(f)
                filter_seeds[f], sources[f] = [], []
            for j, seed in enumerate(m["seeds"]):
                if seed in filter_seeds[f]:
                    raise InputError(f"pool_from={text}: filter {f} seed {seed} is in "
                                     f"{sources[f][filter_seeds[f].index(seed)]} and {label}")
                filter_seeds[f].append(seed)
                sources[f].append(label)
                for w in whichs:
                    for n in names:
                        per_seed = m["curves"][w][n][f]["per_seed"]
                        col = columns.setdefault((w, n, f), [[] for _ in per_seed])
                        for g, values in enumerate(per_seed):
                            col[g].append(values[j])
    curves = {w: {n: {} for n in names} for w in whichs}
    for (w, n, f), per_seed in columns.items():
        c = np.asarray(per_seed, np.float64)  # (G, seeds of f)
        curves[w][n][f] = {"mean": c.mean(-1).tolist(), "std": sweeps.seed_std(c).tolist(),
                           "per_seed": c.tolist()}
    metric = m0["headline_metric"]
    seeds = sorted({s for f in filters for s in filter_seeds[f]})
    return {"experiment": "recursive", "dataset": m0["dataset"], "filters": filters,
            "seeds": seeds, "filter_seeds": filter_seeds, "sources": sources,
            "generations": m0["generations"], "num_train": m0["num_train"],
            "num_candidates": m0["num_candidates"], "num_keep": m0["num_keep"],
            "headline_metric": metric, "curves": curves, "info": m0["info"],
            "pooled_from": [label for label, _, _ in runs], "provenance": wd.provenance(),
            "headline": {"metric": metric,
                         "first_generation": curves["generated"][metric][filters[0]]["mean"][0],
                         "last_generation": {f: curves["generated"][metric][f]["mean"][-1]
                                             for f in filters}}}


def pooled_table(metrics: dict) -> str:
    """Markdown for pooled curves: per generation and filter, each table metric of the generated
    and the kept candidates as every seed's value and mean +- std (rates in %)."""
    name = metrics["dataset"]
    wanted = TABLE_METRICS[name] + POOLED_EXTRA.get(name, ())
    whichs = [w for w in ("generated", "kept") if w in metrics["curves"]]
    names = [n for n in wanted if n in metrics["curves"]["generated"]]
    percent = lambda n: name == "shapes" or n.endswith("_rate")  # noqa: E731

    def cell(c: dict, g: int, n: str) -> str:
        scale = 100.0 if percent(n) else 1.0
        vals = scale * np.asarray(c["per_seed"][g], np.float64)
        spread = sweeps.seed_std(vals)
        return (" / ".join(f"{v:.1f}" for v in vals) + f" ({vals.mean():.1f}"
                + ("" if np.isnan(spread) else f" +- {spread:.1f}") + ")")

    label = lambda n: n.replace("_rate", "").replace("_", " ") + (" %" if percent(n) else "")  # noqa: E731
    head = ["gen", "filter", "seeds"] + [f"{w}: {label(n)}" for w in whichs for n in names]
    lines = [f"# {name}: recursive retraining pooled from {len(metrics['pooled_from'])} runs "
             "(per seed, in the order of the seeds column; mean +- std)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in range(metrics["generations"]):
        for f in metrics["filters"]:
            seeds = ",".join(map(str, metrics["filter_seeds"][f]))
            lines.append("| " + " | ".join([str(g), f, seeds] + [
                cell(metrics["curves"][w][n][f], g, n) for w in whichs for n in names]) + " |")
    lines += ["", "Runs: " + "; ".join(f"{f}: " + ", ".join(
        f"seed {s} from {src}" for s, src in zip(metrics["filter_seeds"][f],
                                                 metrics["sources"][f]))
        for f in metrics["filters"])]
    return "\n".join(lines) + "\n"


def _true_weights(name: str, d: dict):
    if name != "gmm2d":
        return None
    mixture = mx.grid_2d("square", size=d["grid_size"])
    valid = np.asarray(mixture.mask, bool)
    return np.asarray(mixture.weights, np.float64)[valid]


def curve_panel(ax, metrics: dict, which: str = "generated") -> None:
    name, metric = metrics["dataset"], metrics["headline_metric"]
    scale = 100.0 if metric == "hallucination_rate" else 1.0
    # A pooled run's filters may hold different numbers of seeds.
    counts = {f: len(metrics.get("filter_seeds", {}).get(f, metrics["seeds"]))
              for f in metrics["filters"]}
    for f in metrics["filters"]:
        c = metrics["curves"][which][metric][f]
        gens = np.arange(len(c["mean"]))
        # One seed: std is NaN, and null once read back from metrics.json (a finished run).
        mean = np.asarray(c["mean"], np.float64) * scale
        std = np.nan_to_num(np.asarray(c["std"], np.float64)) * scale
        ax.plot(gens, mean, marker="o", label=f"{f} ({counts[f]} seed{'s' * (counts[f] > 1)})")
        ax.fill_between(gens, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("generation")
    ax.set_xticks(gens)  # generations are whole numbers
    ax.set_ylabel("hallucinated %" if scale == 100.0 else
                  "Frechet distance (classifier features)")
    ax.set_title(f"{name} (mean +- std over seeds)", fontsize=9)
    ax.legend(fontsize=7)


def _dataset_figures(name, workdir, metrics, info, d) -> None:
    gens = metrics["generations"]
    filters = metrics["filters"]
    samples = [np.load(workdir / rec.GENERATION_DIR.format(g) / rec.SAMPLES_FILE)["candidates"]
               for g in range(gens)]
    r = len(metrics["seeds"])
    fig, axes = plots.figure(ncols=gens, nrows=len(filters), width=2.6, height=2.6)
    for i, f in enumerate(filters):
        for g in range(gens):
            x = samples[g][i * r]  # seed 0 of this filter
            ax = axes[i, g]
            if name == "gmm2d":
                mixture = info["mixture"]
                inside = np.asarray(support.in_support(x, mixture, d["k"]))
                plots.scatter_2d(ax, x, mixture, inside, f"{f}, gen {g}", max_points=5000)
            else:
                side = d["resolution"]
                plots.image_grid(ax, x.reshape(-1, side, side)[:36], 6)
                ax.set_title(f"{f}, gen {g}", fontsize=8)
    wd.save_figure(fig, workdir / "generations.png")
    _curves_figure(workdir / "curves.png", metrics)
    if name != "gmm2d" and "variance" in filters:
        _removed_figure(workdir, samples[0], d, filters.index("variance") * r)


def _curves_figure(path: Path, metrics: dict) -> None:
    panels = [("generated", "generated candidates"), ("kept", "kept by the filter (next "
              "training set)"), ("removed", "dropped by the filter")]
    panels = [p for p in panels if p[0] in metrics["curves"]]
    fig, axes = plots.figure(ncols=len(panels))
    for ax, (which, title) in zip(axes[0], panels):
        curve_panel(ax, metrics, which)
        ax.set_title(f"{metrics['dataset']}: {title}", fontsize=9)
    wd.save_figure(fig, path)


def _removed_figure(workdir: Path, candidates: np.ndarray, d: dict, model: int) -> None:
    """Generation 0, the variance filter's first model: the candidates with the highest x0_hat
    variance (what the filter drops first), a random sample, and the lowest."""
    with np.load(workdir / rec.GENERATION_DIR.format(0) / rec.SAMPLES_FILE) as z:
        hal = z["hal"][model]
    x = candidates[model]
    side = d["resolution"]
    order = np.argsort(np.where(np.isfinite(hal), hal, np.inf))
    rng = np.random.default_rng(0)
    groups = [("highest x0_hat variance (dropped first)", order[::-1][:48]),
              ("random candidates", rng.choice(len(x), 48, replace=False)),
              ("lowest x0_hat variance", order[:48])]
    fig, axes = plots.figure(ncols=3, width=3.6, height=3.0)
    for ax, (title, idx) in zip(axes[0], groups):
        plots.image_grid(ax, x[idx].reshape(-1, side, side), 8)
        ax.set_title(f"gen 0: {title}", fontsize=8)
    wd.save_figure(fig, workdir / "removed.png")


def run_pool(cfg: Config, workdir: Path, log=print) -> dict:
    """--pool_from: each dataset's curves pooled over the named runs; nothing is trained."""
    results = {}
    for name in _names(cfg.datasets, "datasets", DATASETS):
        m = pool_metrics(_pool_inputs(cfg, name))
        sub = workdir / name
        sub.mkdir(parents=True, exist_ok=True)
        wd.write_text(sub / "table.md", pooled_table(m))
        _curves_figure(sub / "curves.png", m)
        wd.write_json(sub / wd.METRICS_FILE, m)
        log(f"== recursive/{name}: pooled " + "; ".join(
            f"{f} over {len(m['filter_seeds'][f])} seed(s)" for f in m["filters"]))
        results[name] = m
    return _write_fig8(workdir, results)


def _write_fig8(workdir: Path, results: dict) -> dict:
    fig, axes = plots.figure(ncols=len(results), width=4.2, height=3.6)
    for i, m in enumerate(results.values()):
        curve_panel(axes[0, i], m)
    wd.save_figure(fig, workdir / "fig8_recursive.png")
    metrics = {"experiment": "recursive", "datasets": list(results),
               "headline": {n: m["headline"] for n, m in results.items()},
               "results": {n: {"curves": m["curves"], "info": m["info"]}
                           for n, m in results.items()},
               "provenance": wd.provenance()}
    return STUDY.write_metrics(workdir, metrics)


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    workdir = Path(workdir)
    if cfg.pool_from is not None:
        return run_pool(cfg, workdir, log)
    results = {}
    for name in _names(cfg.datasets, "datasets", DATASETS):
        d = dataset_config(cfg, name)
        sub = workdir / name
        if wd.finished(sub, d):
            log(f"== recursive/{name}: finished result found in {sub}, not re-run")
            results[name] = wd.read_json(sub / wd.METRICS_FILE)
            continue
        log(f"== recursive/{name} -> {sub}")
        # The top-level workdir already refused a different config unless --overwrite was given.
        sub = wd.prepare(sub, d, overwrite=True)
        results[name] = run_dataset(name, d, sub, log)
    for name, m in results.items():  # also for finished runs: the table is cheap
        weights = _true_weights(name, dataset_config(cfg, name))
        wd.write_text(workdir / name / "table.md", recursion_table(m, weights))
        if weights is not None:
            mass_curves_figure(workdir / name / "mass_curves.png", m, weights)
    return _write_fig8(workdir, results)


# ------------------------------------------------------------------------------------------
# Outputs: the summary section and the ledger claims (see mi_jax.studies.registry)
# ------------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list:
    pm = report.pm
    lines = ["## Recursive retraining on own samples (paper Fig. 8)", "",
             "Each generation trains fresh models only on the previous generation's kept samples "
             "(no filter / random subset / lowest trajectory variance); mean +- std over seeds of "
             "the generated candidates.", ""]
    for name, res in metrics["results"].items():
        metric = metrics["headline"][name]["metric"]
        curves = res["curves"]["generated"][metric]
        filters = list(curves)
        fmt = report.pct if metric == "hallucination_rate" else (lambda v: f"{v:.2f}")
        label = "hallucinated" if metric == "hallucination_rate" else "Frechet distance"
        lines += [f"**{name}** ({label}; {res['info'].get('source', '')})", "",
                  "| generation | " + " | ".join(filters) + " |",
                  "|---|" + "---|" * len(filters)]
        for g in range(len(curves[filters[0]]["mean"])):
            lines.append(f"| {g} | " + " | ".join(
                pm(curves[f]['mean'][g], curves[f]['std'][g], fmt) for f in filters) + " |")
        lines += ["", f"![generations](recursive/{name}/generations.png)", ""]
    lines += ["![Fig. 8](recursive/fig8_recursive.png)", ""]
    return lines


def _filters_compared(dataset, metric):
    """Random minus variance filter at the last generation, per seed, on `dataset`'s `metric`
    of the generated candidates."""
    def extract(results):
        res = ledger.read(results, "recursive", "results", dataset)
        if not res:
            return None
        curves = res["curves"]["generated"][metric]
        if "random" not in curves or "variance" not in curves:
            return None
        d = results["recursive"].get("datasets", {}).get(dataset, {})
        n = float(d.get("num_candidates") or 0) if metric == "hallucination_rate" else 0
        rnd = ledger.snap(curves["random"]["per_seed"][-1], n)
        var = ledger.snap(curves["variance"]["per_seed"][-1], n)
        gens = len(curves["random"]["mean"])
        fmt = ledger.pct if metric == "hallucination_rate" else (lambda v: f"{v:.2f}")
        cfg = ledger.config_of(results, "recursive")
        what = res.get("info", {}).get("source", dataset)
        if d:
            what += (f"; T={d.get('T')}, {d.get('steps')} steps x batch {d.get('batch_size')}, "
                     f"keep {d.get('num_train')} of {d.get('num_candidates')} candidates, "
                     f"{d.get('sampling_steps')} sampling steps")
        counting = None
        if metric == "hallucination_rate":
            counting = intervals.difference(ledger.rate_interval(rnd, n),
                                            ledger.rate_interval(var, n))
        return ledger.Measurement(list(rnd - var),
                                  f"recursive preset {cfg.get('preset')}: {what}; {gens} "
                                  f"generations, seeds {d.get('seeds', cfg.get('seeds'))}",
                                  f"last generation: random {fmt(float(rnd.mean()))}, variance "
                                  f"filter {fmt(float(var.mean()))} ({metric})", counting=counting)
    return extract


STUDY = Study(
    "recursive",
    Schema(metrics=("datasets", "results")),
    summary=summary_lines,
    claims=(
        ledger.Claim("recursive_2d", "Variance filtering slows collapse under recursive "
                     "retraining, 2D grid (Fig. 8).", "hallucination rate, random minus variance "
                     "filter, last generation", 0.0, 0.0, True,
                     _filters_compared("gmm2d", "hallucination_rate")),
        ledger.Claim("recursive_shapes", "The same on SIMPLE SHAPES (Fig. 8).",
                     "hallucination rate, random minus variance filter, last generation", 0.0,
                     0.0, True, _filters_compared("shapes", "hallucination_rate")),
        ledger.Claim("recursive_digits", "Filtering slows collapse on MNIST (Fig. 8; here "
                     "rendered digits, Frechet distance in a small classifier's features).",
                     "Frechet distance, random minus variance filter, last generation", 0.0, 0.0,
                     True, _filters_compared("digits", "frechet"), percent=False),
    ),
)
