r"""Benchmark the SIMPLE SHAPES UNet: training steps/s and sampling images/s, with FLOP floors.

    python -m benchmarks.bench_unet                      # quick-preset net at 32x32 and 64x64
    python -m benchmarks.bench_unet --resolutions=32 --rolled

Training runs `mi_jax.training.train` in chunks; on CPU each chunk is straight-line steps, because
XLA:CPU runs a convolution's weight gradient far slower inside a loop body (--rolled measures the
rolled loop too). Sampling runs the streaming sampler (trajectory variance on, whole image and
per column) for `--sampling_steps` steps. FLOPs per image are XLA's count (`cost_analysis`) of one
network call (training counts 3x the forward); the table gives the achieved GFLOP/s beside the
float32 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp


def _flops_per_image(network, params, res, n=16):
    x = jnp.zeros((n, res, res, 1))
    cost = jax.jit(network.apply).lower(params, x, jnp.int32(5)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / n


def _matmul_gflops():
    a = jax.random.normal(jax.random.key(0), (10_000, 128))
    b = jax.random.normal(jax.random.key(1), (128, 128))
    f = jax.jit(jnp.matmul)
    jax.block_until_ready(f(a, b))
    t0 = time.perf_counter()
    for _ in range(20):
        jax.block_until_ready(f(a, b))
    return 2 * 10_000 * 128 * 128 / ((time.perf_counter() - t0) / 20) / 1e9


def bench(res, base, mults, batch, steps, chunk, num_samples, sampling_steps, unroll):
    import mi_jax as mj
    from mi_jax.data import shape_counter as sc
    from mi_jax.data import shapes as sh
    from mi_jax.diffusion import schedule as sched
    from mi_jax.training import train as tr

    net = mj.make_unet(1, base, tuple(mults))
    data = jnp.asarray(sh.generate(0, 2000, res).images[..., None])
    cfg = tr.TrainConfig(batch_size=batch, learning_rate=1e-3)
    state = tr.init_state(net, cfg, jax.random.key(0))
    schedule = mj.linear_schedule(1000, 1e-4, 0.02)
    t0 = time.perf_counter()
    state, _ = tr.train(net, schedule, cfg, state, data, 2000, chunk, chunk_steps=chunk,
                        unroll=unroll)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, _ = tr.train(net, schedule, cfg, state, data, 2000, chunk + steps, chunk_steps=chunk,
                        unroll=unroll)
    train_rate = steps / (time.perf_counter() - t0)
    flops = _flops_per_image(net, state.params, res)
    s_sched, ts = sched.sampling_plan(schedule, sampling_steps)
    kw = dict(params=state.params, chunk_size=num_samples, net_timesteps=ts,
              observers=mj.paper_observers(regions=sc.column_masks(res), clock="index"))
    t0 = time.perf_counter()
    mj.sample(net, s_sched, jax.random.key(1), num_samples, (res, res, 1), **kw)
    sample_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    mj.sample(net, s_sched, jax.random.key(2), num_samples, (res, res, 1), **kw)
    sample_rate = num_samples / (time.perf_counter() - t0)
    return {"resolution": res, "base": base, "mults": list(mults), "unroll": unroll,
            "params": net.num_params(state.params), "mflops_per_image": flops / 1e6,
            "train_steps_per_s": train_rate, "train_gflops": 3 * flops * batch * train_rate / 1e9,
            "train_first_chunk_s": first, "sample_images_per_s": sample_rate,
            "sample_gflops": flops * sampling_steps * sample_rate / 1e9,
            "sample_first_call_s": sample_first}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", default="32,64")
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--mults", default="1,2,2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--chunk", type=int, default=1)
    p.add_argument("--num_samples", type=int, default=64)
    p.add_argument("--sampling_steps", type=int, default=20)
    p.add_argument("--rolled", action="store_true", help="also time the rolled (scan) loop")
    p.add_argument("--out", default="results/benchmarks/results_unet.json")
    args = p.parse_args()
    mults = [int(m) for m in args.mults.split(",")]
    peak = _matmul_gflops()
    unrolls = [jax.default_backend() == "cpu"] + ([False] if args.rolled else [])
    rows = []
    for res in (int(r) for r in args.resolutions.split(",")):
        for unroll in unrolls:
            rows.append(bench(res, args.base, mults, args.batch, args.steps, args.chunk,
                              args.num_samples, args.sampling_steps, unroll))
            print(f"  {rows[-1]}", flush=True)
    print(f"\nbackend {jax.default_backend()}; matmul peak (10000x128x128) {peak:.1f} GFLOP/s; "
          f"batch {args.batch}; sampling {args.sampling_steps} steps")
    print("| res | params | MFLOP/img | scan | train steps/s | train GFLOP/s | sample img/s | "
          "sample GFLOP/s | 1st train chunk s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['resolution']} | {r['params']:,} | {r['mflops_per_image']:.0f} | "
              f"{'unrolled' if r['unroll'] else 'rolled'} | {r['train_steps_per_s']:.2f} | "
              f"{r['train_gflops']:.1f} | {r['sample_images_per_s']:.1f} | "
              f"{r['sample_gflops']:.1f} | {r['train_first_chunk_s']:.0f} |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"backend": jax.default_backend(), "matmul_gflops": peak, "rows": rows}, f,
                  indent=2)


if __name__ == "__main__":
    main()
