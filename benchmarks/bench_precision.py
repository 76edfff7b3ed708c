r"""Mixed precision (bf16 matmuls): speed and effect on hallucinations and their detection.

    python -m benchmarks.bench_precision --workdir=runs/shapes_quick        # a finished shapes run
    python -m benchmarks.bench_precision --workdir=W --num_samples=2000     # on a GPU
    python -m benchmarks.bench_precision --workdir=runs/gmm2d_quick --num_samples=10000 \
        --chunk_size=10000 --out=results/benchmarks/results_precision_mlp.json     # a gmm1d/gmm2d run

Loads the trained models of a finished work directory and samples the same points (same keys,
same noise) with float32 and with bfloat16 matmuls (float32 params and norms; SIMPLE SHAPES: the
UNet's convs and dense layers, float32 output conv; mixtures: the MLP's residual-block matmuls,
float32 input and output layers). Reports the rate (images/s or samples/s) and, paired across the
two precisions, how many samples keep their label. Images: the hallucination rate by category,
the share with the same counter label and the mean absolute pixel difference. Mixtures: the
hallucination rate (k-sigma rule, the run's k), the trajectory variance's detection in the
run's window (AUROC, removed at 96 % kept) per precision, the share of samples with the same
label, the mean distance between paired samples and the rank correlation of their variances.
This measures precision at sampling time; the effect of bf16 on training is the study run with
`--compute_dtype=bfloat16` beside a float32 run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table, write_results
from mi_jax import checkpoint
from mi_jax import workdir as wd
from mi_jax.data import shape_counter as sc
from mi_jax.diffusion import schedule as sched
from mi_jax.nets import COMPUTE_DTYPES, make_unet
from mi_jax.sampling.observers import paper_observers
from mi_jax.sweeps import sample_models
from mi_jax.training import train as tr


def load_params(workdir: Path, cfg: dict):
    """The stacked params (M models) of a finished shapes run."""
    net = make_unet(1, cfg["base"], tuple(cfg["mults"]), 1, cfg["attention"])
    train_cfg = tr.TrainConfig(cfg["batch_size"], cfg["lr"], cfg["lr_schedule"], cfg["steps"])
    keys = jax.vmap(jax.random.key)(jnp.arange(len(cfg["seeds"])))
    template = jax.vmap(lambda k: tr.init_state(net, train_cfg, k))(keys)
    return checkpoint.load(workdir / tr.TRAIN_CHECKPOINT, template).params


def _timed(draw, num: int, chunk: int):
    """draw(num) and its seconds, after a draw(chunk) that compiles the sampler's chunk."""
    jax.block_until_ready(draw(min(chunk, num)))
    t0 = time.perf_counter()
    out = jax.block_until_ready(draw(num))
    return out, time.perf_counter() - t0


def run_shapes(workdir: Path, num: int, sampling_steps: int | None, chunk: int,
               seed: int) -> dict:
    cfg = wd.read_config(workdir)
    res = cfg["resolution"]
    params = load_params(workdir, cfg)
    steps = sampling_steps or cfg["sampling_steps"]
    train_sched = sched.linear_schedule(cfg["T"], cfg["beta_start"], cfg["beta_end"])
    sample_sched, ts = sched.sampling_plan(train_sched, steps)
    m = len(cfg["seeds"])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(m))
    rows = {}
    for dtype in COMPUTE_DTYPES:
        net = make_unet(1, cfg["base"], tuple(cfg["mults"]), 1, cfg["attention"], dtype)
        observers = paper_observers(cfg["hal_window"], regions=sc.column_masks(res),
                                    clock="index")  # as experiments.shapes counts it
        kw = dict(chunk_size=chunk, net_timesteps=ts, observers=observers)
        out, seconds = _timed(
            lambda n: sample_models(net, params, sample_sched, keys, n, (res, res, 1), **kw),
            num, chunk)
        counts = [sc.count_shapes(np.asarray(out.x[i]), res) for i in range(m)]
        rows[dtype] = {"images_per_s": num * m / seconds, "seconds": seconds,
                       "rates": [c.rates() for c in counts],
                       "x": np.asarray(out.x), "in_support": np.stack([c.in_support for c in counts]),
                       "primary": np.stack([c.primary for c in counts])}
    a, b = rows["float32"], rows["bfloat16"]
    result = {"workdir": str(workdir), "kind": "shapes", "num_samples_per_model": num, "models": m,
              "sampling_steps": steps, "backend": jax.default_backend(),
              "device": str(jax.devices()[0].device_kind),
              "agreement_in_support": float((a["in_support"] == b["in_support"]).mean()),
              "agreement_category": float((a["primary"] == b["primary"]).mean()),
              "mean_abs_pixel_diff": float(np.abs(a["x"] - b["x"]).mean())}
    for dtype, r in rows.items():
        result[dtype] = {k: r[k] for k in ("images_per_s", "seconds", "rates")}
    return result


