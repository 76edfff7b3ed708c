r"""Compile time of each quick experiment's jitted calls, cold and from JAX's persistent
compilation cache.

    python -m benchmarks.bench_compile                 # every case, cold then warm
    python -m benchmarks.bench_compile --cases=gmm1d,shapes

For each case a fresh process lowers and compiles the experiment's two hot functions (the vmapped
training chunk and the vmapped sampler chunk, at the quick preset's shapes) with an empty cache
directory ("cold"), then a second fresh process does the same with the cache the first one filled
("warm"). Times are trace/lower + compile, no execution; the cache saves only the compile part.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from benchmarks.common import print_table, run_case, write_results

# Quick-preset shapes: (models M, net, data dim / image side, batch, train chunk, samples per chunk,
# sampler steps).
CASES = {
    "gmm1d": dict(models=10, net="mlp", dim=1, width=64, batch=1000, chunk=1000, samples=4000,
                  steps=1000),
    "gmm2d": dict(models=4, net="mlp", dim=2, width=64, batch=1000, chunk=1000, samples=4000,
                  steps=1000),
    "recursive_gmm2d": dict(models=6, net="mlp", dim=2, width=64, batch=512, chunk=1000,
                            samples=5500, steps=300),
    "recursive_digits": dict(models=6, net="mlp", dim=64, width=128, batch=256, chunk=500,
                             samples=5500, steps=100, tied=False),
    "shapes": dict(models=1, net="unet", dim=32, base=16, batch=32, chunk=1, samples=200,
                   steps=100, unroll=True),
}


def compile_case(name: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mi_jax.diffusion.schedule import linear_schedule
    from mi_jax.nets import make_mlp, make_unet
    from mi_jax.sampling import observers as obs
    from mi_jax.sampling import sampler
    from mi_jax.sampling.solvers import DDPM
    from mi_jax.training import train as tr

    c = CASES[name]
    m = c["models"]
    if c["net"] == "mlp":
        net = make_mlp(c["dim"], c["width"], 3, c.get("tied", True), c["steps"])
        shape = (c["dim"],)
    else:
        net = make_unet(1, c["base"], (1, 2, 2))
        shape = (c["dim"], c["dim"], 1)
    sched = linear_schedule(c["steps"], 1e-3, 0.02)
    cfg = tr.TrainConfig(c["batch"], 1e-3, "cosine", 1000)
    keys = jax.vmap(jax.random.key)(jnp.arange(m))
    state = jax.vmap(lambda k: tr.init_state(net, cfg, k))(keys)
    data = jnp.zeros((m, 1000) + shape)
    n_valid = jnp.full((m,), 1000, jnp.int32)
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = tr._chunk_jit.lower(net, cfg, c["chunk"], True, c.get("unroll", False), sched, state,
                                  data, n_valid)
    t1 = time.perf_counter()
    lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    lowered = sampler._chunk_jit.lower(net, c["samples"], shape, DDPM(),
                                       sampler.default_net_batch(), True, "vmap", state.params,
                                       sched, keys, obs.paper_observers(),
                                       jnp.arange(c["steps"], dtype=jnp.int32))
    t3 = time.perf_counter()
    lowered.compile()
    t4, c4 = time.perf_counter(), time.process_time()
    # CPU seconds too: on a busy machine they stay what the compile costs, wall time does not.
    return {"train_chunk_s": t2 - t0, "train_trace_s": t1 - t0, "sampler_chunk_s": t4 - t2,
            "sampler_trace_s": t3 - t2, "train_cpu_s": c2 - c0, "sampler_cpu_s": c4 - c2}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--out", default="results/benchmarks/results_compile.json")
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print(json.dumps(compile_case(a.case)))
        return
    results = {}
    for name in a.cases.split(","):
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache,
                       JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                       JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
            runs = [run_case("benchmarks.bench_compile", f"--case={name}", env=env)
                    for _ in ("cold", "warm")]
            results[name] = {"cold": runs[0], "warm": runs[1],
                             "cache_files": len(os.listdir(cache))}
    rows = []
    for name, r in results.items():
        cold, w = r["cold"], r["warm"]
        rows.append([name, f"{cold['train_chunk_s']:.1f}",
                     f"{w['train_chunk_s']:.2f} ({w['train_trace_s']:.2f})",
                     f"{cold['sampler_chunk_s']:.1f}",
                     f"{w['sampler_chunk_s']:.2f} ({w['sampler_trace_s']:.2f})",
                     f"{cold['train_chunk_s'] + cold['sampler_chunk_s']:.1f}",
                     f"{w['train_chunk_s'] + w['sampler_chunk_s']:.2f}",
                     f"{cold['train_cpu_s'] + cold['sampler_cpu_s']:.1f}"])
    print_table(["case", "train chunk cold s", "warm s (of which tracing)", "sampler chunk cold s",
                 "warm s (of which tracing)", "total cold s", "total warm s", "cold CPU s"], rows)
    write_results(a.out, results)

if __name__ == "__main__":
    main()
