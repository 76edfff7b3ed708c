r"""The toy MLP's LayerNorm on CPU: the row means folded into centred kernels or computed, and what
the norms and activations cost a training step (issue 18; BUILD_NOTES.md).

    python -m benchmarks.bench_layernorm                 # ~5 min on 2 cores
    python -m benchmarks.bench_layernorm --rounds=10

`ab`: `make_mlp(fold_means=True)` ("folded") and `False` ("plain"), compiled side by side in one process
(networks with distinct specs, so jit keeps one program each) and timed in alternating rounds,
so machine drift hits every variant alike; training = `bench_core.case_train`'s setup (2D,
batch 10 000, 20 steps per round), sampling = 10 000 samples with the trajectory variance. `pieces`: training with the LayerNorms
and/or the LeakyReLUs replaced by the identity, each in a fresh process (not a valid model; only
its speed is of interest).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks.common import print_table, run_case


VARIANTS = {"folded": True, "plain": False}  # name -> make_mlp's fold_means


def case_ab(what: str, rounds: int) -> dict:
    """Alternating rounds of each variant; `what` is 'train' or 'sample'."""
    import jax

    import mi_jax as mj
    from mi_jax.data import mixtures as mx
    from mi_jax.training import train as tr

    schedule, variants = mj.linear_schedule(), {}
    for name, fold in VARIANTS.items():
        net = mj.make_mlp(2, num_timesteps=schedule.num_steps, fold_means=fold)
        if what == "train":
            cfg = tr.TrainConfig(batch_size=10_000)
            data = mx.sample_stratified(mx.grid_2d(), jax.random.key(0), 100_000)
            state = tr.init_state(net, cfg, jax.random.key(1))
            state, _ = tr.train(net, schedule, cfg, state, data, 100_000, 10, chunk_steps=10)
            variants[name] = [net, cfg, jax.block_until_ready(state), data]
        else:
            params = net.init(jax.random.key(0))
            mj.sample(net, schedule, jax.random.key(1), 10_000, (2,), params=params,
                      chunk_size=10_000)
            variants[name] = [net, params]
    rates = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:
            v = variants[name]
            t0 = time.perf_counter()
            if what == "train":
                net, cfg, state, data = v
                state, _ = tr.train(net, schedule, cfg, state, data, 100_000,
                                    int(state.step) + 20, chunk_steps=10)
                v[2] = jax.block_until_ready(state)
                rates[name].append(20 / (time.perf_counter() - t0))
            else:
                res = mj.sample(v[0], schedule, jax.random.key(2 + r), 10_000, (2,), params=v[1],
                                chunk_size=10_000)
                jax.block_until_ready(res.hal)
                rates[name].append(10_000 / (time.perf_counter() - t0))
    return rates


def case_pieces(variant: str) -> dict:
    """Training steps/s with pieces of the block replaced by the identity."""
    from benchmarks import bench_core
    from mi_jax.nets import mlp

    if "no_norm" in variant:
        mlp.LayerNorm.__call__ = lambda self, x, zero_mean_rows=False: x
    if "no_act" in variant:
        mlp._act = lambda x: x
    return {"steps_per_s": bench_core.case_train(2, 10_000, 40)["steps_per_s"]}


PIECES = ("as_is", "no_norm", "no_act", "no_norm_no_act")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=8, help="alternating rounds per A/B")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        kind, _, arg = args.case.partition(":")
        out = case_ab(arg, args.rounds) if kind == "ab" else case_pieces(arg)
        print(json.dumps(out))
        return
    rows = []
    for what, unit in (("train", "steps/s"), ("sample", "samples/s")):
        rates = run_case("benchmarks.bench_layernorm", f"--case=ab:{what}", f"--rounds={args.rounds}")
        fold, plain = statistics.median(rates["folded"]), statistics.median(rates["plain"])
        rows.append([f"{what} ({unit})", f"{fold:,.1f}", f"{plain:,.1f}", f"{fold / plain:.3f}"])
    print_table(["A/B (medians of alternating rounds)", "folded", "plain", "folded / plain"],
                rows)
    print()
    pieces = [[v, f"{run_case('benchmarks.bench_layernorm', f'--case=pieces:{v}')['steps_per_s']:.1f}"]
              for v in PIECES]
    print_table(["training step, 2D, batch 10 000", "steps/s"], pieces)


if __name__ == "__main__":
    main()
