r"""Mixed precision (bf16 matmuls) for the SIMPLE SHAPES UNet: speed and effect on hallucinations.

    python -m benchmarks.bench_precision --workdir=runs/shapes_quick        # a finished shapes run
    python -m benchmarks.bench_precision --workdir=W --num_samples=2000     # on a GPU

Loads the trained UNet(s) of a finished `experiments.shapes` work directory and samples the same
images (same keys, same noise) with float32 and with bfloat16 convs and dense layers (float32
params, norms and output). Reports images/s, the hallucination rate by category, the paired
agreement (the share of images whose counter label is the same under both precisions) and the
mean absolute pixel difference. This measures precision at sampling time; the effect of bf16 on
training is `python -m experiments.shapes --compute_dtype=bfloat16` beside a float32 run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table, write_results
from mi_jax import checkpoint
from mi_jax.data import shape_counter as sc
from mi_jax.diffusion import schedule as sched
from mi_jax.nets import COMPUTE_DTYPES, make_unet
from mi_jax.sampling.ddpm import sample_network
from mi_jax.training import train as tr


def load_params(workdir: Path, cfg: dict):
    """The stacked params (M models) of a finished shapes run."""
    net = make_unet(1, cfg["base"], tuple(cfg["mults"]), 1, cfg["attention"])
    train_cfg = tr.TrainConfig(cfg["batch_size"], cfg["lr"], cfg["lr_schedule"], cfg["steps"])
    keys = jax.vmap(jax.random.key)(jnp.arange(len(cfg["seeds"])))
    template = jax.vmap(lambda k: tr.init_state(net, train_cfg, k))(keys)
    return checkpoint.load(workdir / tr.TRAIN_CHECKPOINT, template).params


def run(workdir: Path, num: int, sampling_steps: int | None, chunk: int, seed: int) -> dict:
    cfg = json.loads((workdir / "config.json").read_text())
    res = cfg["resolution"]
    params = load_params(workdir, cfg)
    steps = sampling_steps or cfg["sampling_steps"]
    train_sched = sched.linear_schedule(cfg["T"], cfg["beta_start"], cfg["beta_end"])
    if steps == cfg["T"]:
        sample_sched, ts = train_sched, None
    else:
        sample_sched, ts = sched.respace(train_sched.betas, sched.strided_timesteps(cfg["T"], steps))
    m = len(cfg["seeds"])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(m))
    rows = {}
    for dtype in COMPUTE_DTYPES:
        net = make_unet(1, cfg["base"], tuple(cfg["mults"]), 1, cfg["attention"], dtype)
        kw = dict(stacked=True, window=tuple(cfg["hal_window"]), chunk_size=chunk,
                  net_timesteps=ts, regions=sc.column_masks(res))
        sample_network(net, params, sample_sched, keys, chunk, (res, res, 1), **kw)  # compile
        t0 = time.perf_counter()
        out = sample_network(net, params, sample_sched, keys, num, (res, res, 1), **kw)
        jax.block_until_ready(out.x)
        seconds = time.perf_counter() - t0
        counts = [sc.count_shapes(np.asarray(out.x[i]), res) for i in range(m)]
        rows[dtype] = {"images_per_s": num * m / seconds, "seconds": seconds,
                       "rates": [c.rates() for c in counts],
                       "x": np.asarray(out.x), "in_support": np.stack([c.in_support for c in counts]),
                       "primary": np.stack([c.primary for c in counts])}
    a, b = rows["float32"], rows["bfloat16"]
    result = {"workdir": str(workdir), "num_samples_per_model": num, "models": m,
              "sampling_steps": steps, "backend": jax.default_backend(),
              "device": str(jax.devices()[0].device_kind),
              "agreement_in_support": float((a["in_support"] == b["in_support"]).mean()),
              "agreement_category": float((a["primary"] == b["primary"]).mean()),
              "mean_abs_pixel_diff": float(np.abs(a["x"] - b["x"]).mean())}
    for dtype, r in rows.items():
        result[dtype] = {k: r[k] for k in ("images_per_s", "seconds", "rates")}
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/shapes_quick", type=Path)
    p.add_argument("--num_samples", type=int, default=400)
    p.add_argument("--sampling_steps", type=int, default=None, help="default: the run's")
    p.add_argument("--chunk_size", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="benchmarks/results_precision.json")
    a = p.parse_args()
    if not (a.workdir / tr.TRAIN_CHECKPOINT).exists():
        raise SystemExit(f"--workdir={a.workdir}: no {tr.TRAIN_CHECKPOINT} (run experiments.shapes)")
    if a.num_samples < 1 or a.num_samples % a.chunk_size:
        raise SystemExit(f"--num_samples={a.num_samples}: must be a positive multiple of "
                         f"--chunk_size={a.chunk_size}")
    r = run(a.workdir, a.num_samples, a.sampling_steps, a.chunk_size, a.seed)
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
    write_results(a.out, r)

if __name__ == "__main__":
    main()
