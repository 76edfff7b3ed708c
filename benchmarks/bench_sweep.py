r"""Sweep-size curve: training steps/s and sampling samples/s of M stacked copies of the paper's
MLP (M = 1, 4, 16), per sweep and per model, beside one model alone.

    python -m benchmarks.bench_sweep                          # M = 1, 4, 16 (about 10 minutes)
    python -m benchmarks.bench_sweep --models=1,4 --num=500
    python -m benchmarks.bench_sweep --models=4,8,16 --loop=map   # one model at a time
    python -m benchmarks.bench_sweep --models=1,3,6 --batch=10000 --num=10 --loop=vmap --single

A sweep costs no more per model than one model alone when (sweep rate x M) >= the M = 1 rate.
Each M runs in a fresh subprocess (own peak RSS and compile). Training: batch --batch per model;
sampling: --num samples per model over the official T = 1000 steps, trajectory variance on.
"""

from __future__ import annotations

import argparse
import json
import time


from benchmarks.common import peak_rss_mib, run_case


def case(m: int, batch: int, steps: int, num: int, loop: str = "vmap", dim: int = 2,
         single: bool = False) -> dict:
    """M stacked models trained and sampled with `loop` ('auto': the library's choice for this
    backend); `single`: one model, not stacked (the reference a sweep is compared with)."""
    import jax
    import jax.numpy as jnp

    import mi_jax as mj
    from mi_jax.data import mixtures as mx
    from mi_jax.training import train as tr

    schedule = mj.linear_schedule()
    net = mj.make_mlp(dim, num_timesteps=schedule.num_steps)
    cfg = tr.TrainConfig(batch_size=batch)
    keys = jax.vmap(jax.random.key)(jnp.arange(m))
    state = jax.vmap(lambda k: tr.init_state(net, cfg, k))(keys)
    data = jnp.broadcast_to(mx.sample_stratified(mx.grid_2d(), jax.random.key(0), 20_000),
                            (m, 20_000, dim))
    n_valid = jnp.full((m,), 20_000, jnp.int32)
    how = dict(stacked=True, loop=None if loop == "auto" else loop)
    if single:  # one model, no model axis
        state, data, n_valid = jax.tree.map(lambda a: a[0], (state, data, n_valid))
        how = dict(stacked=False)
    # The timed call runs one chunk of the size the first call compiled (chunks end on multiples
    # of chunk_steps, so a first call of another length would compile again inside the timing).
    t0 = time.perf_counter()
    state, _ = tr.train(net, schedule, cfg, state, data, n_valid, steps, chunk_steps=steps, **how)
    train_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    state, _ = tr.train(net, schedule, cfg, state, data, n_valid, 2 * steps, chunk_steps=steps,
                        **how)
    train_s = time.perf_counter() - t0
    if single:
        state = jax.tree.map(lambda a: a[None], state)
    models = mj.Stacked(None if loop == "auto" else loop)
    sample = lambda k: mj.sample(net, schedule, k, num, (dim,), params=state.params,
                                 models=models, chunk_size=num)
    t0 = time.perf_counter()
    sample(jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))
    sample_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = sample(jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys))
    sample_s = time.perf_counter() - t0
    assert res.hal.shape == (m, num)
    return {"models": m, "loop": "alone" if single else loop, "train_steps_per_s": steps / train_s,
            "train_first_call_s": train_first,
            "samples_per_s": m * num / sample_s, "sample_first_call_s": sample_first,
            "peak_rss_mib": peak_rss_mib()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="1,4,16")
    p.add_argument("--batch", type=int, default=1000, help="training batch per model")
    p.add_argument("--steps", type=int, default=50, help="timed training steps")
    p.add_argument("--num", type=int, default=1000, help="samples per model (T = 1000 steps)")
    p.add_argument("--loop", default="vmap", choices=("vmap", "map", "auto"),
                   help="how one training chunk and one sampler call run over the M models "
                   "(mi_jax.training.train.train_loop, mi_jax.Stacked)")
    p.add_argument("--single", action="store_true",
                   help="first, one model alone (not stacked): the reference of 'vs alone'")
    p.add_argument("--out", default="results/benchmarks/results_sweep.json")
    p.add_argument("--case", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print(json.dumps(case(a.case, a.batch, a.steps, a.num, a.loop, single=a.single)))
        return
    results = []
    if a.single:
        results.append(run_case("benchmarks.bench_sweep", "--case=1", f"--batch={a.batch}",
                                f"--steps={a.steps}", f"--num={a.num}", f"--loop={a.loop}",
                                "--single"))
    for m in [int(x) for x in a.models.split(",")]:
        results.append(run_case("benchmarks.bench_sweep", f"--case={m}", f"--batch={a.batch}",
                                f"--steps={a.steps}", f"--num={a.num}", f"--loop={a.loop}"))
    one = results[0]
    # "vs first": model-steps/s (samples/s) over those of the first row (one model alone with
    # --single, else the smallest sweep); >= 1 means a model costs no more than there.
    header = ("M", "loop", "train steps/s (sweep)", "model-steps/s", "vs first",
              "samples/s (all models)", "vs first", "1st train call s", "1st sample call s",
              "peak RSS MiB")
    print(f"\nbatch {a.batch} per model, {a.num} samples per model at T = 1000 "
          f"(trajectory variance on), MLP width 128")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        m = r["models"]
        print(f"| {m} | {r['loop']} | {r['train_steps_per_s']:.2f} | "
              f"{m * r['train_steps_per_s']:.2f} | "
              f"{m * r['train_steps_per_s'] / (one['models'] * one['train_steps_per_s']):.2f} | "
              f"{r['samples_per_s']:,.0f} | "
              f"{r['samples_per_s'] / one['samples_per_s']:.2f} | "
              f"{r['train_first_call_s']:.1f} | {r['sample_first_call_s']:.1f} | "
              f"{r['peak_rss_mib']:,.0f} |")
    with open(a.out, "w") as f:
        json.dump({"args": vars(a), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
