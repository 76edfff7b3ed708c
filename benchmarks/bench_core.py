r"""Benchmark the paper's MLP: training steps/s, sampling samples/s (trajectory variance on),
peak memory and compile time, beside the paper's own PyTorch code on this machine.

    python -m benchmarks.bench_core                       # full table (sampling 1e5 takes minutes)
    python -m benchmarks.bench_core --sizes=10000 --out=bench.json
    python -m benchmarks.bench_core --sizes=10000,100000 --reference_python=.venv-torch/bin/python \
        --reference_sample_steps=100 --pairs=3            # beside the official code, same machine
    python -m benchmarks.bench_core ... --compute_dtype=bfloat16   # mi_jax's opt-in bf16 matmuls

Each case runs in a fresh subprocess so its peak RSS (VmHWM) is its own. With
`--reference_python` (a Python with torch; ../shared/official/README.md) every case runs as
`--pairs` alternating mi_jax / reference pairs and the table gives each pair's rates and the
median of their ratios. The reference is the paper's code itself (`benchmarks/official_torch.py`
imports ../shared/official unchanged; the earlier stand-in, which sampled ~30 % slower than
the official code, is gone).
The machine's float32 matmul peak is measured in the same run, and every figure is also given as
a fraction of the FLOP floor: FLOPs per sample per step are XLA's own count (`cost_analysis`) of
one network call. Figures of ../shared/perf-reference.md (another machine of this type, matmul
peak 189 GFLOP/s) are shown scaled by the two machines' measured peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from benchmarks.common import peak_rss_mib, print_table, run_case, run_command, write_results

REFERENCE = {  # official PyTorch code, 2-core CPU, medians (perf-reference.md)
    "train_2d": 11.5, "train_1d": 12.4,           # steps/s at batch 10 000
    "sample_2d_10000": 266.0, "sample_2d_100000": 144.0,  # samples/s, 1000 steps
    "sample_2d_10000_rss_mib": 426.0, "sample_2d_100000_rss_mib": 745.0,
    "train_rss_mib": 632.0,
    "matmul_10000x128x128_gflops": 189.0,
}


def _time(fn, reps):
    import jax

    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(fn())
    return (time.perf_counter() - t0) / reps


def case_matmul() -> dict:
    import jax
    import jax.numpy as jnp

    out = {}
    for m, k, n in [(10_000, 128, 128), (1_000, 128, 128), (2048, 2048, 2048)]:
        a = jax.random.normal(jax.random.key(0), (m, k))
        b = jax.random.normal(jax.random.key(1), (k, n))
        f = jax.jit(jnp.matmul)
        sec = _time(lambda: f(a, b), 20 if m < 2048 else 5)
        out[f"matmul_{m}x{k}x{n}_gflops"] = 2 * m * k * n / sec / 1e9
    return out


def _net_flops(network, params, dim, n, scalar_t):
    import jax
    import jax.numpy as jnp

    x = jnp.zeros((n, dim))
    t = jnp.int32(5) if scalar_t else jnp.full((n,), 5, jnp.int32)
    cost = jax.jit(network.apply).lower(params, x, t).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"]) / n


def case_train(dim: int, batch: int, steps: int, compute_dtype: str = "float32") -> dict:
    import jax

    import mi_jax as mj
    from mi_jax.data import mixtures as mx
    from mi_jax.training import train as tr

    schedule = mj.linear_schedule()
    net = mj.make_mlp(dim, num_timesteps=schedule.num_steps, compute_dtype=compute_dtype)
    cfg = tr.TrainConfig(batch_size=batch)
    mixture = mx.grid_2d() if dim == 2 else mx.mixture_1d()
    data = mx.sample_stratified(mixture, jax.random.key(0), 100_000)
    state = tr.init_state(net, cfg, jax.random.key(1))
    t0 = time.perf_counter()
    state, _ = tr.train(net, schedule, cfg, state, data, 100_000, 10, chunk_steps=10)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, _ = tr.train(net, schedule, cfg, state, data, 100_000, 10 + steps, chunk_steps=10)
    sec = time.perf_counter() - t0
    fwd = _net_flops(net, state.params, dim, batch, scalar_t=False)
    return {"steps_per_s": steps / sec, "first_chunk_s": compile_s,
            "flops_per_step": 3 * fwd * batch, "peak_rss_mib": peak_rss_mib()}


def case_sample(dim: int, num: int, chunk: int, net_batch=None,
                compute_dtype: str = "float32") -> dict:
    import jax

    import mi_jax as mj

    schedule = mj.linear_schedule()
    net = mj.make_mlp(dim, compute_dtype=compute_dtype)
    params = net.init(jax.random.key(0))
    t0 = time.perf_counter()
    mj.sample(net, schedule, jax.random.key(1), min(chunk, num), (dim,), params=params,
              chunk_size=chunk, net_batch=net_batch)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = mj.sample(net, schedule, jax.random.key(2), num, (dim,), params=params, chunk_size=chunk,
                    net_batch=net_batch)
    sec = time.perf_counter() - t0
    assert res.hal.shape == (num,)
    return {"samples_per_s": num / sec, "first_call_s": first,
            "flops_per_sample_step": _net_flops(net, params, dim, chunk, scalar_t=True),
            "peak_rss_mib": peak_rss_mib()}


CASES = {
    "matmul": lambda a: case_matmul(),
    "train_1d": lambda a: case_train(1, 10_000, a.train_steps, a.compute_dtype),
    "train_2d": lambda a: case_train(2, 10_000, a.train_steps, a.compute_dtype),
}


def _child(name: str, args) -> dict:
    if name.startswith("sample_2d_"):
        num = int(name.split("_")[-1])
        return case_sample(2, num, min(num, args.chunk),
                           None if args.net_batch < 0 else args.net_batch, args.compute_dtype)
    return CASES[name](args)


def _reference_case(args, name: str) -> dict:
    """One case of the paper's code on this machine (`official_torch.py`, which imports
    ../shared/official unchanged); it has no matmul case."""
    if name == "matmul":
        return {}
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [args.reference_python, os.path.join(here, "official_torch.py"), f"--case={name}",
           f"--sample_steps={args.reference_sample_steps}", f"--train_steps={args.train_steps}"]
    if args.official_dir:
        cmd.append(f"--official_dir={args.official_dir}")
    return run_command(cmd)


def _rate(result: dict, name: str):
    return result.get("steps_per_s" if name.startswith("train") else "samples_per_s")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="sample counts to time (2D)")
    p.add_argument("--chunk", type=int, default=10_000, help="sampler chunk size")
    p.add_argument("--net_batch", type=int, default=-1,
                   help="sampler rows per network call (0: the whole chunk; -1: the library's "
                        "default, 2 048 on CPU; whole chunks are faster on some hosts)")
    p.add_argument("--train_steps", type=int, default=20)
    p.add_argument("--compute_dtype", default="float32", choices=("float32", "bfloat16"),
                   help="mi_jax's matmul precision (bfloat16: the opt-in mixed precision of "
                        "make_mlp; the reference always runs float32)")
    p.add_argument("--reference_python", default="",
                   help="a Python with torch (e.g. .venv-torch/bin/python): also time the "
                        "reference on this machine, in alternating pairs")
    p.add_argument("--official_dir", default="", help="where the official code lies "
                   "(default ../shared/official beside the repository)")
    p.add_argument("--pairs", type=int, default=3, help="alternating mi_jax/reference pairs")
    p.add_argument("--reference_sample_steps", type=int, default=1000,
                   help="reverse steps per timed reference sampling run (its rate is scaled to "
                        "1000 steps; every step costs the same)")
    p.add_argument("--out", default="results/benchmarks/results_core.json")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(_child(args.case, args)))
        return
    names = ["matmul", "train_1d", "train_2d"] + [f"sample_2d_{int(s)}" for s in args.sizes.split(",")]
    # Alternating pairs (mi_jax case, then the reference's same case), so drift of a shared
    # machine hits both sides; the ratio reported is the median of the pairs' ratios.
    pairs = []
    for _ in range(args.pairs if args.reference_python else 1):
        pair = {}
        for name in names:
            mine = run_case("benchmarks.bench_core", f"--case={name}", f"--chunk={args.chunk}",
                            f"--train_steps={args.train_steps}", f"--net_batch={args.net_batch}",
                            f"--compute_dtype={args.compute_dtype}")
            ref = _reference_case(args, name) if args.reference_python else {}
            pair[name] = (mine, ref)
        pairs.append(pair)
    results = {name: pairs[0][name][0] for name in names}
    here = {name: pairs[0][name][1] for name in names} if args.reference_python else {}
    peak = results["matmul"]["matmul_10000x128x128_gflops"]
    scale = peak / REFERENCE["matmul_10000x128x128_gflops"]
    rows = []
    for name in names[1:]:
        r, h = results[name], here.get(name, {})
        if name.startswith("train"):
            label, value, ref_here = name + " (steps/s, batch 1e4)", r["steps_per_s"], h.get("steps_per_s")
            floor, ref_rss = peak * 1e9 / r["flops_per_step"], REFERENCE["train_rss_mib"]
            first = r["first_chunk_s"]
        else:
            label = name.replace("sample_2d_", "sample 2D n=") + " (samples/s)"
            value, ref_here = r["samples_per_s"], h.get("samples_per_s")
            floor = peak * 1e9 / (r["flops_per_sample_step"] * 1000)
            ref_rss, first = REFERENCE.get(name + "_rss_mib"), r["first_call_s"]
        ref = REFERENCE.get(name)
        rows.append([label, f"{value:,.1f}",
                     f"{ref_here:,.1f}" if ref_here else "-",
                     f"{value / ref_here:.2f}" if ref_here else "-",
                     f"{ref:,.1f}" if ref else "-",
                     f"{value / ref / scale:.2f}" if ref else "-",
                     f"{100 * value / floor:.0f}%", f"{r['peak_rss_mib']:,.0f}",
                     f"{h['peak_rss_mib']:,.0f}" if h else "-",
                     f"{ref_rss:,.0f}" if ref_rss else "-", f"{first:.1f}"])
    print(f"\nmatmul peak here (JAX, 10000x128x128): {peak:.1f} GFLOP/s "
          f"(reference machine: {REFERENCE['matmul_10000x128x128_gflops']:.0f}; scale {scale:.2f})"
          + (f"; PyTorch here: {here['matmul']['matmul_10000x128x128_gflops']:.1f}"
             if here.get("matmul") else ""))
    print_table(["case", "mi_jax", "ref here", "x ref here", "ref (other machine)",
                 "x ref / peak scale", "% FLOP floor", "RSS MiB", "ref RSS here",
                 "ref RSS (other)", "1st call s"], rows)
    if args.reference_python:
        print(f"\nmi_jax vs the official code on this machine, {len(pairs)} "
              "alternating pair(s) (rate per pair; ratio = mi_jax / reference):")
        prow, summary = [], {}
        for name in names[1:]:
            mine = [_rate(p[name][0], name) for p in pairs]
            ref = [_rate(p[name][1], name) for p in pairs]
            ratios = [m / r for m, r in zip(mine, ref)]
            summary[name] = {"mi_jax": mine, "reference": ref, "ratios": ratios,
                             "median_ratio": statistics.median(ratios)}
            prow.append([name, ", ".join(f"{v:,.1f}" for v in mine),
                         ", ".join(f"{v:,.1f}" for v in ref),
                         ", ".join(f"{v:.2f}" for v in ratios),
                         f"{statistics.median(ratios):.2f}"])
        print_table(["case", "mi_jax per pair", "official per pair", "ratio per pair",
                     "median ratio"], prow)
        results["pairs"] = summary
        results["reference_kind"] = "official"
    results["reference"] = REFERENCE
    results["reference_here"] = here
    results["compute_dtype"] = args.compute_dtype
    results["reference_sample_steps"] = args.reference_sample_steps
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    write_results(args.out, results)


if __name__ == "__main__":
    main()
