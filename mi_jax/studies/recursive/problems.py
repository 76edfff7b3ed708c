"""The recursion's datasets as problems: each builder takes a dataset's typed config and a log
function and returns (`recursive.Problem`, `recursive.Training`, info) for
`mi_jax.recursive.run_recursion`."""

from __future__ import annotations

import time

import jax
import numpy as np

from mi_jax import recursive as rec
from mi_jax.data import mixtures as mx
from mi_jax.diffusion import schedule as sched
from mi_jax.nets import make_mlp, make_unet
from mi_jax.studies.recursive.config import (DatasetConfig, DigitsConfig, Gmm2dConfig,
                                             ShapesConfig, sampling_timesteps)
from mi_jax.training import train as tr

PHASE_REFERENCE = 7  # key phase of the 2D reference sample and of the digits classifier


def _schedules(d: DatasetConfig):
    train_sched = sched.linear_schedule(d.T, d.beta_start, d.beta_end)
    if sampling_timesteps(d) is None:
        return train_sched, None, None
    s, ts = sched.sampling_plan(train_sched, d.sampling_steps, d.dense_steps or 0)
    return train_sched, s, ts


def training(d: DatasetConfig, network, unroll=False, vectorise=True, checkpoint_every_s=0.0
             ) -> rec.Training:
    """How every generation of dataset `d` trains `network` and samples it."""
    train_sched, samp_sched, ts = _schedules(d)
    schedule = d.lr_schedule or "cosine"
    train_cfg = tr.TrainConfig(d.batch_size, d.lr, schedule,
                               d.steps if schedule == "cosine" else 0,
                               batch_order=d.batch_order or "random",
                               focus_steps=d.focus_steps or 0,
                               focus_prob=0.5 if d.focus_prob is None else d.focus_prob,
                               between_weight=d.between_weight or 0.0)
    return rec.Training(network, train_sched, train_cfg,
                        d.steps, d.train_chunk, unroll, samp_sched, ts,
                        tuple(d.hal_window), d.hal_clock or "index", d.chunk_size,
                        vectorise, checkpoint_every_s=checkpoint_every_s)


def gmm2d_problem(d: Gmm2dConfig, log=print):
    from mi_jax.evaluation.mixture import mixture_quality

    mixture = mx.grid_2d("square", size=d.grid_size)
    reference = np.asarray(mixture.sample(jax.random.key(PHASE_REFERENCE), d.num_candidates))

    in_order = d.batch_order == "in_order"

    def real(seed):  # each seed its own training set, as in the mixture sweeps
        key = jax.random.fold_in(jax.random.key(seed), 0)
        return np.asarray(mx.sample_stratified(mixture, key, d.num_train,
                                               round_robin=in_order))

    problem = rec.Problem("gmm2d", (2,), real,
                          lambda x: mixture_quality(x, mixture, reference, d.k))
    info = {"mixture": mixture, "source": f"{d.grid_size}x{d.grid_size} square grid of "
                                          f"Gaussians, k = {d.k:g}"}
    network = make_mlp(2, d.width, 3, True, d.T, input_bias=bool(d.input_bias))
    return problem, training(d, network), info


def digits_problem(d: DigitsConfig, log=print):
    from mi_jax.data import digits as dg
    from mi_jax.evaluation.classifier import fit_judge

    size = d.resolution
    if d.mnist_dir:
        data = dg.load_mnist(d.mnist_dir, size)
        train, clf_x, clf_y = data.images[:d.num_train], data.images[10_000:], data.labels[10_000:]
        test_x, test_y = data.images[:10_000], data.labels[:10_000]
        reference, source = data.images[:10_000], data.source
    else:
        data = dg.render(0, d.num_train, size)
        clf = dg.render(1, 20_000, size)
        test = dg.render(2, 5000, size)
        train, clf_x, clf_y, test_x, test_y = data.images, clf.images, clf.labels, test.images, test.labels
        reference, source = test.images, data.source + " -- NOT MNIST"
    t0 = time.perf_counter()
    judge = fit_judge(clf_x, clf_y, test_x, test_y, jax.random.key(PHASE_REFERENCE),
                      steps=d.classifier_steps, reference=reference)
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
    return problem, training(d, make_mlp(dim, d.width, 3, False, d.T)), info


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


def shapes_problem(d: ShapesConfig, log=print):
    from mi_jax.data import shape_counter as sc
    from mi_jax.data import shapes as sh

    res = d.resolution
    images = sh.generate(0, d.num_train, res).images[..., None]

    def evaluate(x):
        rates = sc.count_shapes(x[..., 0], res).rates()
        return {"hallucination_rate": rates["hallucination_rate"],
                **{c: v for c, v in rates["category_primary"].items()}}

    network = make_unet(1, d.base, tuple(d.mults))
    on_cpu = jax.default_backend() == "cpu"
    # XLA:CPU: conv weight gradients are ~30x slower inside a loop body and vmapped UNets ~3.5x
    # per model (BUILD_NOTES.md), so on CPU models train unrolled, one after another, one step
    # per call (compiles in half the time of five) with a checkpoint every 30 s.
    shapes_training = training(d, network, unroll=on_cpu, vectorise=not on_cpu,
                               checkpoint_every_s=30.0 if on_cpu else 0.0)
    info = {"source": f"SIMPLE SHAPES {res}x{res}, {d.num_train} training images"}
    return (rec.Problem("shapes", (res, res, 1), lambda seed: images, evaluate), shapes_training,
            info)


# Each builder: (typed dataset config, log) -> (Problem, Training, info).
PROBLEMS = {"gmm2d": gmm2d_problem, "digits": digits_problem, "shapes": shapes_problem}