def _rank_correlation(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def sample_mixture(workdir: Path, num: int, chunk: int) -> tuple[dict, object]:
    """Every model of a finished gmm1d/gmm2d run, sampled with the run's keys and window under
    each precision: per precision the rate, samples, variances, labels and detection."""
    from mi_jax.detection.metrics import detection_summary
    from mi_jax.studies import mixture_models
    from mi_jax.studies import mixture_study as ms
    from mi_jax.sweeps import sample_grid

    rows = {}
    for dtype in COMPUTE_DTYPES:
        models = mixture_models.load_models(workdir, compute_dtype=dtype)
        cfg, grid = models.config, models.grid
        dim = grid.configs[0].mixture.dim

        def draw(n):
            return sample_grid(models.network, models.params, models.schedule, grid, n, (dim,),
                               observers=paper_observers(cfg.hal_window),
                               chunk_size=min(chunk, n))

        out, seconds = _timed(draw, num, chunk)
        x, hal = np.asarray(out.x), np.nan_to_num(np.asarray(out.hal),
                                                  posinf=np.finfo(np.float32).max)
        positive = ms.hallucination_labels(x, grid.mixtures(), cfg.k)
        det = [detection_summary(hal[m], positive[m]) for m in range(grid.num_models)]
        rows[dtype] = {"samples_per_s": num * grid.num_models / seconds, "seconds": seconds,
                       "hallucination_rate": positive.mean(1).tolist(),
                       "auroc": [d["auroc"] for d in det],
                       "removed_at_96_kept": [d["removed_at_96_kept"] for d in det],
                       "x": x, "hal": hal, "positive": positive}
    return rows, models


def run_mixture(workdir: Path, num: int, chunk: int) -> dict:
    """`sample_mixture`, summarised: per model and precision, and paired across precisions."""
    rows, models = sample_mixture(workdir, num, chunk)
    cfg, grid = models.config, models.grid
    a, b = rows["float32"], rows["bfloat16"]
    result = {"workdir": str(workdir), "kind": "mixture", "num_samples_per_model": num,
              "models": [f"{c.name} seed {s}" for c, s in zip(
                  [grid.configs[i] for i in grid.config_index], grid.model_seeds)],
              "window": list(cfg.hal_window), "k": cfg.k, "backend": jax.default_backend(),
              "device": str(jax.devices()[0].device_kind),
              "agreement_label": (a["positive"] == b["positive"]).mean(1).tolist(),
              "mean_distance": np.linalg.norm(a["x"] - b["x"], axis=-1).mean(1).tolist(),
              "variance_rank_correlation": [_rank_correlation(a["hal"][m], b["hal"][m])
                                            for m in range(len(a["hal"]))]}
    for dtype, r in rows.items():
        result[dtype] = {k: r[k] for k in ("samples_per_s", "seconds", "hallucination_rate",
                                           "auroc", "removed_at_96_kept")}
    stored = Path(workdir) / "arrays.npz"
    if stored.exists():  # the float32 arm redraws the run's own samples (same keys and chunks)
        with np.load(stored) as f:
            n = min(num, f["samples"].shape[1])
            result["float32_max_diff_from_run_samples"] = float(
                np.abs(a["x"][:, :n] - f["samples"][:, :n]).max())
    return result


def report_mixture(r: dict) -> None:
    print(f"{len(r['models'])} model(s) x {r['num_samples_per_model']} samples, window "
          f"{r['window']}, k = {r['k']:g}, {r['device']}")
    rows = []
    for m, name in enumerate(r["models"]):
        a, b = r["float32"], r["bfloat16"]
        pair = lambda key, f: f"{f(a[key][m])} / {f(b[key][m])}"
        rows.append([name, pair("hallucination_rate", lambda v: f"{100 * v:.2f}"),
                     pair("auroc", lambda v: f"{v:.3f}"),
                     pair("removed_at_96_kept", lambda v: f"{100 * v:.1f}"),
                     f"{100 * r['agreement_label'][m]:.2f}", f"{r['mean_distance'][m]:.2e}",
                     f"{r['variance_rank_correlation'][m]:.3f}"])
    print_table(["model", "hallucinated % (f32 / bf16)", "AUROC", "removed at 96 % kept, %",
                 "same label %", "mean |x_bf16 - x_f32|", "variance rank corr."], rows)
    if "float32_max_diff_from_run_samples" in r:
        print("float32 arm vs the run's own samples: max |diff| = "
              f"{r['float32_max_diff_from_run_samples']:.3g} (0: same noise, same chunks)")
    print("samples/s (all models): " + ", ".join(
        f"{dtype} {r[dtype]['samples_per_s']:,.0f}" for dtype in COMPUTE_DTYPES))


def report_shapes(r: dict) -> None:
    print(f"{r['models']} model(s) x {r['num_samples_per_model']} images, {r['sampling_steps']} "
          f"steps, {r['device']}")
    rows = []
    for dtype in COMPUTE_DTYPES:
        rates = r[dtype]["rates"]
        pct = lambda f: f"{100 * np.mean([f(x) for x in rates]):.2f}"
        rows.append([dtype, f"{r[dtype]['images_per_s']:.2f}", pct(lambda x: x["hallucination_rate"])]
                    + [pct(lambda x, c=c: x["category_primary"][c]) for c in sc.CATEGORIES])
    print_table(["precision", "images/s", "hallucinated %"] + [f"{c} %" for c in sc.CATEGORIES],
                rows)
    print(f"same in-support label: {100 * r['agreement_in_support']:.1f} %; same category: "
          f"{100 * r['agreement_category']:.1f} %; mean |x_bf16 - x_f32| = "
          f"{r['mean_abs_pixel_diff']:.4f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/shapes_quick", type=Path)
    p.add_argument("--num_samples", type=int, default=400)
    p.add_argument("--sampling_steps", type=int, default=None,
                   help="default: the run's (shapes only; mixtures sample all T steps)")
    p.add_argument("--chunk_size", type=int, default=200)
    p.add_argument("--seed", type=int, default=7,
                   help="shapes only; mixtures reuse the run's own sampling keys")
    p.add_argument("--out", default="", help="default: results/benchmarks/results_precision.json "
                   "(shapes) or results/benchmarks/results_precision_mlp.json (mixtures)")
    a = p.parse_args()
    from mi_jax.studies.mixture_study import MODELS_FILE

    mixture = (a.workdir / MODELS_FILE).exists()
    if not (a.workdir / tr.TRAIN_CHECKPOINT).exists():
        raise SystemExit(f"--workdir={a.workdir}: no {tr.TRAIN_CHECKPOINT} (run experiments.shapes, "
                         "gmm1d or gmm2d)")
    if a.num_samples < 1 or a.num_samples % a.chunk_size:
        raise SystemExit(f"--num_samples={a.num_samples}: must be a positive multiple of "
                         f"--chunk_size={a.chunk_size}")
    if mixture:
        r = run_mixture(a.workdir, a.num_samples, a.chunk_size)
        report_mixture(r)
    else:
        r = run_shapes(a.workdir, a.num_samples, a.sampling_steps, a.chunk_size, a.seed)
        report_shapes(r)
    write_results(a.out or ("results/benchmarks/results_precision_mlp.json" if mixture
                            else "results/benchmarks/results_precision.json"), r)


if __name__ == "__main__":
    main()
