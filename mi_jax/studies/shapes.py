r"""SIMPLE SHAPES: an image DDPM (small UNet) hallucinates shape combinations it never saw
(paper Figs. 1, 5, 7 and the appendix bottleneck embedding).

Trains one UNet per seed (all seeds in one jitted call per chunk) on the generated dataset,
samples with the streaming sampler (trajectory variance of x0_hat over the whole image and per
column), counts shapes, and reports the hallucination rate by category, the detection operating
point for whole-image and per-column variance, and the bottleneck embedding. With --images_dir the
same training and sampling run on your PNGs (no shape counter, so no hallucination labels).
Resumes after interruption (training checkpoints, finished sampler chunks).

Command line: `python -m experiments.shapes` (every flag and preset: `--help`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import config, ledger
from mi_jax import checkpoint, plots, report, sweeps
from mi_jax import workdir as wd
from mi_jax.data import images as imgs
from mi_jax.data import shape_counter as sc
from mi_jax.data import shapes as sh
from mi_jax.detection import metrics as dm
from mi_jax.diffusion import schedule as sched
from mi_jax.nets import make_unet
from mi_jax.sampling.observers import paper_observers
from mi_jax.sampling.sampler import print_progress
from mi_jax.studies.registry import Schema, Study
from mi_jax.training import train as tr
from mi_jax.validation import InputError, check_training_and_sampling

PHASE_INIT, PHASE_SAMPLE, PHASE_FEATURES = 1, 2, 3
_COMMON = ("preset", "seeds", "steps", "batch_size", "lr", "lr_schedule", "num_samples",
           "chunk_size", "hal_window", "T", "beta_start", "beta_end", "train_chunk",
           "compute_dtype")
OPTIONS = tuple(o for o in config.COMMON if o.name in _COMMON) + (
    config.Option("resolution", "int", "Image side in pixels (64 = the official images; a divisor "
                  "of 64 average-pools them).", low=8, high=64),
    config.Option("num_train", "int", "Training images (5000 as the official generator).", low=1),
    config.Option("data_seed", "int", "Seed of the dataset generator.", low=0, high=2**31 - 1),
    config.Option("base", "int", "UNet base channels.", low=4),
    config.Option("mults", "ints", "UNet channel multiplier per resolution level.", low=1),
    config.Option("attention", "bool", "Self-attention in the UNet bottleneck."),
    config.Option("sampling_steps", "int", "Reverse steps (strided ancestral sampling if < T).",
                  low=2),
    config.Option("ema_decay", "float", "Sample with an exponential moving average of the UNet "
                  "weights at this decay (0: the raw weights, as before).", low=0,
                  high=0.9999, default=0.0),
    config.Option("lr_warmup", "int", "Linear learning-rate warm-up over this many steps before "
                  "the schedule (0: none).", low=0, default=0),
    config.Option("snapshot_steps", "ints", "Also save the training state at these steps (in "
                  "snapshots/; experiments.shapes_detection --snapshots evaluates each): a "
                  "training-compute curve from one run. Unset: none.", low=1, default=None),
    config.Option("images_dir", "str", "Train on the PNGs of this folder instead of SIMPLE SHAPES.",
                  default=None),
    config.Option("grid", "int", "Side of the sample grid figure.", low=2, high=32),
)
Config = config.config_class("ShapesConfig", OPTIONS)

_BASE = dict(T=1000, beta_start=1e-4, beta_end=0.02, num_train=5000, data_seed=0, hal_window=[0, 10],
             grid=10)
PRESETS = {
    # CPU-sized: 32x32 (the 64x64 images average-pooled), a 0.26M-parameter UNet, 100 strided
    # sampling steps of the T = 1000 training schedule.
    "quick": dict(_BASE, resolution=32, base=16, mults=[1, 2, 2], attention=False, seeds=[0],
                  steps=2000, batch_size=32, lr=1e-3, lr_schedule="cosine", train_chunk=1,
                  sampling_steps=100, num_samples=800, chunk_size=200),
    # GPU-sized: the official 64x64 images, a ddpm-torch-like UNet, full 1000-step sampling.
    "paper": dict(_BASE, resolution=64, base=64, mults=[1, 2, 2, 2], attention=True,
                  seeds=[0, 1, 2], steps=100_000, batch_size=128, lr=2e-4,
                  lr_schedule="constant", train_chunk=1000, sampling_steps=1000,
                  num_samples=10_000, chunk_size=1000),
}


def validate(cfg: Config) -> None:
    if sh.FULL_SIZE % cfg.resolution:
        raise InputError(f"resolution={cfg.resolution}: must divide 64")
    levels = len(cfg.mults)
    if cfg.resolution % 2 ** (levels - 1):
        raise InputError(f"mults={','.join(map(str, cfg.mults))}: {levels} levels need "
                         f"resolution divisible by {2 ** (levels - 1)}")
    # --num_train does not apply to --images_dir (minibatches draw with replacement from any size).
    check_training_and_sampling(cfg.batch_size, cfg.batch_size if cfg.images_dir else cfg.num_train,
                                cfg.sampling_steps, cfg.T, cfg.hal_window)
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise InputError(f"seeds={','.join(map(str, cfg.seeds))}: must be distinct")
    for step in cfg.snapshot_steps or ():
        if step >= cfg.steps or step % cfg.train_chunk:
            raise InputError(f"snapshot_steps={step}: must be below steps={cfg.steps} and a "
                             f"multiple of train_chunk={cfg.train_chunk}")
    if cfg.images_dir:
        imgs.load_png_folder(cfg.images_dir, cfg.resolution, limit=1)


def training_images(cfg: Config) -> np.ndarray:
    if cfg.images_dir:
        return imgs.load_png_folder(cfg.images_dir, cfg.resolution)
    return sh.generate(cfg.data_seed, cfg.num_train, cfg.resolution).images[..., None]


def make_network(cfg: Config):
    """The UNet of a shapes config (also of a finished run's saved config)."""
    return make_unet(1, cfg.base, tuple(cfg.mults), 1, cfg.attention,
                     cfg.compute_dtype)


def train_config(cfg: Config) -> tr.TrainConfig:
    return tr.TrainConfig(cfg.batch_size, cfg.lr, cfg.lr_schedule, cfg.steps,
                          ema_decay=cfg.ema_decay, warmup_steps=cfg.lr_warmup)


def train_models(cfg, network, schedule, data, workdir, log=print):
    """One UNet per seed, all in one jitted call per chunk; checkpointed in `workdir`."""
    seeds = cfg.seeds
    m = len(seeds)
    train_cfg = train_config(cfg)
    state = jax.vmap(lambda k: tr.init_state(network, train_cfg, k))(sweeps.seed_keys(seeds, PHASE_INIT))
    stacked = jnp.broadcast_to(jnp.asarray(data), (m,) + data.shape)
    n_valid = jnp.full((m,), len(data), jnp.int32)

    on_cpu = jax.default_backend() == "cpu"

    snapshots = set(cfg.snapshot_steps or ())

    def run(st, on_chunk):
        def after_chunk(s, step, chunk_losses):
            on_chunk(s, step, chunk_losses)
            if step in snapshots:
                checkpoint.save(snapshot_path(workdir, step), s)

        # On CPU the conv weight gradient is ~30x slower inside a loop: straight-line steps.
        return sweeps.train_models(network, schedule, train_cfg, st, stacked, n_valid,
                                   cfg.steps, chunk_steps=cfg.train_chunk,
                                   progress=tr.print_progress(every_s=20), on_chunk=after_chunk,
                                   unroll=on_cpu)

    return tr.train_resumable(run, state, workdir, log, every_s=30.0 if on_cpu else 0.0)


SNAPSHOT_DIR = "snapshots"


def snapshot_path(workdir, step: int) -> Path:
    """Where `--snapshot_steps` keeps the (stacked) TrainState after `step` training steps."""
    return Path(workdir) / SNAPSHOT_DIR / f"step_{step}.msgpack"


def saved_snapshot_steps(workdir) -> list:
    """The steps of the snapshots a run saved (`snapshot_path`), ascending."""
    return sorted(int(f.stem.split("_")[1])
                  for f in (Path(workdir) / SNAPSHOT_DIR).glob("step_*.msgpack"))


def sampling_schedule(cfg, schedule):
    return sched.sampling_plan(schedule, cfg.sampling_steps)


def bottleneck_embedding(network, params, schedule, groups: dict, t: int, key,
                         column: int = 1) -> dict:
    """2D PCA of the UNet bottleneck feature map, cropped to one image column (default: the
    squares), for each group of images (R, R, 1) noised to timestep t of the training `schedule`
    with one fixed draw (as the net sees them there): {name: (n, 2)}. Keeping the map's spatial
    layout (not a spatial mean) keeps where in the column a shape sits."""
    names = [n for n in groups if len(groups[n])]
    x = jnp.asarray(np.concatenate([groups[n] for n in names]))
    noise = jax.random.normal(key, x.shape)
    xt = schedule.sqrt_alphas_bar[t] * x + schedule.sqrt_one_minus_alphas_bar[t] * noise
    feats = np.concatenate([np.asarray(jax.jit(network.features)(params, xt[i:i + 256], jnp.int32(t)))
                            for i in range(0, len(xt), 256)])
    width = feats.shape[2]
    centres = (np.arange(width) + 0.5) * sh.FULL_SIZE / width
    inside = (centres >= sh.COLUMN_WIDTH * column) & (centres < sh.COLUMN_WIDTH * (column + 1))
    feats = feats[:, :, inside].reshape(len(feats), -1)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    _, _, vt = np.linalg.svd(feats, full_matrices=False)
    proj = feats @ vt[:2].T
    out, start = {}, 0
    for n in names:
        out[n] = proj[start:start + len(groups[n])]
        start += len(groups[n])
    return out


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    res, seeds = cfg.resolution, cfg.seeds
    counted = not cfg.images_dir
    data = training_images(cfg)
    # Not in the presets: float32 runs keep the config (and work directories) of earlier versions.
    network = make_network(cfg)
    schedule = sched.linear_schedule(cfg.T, cfg.beta_start, cfg.beta_end)
    log(f"training {len(seeds)} UNet(s) ({network.name}) on {len(data)} images of {res}x{res} for "
        f"{cfg.steps} steps, batch {cfg.batch_size}")
    t0 = time.perf_counter()
    state, losses = train_models(cfg, network, schedule, data, workdir, log)
    train_s = time.perf_counter() - t0
    sample_sched, ts_net = sampling_schedule(cfg, schedule)
    log(f"sampling {cfg.num_samples} images per model, {cfg.sampling_steps} steps, "
        f"trajectory variance over sampling steps [{cfg.hal_window[0]}, {cfg.hal_window[1]})")
    t0 = time.perf_counter()
    observers = paper_observers(cfg.hal_window, regions=sc.column_masks(res), clock="index")
    out = sweeps.sample_models(network, state.eval_params, sample_sched,
                               sweeps.seed_keys(seeds, PHASE_SAMPLE), cfg.num_samples,
                               (res, res, 1), observers=observers, chunk_size=cfg.chunk_size,
                               net_timesteps=ts_net, progress=print_progress("sample"),
                               resume_dir=workdir / "sample_chunks")
    sample_s = time.perf_counter() - t0
    hal = out.hal  # (M, n) whole image
    hal_columns = out.observed["hal"].var_regions[:, 0]  # (M, n, 3)
    metrics = {"experiment": "shapes", "network": network.name,
               "num_params": network.num_params(jax.tree.map(lambda a: a[0], state.params)),
               "final_loss": [float(v) for v in losses[:, -100:].mean(-1)],
               "num_nonfinite": out.num_nonfinite,
               "throughput": {"train_steps_per_s": cfg.steps / max(train_s, 1e-9),
                              "train_images_per_s": cfg.steps * cfg.batch_size * len(seeds)
                              / max(train_s, 1e-9),
                              "sample_images_per_s": cfg.num_samples * len(seeds) / max(sample_s, 1e-9),
                              "train_s": train_s, "sample_s": sample_s,
                              "note": "a resumed run times only what it ran"},
               "provenance": wd.provenance()}
    arrays = dict(samples=out.x[:, :2000].astype(np.float16), hal=hal, hal_columns=hal_columns,
                  losses=losses, seeds=np.asarray(seeds))
    if counted:
        counts = [sc.count_shapes(out.x[m], res) for m in range(len(seeds))]
        per_seed = [c.rates() for c in counts]
        positive = np.stack([~c.in_support for c in counts])
        metrics["counter_accuracy"] = sc.counter_accuracy(res)
        metrics["train_in_support"] = float(sc.count_shapes(data[:2000], res).in_support.mean())
        metrics["rates"] = {"per_seed": per_seed, **_spread(per_seed)}
        metrics["detection"] = {
            "whole_image": _detection(hal, positive),
            "column_max": _detection(hal_columns.max(-1), positive),
            "square_column": _detection(hal_columns[..., 1], positive),
        }
        arrays.update(in_support=~positive, primary=np.stack([c.primary for c in counts]),
                      counts=np.stack([c.counts for c in counts]))
        embedding = _embedding(network, state.eval_params, schedule, data, out.x[0], counts[0], cfg)
        arrays.update({f"embedding_{k}": v for k, v in embedding.items()})
        metrics["embedding_groups"] = {k: len(v) for k, v in embedding.items()}
    else:
        positive = None
        embedding = None
    metrics["headline"] = _headline(metrics, cfg)
    _figures(workdir, cfg, data, out.x, hal, hal_columns, positive,
             arrays.get("primary"), embedding, losses)
    wd.write_npz(workdir / "arrays.npz", **arrays)
    STUDY.write_metrics(workdir, metrics)
    shutil.rmtree(workdir / "sample_chunks", ignore_errors=True)  # all samples are in arrays.npz
    return metrics


def _spread(per_seed: list) -> dict:
    rates = np.asarray([r["hallucination_rate"] for r in per_seed])
    cats = {c: np.asarray([r["category_primary"][c] for r in per_seed]) for c in sc.CATEGORIES}
    return {"hallucination_rate": {"mean": float(rates.mean()), "std": float(sweeps.seed_std(rates))},
            "category_primary": {c: {"mean": float(v.mean()), "std": float(sweeps.seed_std(v))}
                                 for c, v in cats.items()},
            "count_primary_total": {c: int(sum(r["count_primary"][c] for r in per_seed))
                                    for c in sc.CATEGORIES},
            "num_images": int(sum(r["num_images"] for r in per_seed))}


def _detection(scores, positive) -> dict:
    """Per seed where both classes occur, and pooled over seeds."""
    per_seed = [dm.detection_summary(s, p) for s, p in zip(scores, positive) if 0 < p.sum() < p.size]
    pooled = (dm.detection_summary(scores.ravel(), positive.ravel())
              if 0 < positive.sum() < positive.size else None)
    return {"per_seed": per_seed, "pooled": pooled}


def _embedding(network, params, schedule, data, samples, count, cfg) -> dict:
    """Groups for the bottleneck figure: training images with one square in the top or bottom half
    of the square column, and generated images with two squares there (plus hand-made two-square
    images as a reference, since a short run may generate few)."""
    train_count = sc.count_shapes(data[:3000], cfg.resolution)
    comps = sc.components(data[:3000], cfg.resolution)
    in_square = (comps.column == 1) & (comps.area >= 2)
    top = np.zeros(len(train_count.in_support), bool)
    bottom = np.zeros_like(top)
    single = train_count.counts[:, 1, 1] == 1
    mid = cfg.resolution / 2
    for img, cy in zip(comps.image[in_square], comps.cy[in_square]):
        (top if cy < mid else bottom)[img] = True
    dup = count.counts[:, 1, 1] >= 2
    made, _, kinds = sc.labelled_examples(cfg.resolution, per_kind=40)
    groups = {"one_square_top_train": data[:3000][single & top & ~bottom][:300],
              "one_square_bottom_train": data[:3000][single & bottom & ~top][:300],
              "two_squares_generated": samples[dup][:300],
              "two_squares_hand-made": made[kinds == "two_squares"][..., None]}
    first_model = jax.tree.map(lambda a: a[0], params)
    return bottleneck_embedding(network, first_model, schedule, groups, 10,
                                jax.random.key(PHASE_FEATURES))


def _headline(metrics: dict, cfg: Config) -> dict:
    head = {"resolution": cfg.resolution, "seeds": cfg.seeds,
            "sample_images_per_s": metrics["throughput"]["sample_images_per_s"],
            "train_steps_per_s": metrics["throughput"]["train_steps_per_s"]}
    if "rates" in metrics:
        r = metrics["rates"]
        head["hallucination_rate"] = [r["hallucination_rate"]["mean"], r["hallucination_rate"]["std"]]
        head["count_by_category"] = r["count_primary_total"]
        head["num_images"] = r["num_images"]
        head["counter_accuracy"] = metrics["counter_accuracy"]["overall"]
        for name, det in metrics["detection"].items():
            if det["pooled"] is not None:
                head[f"{name}_auroc"] = det["pooled"]["auroc"]
                head[f"{name}_removed_at_96_kept"] = det["pooled"]["removed_at_96_kept"]
    return head


_CATEGORY_COLORS = {0: "red", 1: "orange", 2: "magenta", 3: "cyan"}


def _figures(workdir, cfg, data, x, hal, hal_columns, positive, primary, embedding, losses) -> None:
    import matplotlib.patches as patches

    g = cfg.grid
    res = cfg.resolution
    for name, images, marks in (("training_examples.png", data[: g * g], None),
                                ("fig5_samples.png", x[0, : g * g],
                                 None if primary is None else primary[0, : g * g])):
        fig, axes = plots.figure(ncols=g, nrows=g, width=1.0, height=1.0)
        for i, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if i >= len(images):
                continue
            ax.imshow(np.asarray(images[i], np.float32)[..., 0], cmap="gray", vmin=-1, vmax=1)
            if marks is not None and marks[i] >= 0:
                ax.add_patch(patches.Rectangle((-0.5, -0.5), res - 1, res - 1, fill=False,
                                               edgecolor=_CATEGORY_COLORS[int(marks[i])], lw=3))
        if marks is not None:
            fig.suptitle("generated (seed %d); outlined: " % cfg.seeds[0] + ", ".join(
                f"{c} = {_CATEGORY_COLORS[i]}" for i, c in enumerate(sc.CATEGORIES)), fontsize=8)
        wd.save_figure(fig, workdir / name)
    if positive is not None:
        fig, axes = plots.figure(ncols=2)
        plots.variance_histogram(axes[0, 0], hal.ravel(), positive.ravel(), "whole image")
        plots.variance_histogram(axes[0, 1], hal_columns.max(-1).ravel(), positive.ravel(),
                                 "max over the three columns")
        wd.save_figure(fig, workdir / "fig7_variance.png")
    if embedding:
        fig, axes = plots.figure(width=5.0, height=4.2)
        for (name, pts), color in zip(embedding.items(), ("tab:blue", "tab:green", "tab:red",
                                                          "tab:gray")):
            axes[0, 0].scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.6, color=color,
                               label=f"{name.replace('_', ' ')} ({len(pts)})")
        axes[0, 0].set_title("UNet bottleneck features of the square column (PCA), t = 10",
                             fontsize=9)
        axes[0, 0].legend(fontsize=7)
        wd.save_figure(fig, workdir / "embedding_bottleneck.png")
    fig, axes = plots.figure()
    plots.loss_curves(axes[0, 0], losses, [f"seed {s}" for s in cfg.seeds])
    wd.save_figure(fig, workdir / "losses.png")


