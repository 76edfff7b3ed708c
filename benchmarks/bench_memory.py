r"""Peak memory of streaming sampling against the number of samples and of diffusion steps.

    python -m benchmarks.bench_memory                     # 1e5 / 1e6 / 1e7 samples (1D MLP)
    python -m benchmarks.bench_memory --counts=100000 --steps=1000,4

The sampler keeps running moments, not trajectories, and works in fixed-size chunks, so its
peak RSS should depend on neither T nor the number of samples beyond the returned arrays
(x, trajectory variance: 8 bytes a sample in 1D). Each case runs in a fresh subprocess so its
VmHWM is its own. The 10-million-sample case uses few steps to finish in minutes on a 2-core CPU;
the T column shows the peak does not move with T.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks.common import peak_rss_mib, run_case


def case(num: int, steps: int, chunk: int) -> dict:
    import jax

    import mi_jax as mj
    from mi_jax.training import train as tr

    # A briefly trained net: an untrained one's eps does not track x_t, and 1/sqrt(alpha_t) growth
    # over the official schedule's 1000 steps overflows (memory would be the same, values not).
    schedule = mj.linear_schedule(steps)
    net = mj.make_mlp(1)
    cfg = tr.TrainConfig(batch_size=1000, learning_rate=2e-3)
    data = mj.mixture_1d().sample(jax.random.key(0), 10_000)
    state = tr.init_state(net, cfg, jax.random.key(1))
    state, _ = tr.train(net, schedule, cfg, state, data, 10_000, 300, chunk_steps=300)
    params = state.params
    t0 = time.perf_counter()
    res = mj.sample(net, schedule, jax.random.key(1), num, (1,), params=params, chunk_size=chunk,
                    observers=mj.paper_observers((0, min(10, steps))))
    sec = time.perf_counter() - t0
    assert res.x.shape == (num, 1) and res.hal.shape == (num,) and res.num_nonfinite == 0
    return {"num": num, "T": steps, "seconds": sec, "peak_rss_mib": peak_rss_mib(),
            "output_mib": (res.x.nbytes + res.observed["hal"].var.nbytes) / 2**20}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="100000,1000000,10000000")
    p.add_argument("--steps", default="4", help="diffusion steps T to try for each count")
    p.add_argument("--reference_steps", type=int, default=100,
                   help="also run the smallest count at this T (0: skip)")
    p.add_argument("--chunk", type=int, default=10_000)
    p.add_argument("--out", default="results/benchmarks/results_memory.json")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        num, steps = map(int, args.case.split(","))
        print(json.dumps(case(num, steps, args.chunk)))
        return
    counts = [int(c) for c in args.counts.split(",")]
    runs = [(n, int(s)) for n in counts for s in args.steps.split(",")]
    if args.reference_steps:
        runs.insert(0, (counts[0], args.reference_steps))
    results = []
    for num, steps in runs:
        results.append(run_case("benchmarks.bench_memory", f"--case={num},{steps}",
                                f"--chunk={args.chunk}"))
    print("| samples | T | peak RSS MiB | returned arrays MiB | seconds |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['num']:,} | {r['T']} | {r['peak_rss_mib']:,.0f} | {r['output_mib']:,.1f} | "
              f"{r['seconds']:,.1f} |")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"chunk": args.chunk, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
