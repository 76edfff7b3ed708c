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
from mi_jax.studies.recursive.config import (MNIST_HELD_OUT, NOT_MNIST, DatasetConfig,
                                             DigitsConfig, Gmm2dConfig, ShapesConfig,
                                             sampling_timesteps)
from mi_jax.training import train as tr

PHASE_REFERENCE = 7  # key phase of the 2D reference sample and of the digits classifier


def _schedules(d: DatasetConfig):
    train_sched = sched.linear_schedule(d.T, d.beta_start, d.beta_end)
    if sampling_timesteps(d) is None:
        return train_sched, None, None
    s, ts = sched.sampling_plan(train_sched, d.sampling_steps, d.dense_steps)
    return train_sched, s, ts


def training(d: DatasetConfig, network, unroll=False, vectorise=True, checkpoint_every_s=0.0
             ) -> rec.Training:
    """How every generation of dataset `d` trains `network` and samples it."""
    train_sched, samp_sched, ts = _schedules(d)
    train_cfg = tr.TrainConfig(d.batch_size, d.lr, d.lr_schedule,
                               d.steps if d.lr_schedule == "cosine" else 0,
                               batch_order=d.batch_order, focus_steps=d.focus_steps,
                               focus_prob=d.focus_prob, between_weight=d.between_weight)
    return rec.Training(network, train_sched, train_cfg,
                        d.steps, d.train_chunk, unroll, samp_sched, ts,
                        tuple(d.hal_window), d.hal_clock, d.chunk_size,
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


def real_digits(d: DigitsConfig) -> tuple:
    """(train images, train labels, held-out images, held-out labels, source) of dataset `d`.
    Real MNIST is shuffled once (a fixed permutation), its first num_train digits train
    generation 0 and the rest (up to 10 000) are held out; rendered digits draw both."""
    from mi_jax.data import digits as dg
    from mi_jax.validation import check

    size = d.resolution
    if d.digits_source == "rendered":
        train, held = dg.render(0, d.num_train, size), dg.render(2, 5000, size)
        return (train.images, train.labels, held.images, held.labels,
                f"{train.source} -- {NOT_MNIST}")
    data = dg.load_mnist(d.mnist_dir, size) if d.mnist_dir else dg.load_packaged_mnist(size)
    order = np.random.default_rng(PHASE_REFERENCE).permutation(len(data.labels))
    check(len(order) - d.num_train >= MNIST_HELD_OUT, "num_train", d.num_train,
          f"must leave >= {MNIST_HELD_OUT} of the {len(order)} digits of {data.source} held out")
    train, held = order[:d.num_train], order[d.num_train:][:10_000]
    return (data.images[train], data.labels[train], data.images[held], data.labels[held],
            data.source)


def digits_problem(d: DigitsConfig, log=print):
    from mi_jax.evaluation.classifier import fit_judge

    size = d.resolution
    train, train_labels, held, held_labels, source = real_digits(d)
    t0 = time.perf_counter()
    # The judge: a classifier fitted to the training digits' labels, tested on the held-out
    # ones, whose features' Gaussian (of the held-out digits) is the Frechet reference.
    judge = fit_judge(train, train_labels, held, held_labels, jax.random.key(PHASE_REFERENCE),
                      steps=d.classifier_steps)
    floor = judge.evaluate(train[:5000])["frechet"]
    log(f"digits: {source}; feature classifier test accuracy {100 * judge.test_accuracy:.1f}% "
        f"({time.perf_counter() - t0:.0f}s); Frechet distance of the training digits to the "
        f"held-out ones {floor:.2f}")
    neighbours = train[:NEAREST_REFERENCE].reshape(-1, size * size)

    def evaluate(x):
        out = judge.evaluate(x.reshape(len(x), size, size))
        # Distance to the closest training digit: large for novel images (rare or invented).
        out["nearest_train"] = nearest_distance(x.reshape(len(x), size * size), neighbours)
        return out

    images = train[..., None]
    problem = rec.Problem("digits", (size, size, 1), lambda seed: images, evaluate)
    info = {"source": source, "classifier_accuracy": judge.test_accuracy, "frechet_real": floor,
            "label_hist_real": np.bincount(train_labels, minlength=10).tolist(),
            "feature_space": "penultimate layer (64 units) of an MLP classifier trained on the "
                             "real digits; not Inception FID"}
    return problem, unet_training(d), info


def unet_training(d) -> rec.Training:
    """A UNet (d.base, d.mults) for one image dataset. XLA:CPU: conv weight gradients are ~30x
    slower inside a loop body and vmapped UNets ~3.5x per model (BUILD_NOTES.md), so on CPU
    models train unrolled, one after another, one step per call (compiles in half the time of
    five) with a checkpoint every 30 s."""
    on_cpu = jax.default_backend() == "cpu"
    return training(d, make_unet(1, d.base, tuple(d.mults)), unroll=on_cpu,
                    vectorise=not on_cpu, checkpoint_every_s=30.0 if on_cpu else 0.0)


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

    shapes_training = unet_training(d)
    info = {"source": f"SIMPLE SHAPES {res}x{res}, {d.num_train} training images"}
    return (rec.Problem("shapes", (res, res, 1), lambda seed: images, evaluate), shapes_training,
            info)


# Each builder: (typed dataset config, log) -> (Problem, Training, info).
PROBLEMS = {"gmm2d": gmm2d_problem, "digits": digits_problem, "shapes": shapes_problem}