# ------------------------------------------------------------------------------------------
# Outputs: the summary section and the ledger claims (see mi_jax.studies.registry)
# ------------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list:
    h, pm, pct = metrics["headline"], report.pm, report.pct
    lines = [f"## SIMPLE SHAPES (paper Figs. 1, 5, 7; {h['resolution']}x{h['resolution']}, "
             f"seeds {h['seeds']})", ""]
    if "hallucination_rate" in h:
        rate = h["hallucination_rate"]
        lines += [f"Hallucinated: {pm(*rate)} of {h['num_images']} images;"
                  " by category: " + ", ".join(f"{c} {n}" for c, n in
                                               h["count_by_category"].items())
                  + f". Counter accuracy on hand-made examples: {pct(h['counter_accuracy'])}.",
                  "", "| variance | AUROC | hallucinations removed at 96% kept |",
                  "|---|---|---|"]
        for name in ("whole_image", "column_max", "square_column"):
            if f"{name}_auroc" in h:
                lines.append(f"| {name} | {h[f'{name}_auroc']:.3f} | "
                             f"{pct(h[f'{name}_removed_at_96_kept'])} |")
    lines += ["", "![samples](shapes/fig5_samples.png)", "",
              "![Fig. 7 (shapes)](shapes/fig7_variance.png)", "",
              "![bottleneck](shapes/embedding_bottleneck.png)", ""]
    return lines


def _shapes_duplicates(results):
    per_seed = ledger.read(results, "shapes", "rates", "per_seed")
    if not per_seed:
        return None
    cfg = ledger.config_of(results, "shapes")
    shares = [r["category_primary"]["duplicate"] for r in per_seed]
    return ledger.Measurement(shares,
                              f"shapes preset {cfg.get('preset')}: {cfg.get('resolution')}px, "
                              f"{cfg.get('steps')} steps, {cfg.get('num_samples')} images/model, "
                              f"seeds {cfg.get('seeds')}",
                              "share of generated images whose main defect is a duplicated shape",
                              counting=ledger.rate_interval(
                                  shares, ledger.num_samples(results, "shapes")))


# Without a shape counter (--images_dir) a run has no rates, detection or counter accuracy.
STUDY = Study(
    "shapes",
    Schema(metrics=("network", "throughput"),
           optional=("rates", "detection", "counter_accuracy", "train_in_support",
                     "embedding_groups"),
           headline=("resolution", "seeds")),
    summary=summary_lines,
    claims=(
        ledger.Claim("shapes_duplicates", "A DDPM on SIMPLE SHAPES generates duplicated shapes, "
                     "never seen in training (Figs. 1, 5).", "duplicate share of generated images",
                     0.01, 0.0, True, _shapes_duplicates),
    ),
)
