r"""Where the time of one training step and one sampler step goes (the paper's MLP, CPU).

    python -m benchmarks.profile_core                 # batch 10 000, 2D, prints a table

Times jitted pieces of the step at the benchmark's shapes, each as its own program (median of
several calls, after a compile call), so the table reads as a breakdown:
  train   the whole step (one step per call and 10 per call), the loss and its gradient
          (forward + backward), the forward alone, the Adam update alone, the minibatch draw;
          the same forward/backward with the elementwise work removed (dots only), and the
          network's matmuls alone: how far elementwise passes (LayerNorm, LeakyReLU, residual)
          and host overhead sit from the dot floor.
  sample  one reverse step with the trajectory variance (the sampler's scan body, 10 steps per
          call), the network call alone, and the network's dots alone.
XLA's FLOP count of each program is printed beside it (GFLOP/s = how close it runs to the
matmul peak measured in the same run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_table


def _timed(fn, *args, reps: int = 10) -> float:
    jax.block_until_ready(fn(*args))
    runs = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def _flops(fn, *args) -> float:
    cost = fn.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def _dots_only_apply(params, x, t, num_blocks: int = 3):
    """The paper MLP's per-sample matmuls in its own order (in_fc, fc1 and fc2 of each of the
    3 tied blocks, out_fc), without norms, activations, residuals or the time path (whose
    matmuls run on the 1 000-row timestep table in training, once per call in sampling)."""
    blocks = params["blocks"]
    h = x @ params["in_fc"]["kernel"]
    for i in range(num_blocks):
        b = blocks[i % len(blocks)]
        h = (h @ b["fc1"]["kernel"]) @ b["fc2"]["kernel"]
    return h @ params["out_fc"]["kernel"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=2)
    a = p.parse_args()

    import mi_jax as mj
    from mi_jax.data import mixtures as mx
    from mi_jax.diffusion.forward import eps_loss
    from mi_jax.diffusion.schedule import truncate
    from mi_jax.sampling import chain
    from mi_jax.training import train as tr

    schedule = mj.linear_schedule()
    net = mj.make_mlp(a.dim, num_timesteps=schedule.num_steps)
    cfg = tr.TrainConfig(batch_size=a.batch)
    mixture = mx.grid_2d() if a.dim == 2 else mx.mixture_1d()
    data = mx.sample_stratified(mixture, jax.random.key(0), 100_000)
    state = tr.init_state(net, cfg, jax.random.key(1))
    x0 = data[: a.batch]
    key = jax.random.key(2)
    opt = cfg.optimizer()

    def loss(params, x0, key, apply=net.apply):
        return eps_loss(lambda x, t: apply(params, x, t), schedule, x0, key)

    step1 = jax.jit(lambda s: tr.train_step(net, schedule, cfg, s, data, 100_000))
    chunk10 = jax.jit(lambda s: jax.lax.scan(
        lambda c, _: tr.train_step(net, schedule, cfg, c, data, 100_000), s, None, length=10))
    grad = jax.jit(jax.value_and_grad(loss))
    fwd = jax.jit(loss)
    dots_grad = jax.jit(jax.value_and_grad(lambda p, x, k: loss(p, x, k, _dots_only_apply)))
    g = grad(state.params, x0, key)[1]
    update = jax.jit(lambda g, o, p: opt.update(g, o, p))
    draw = jax.jit(lambda k: tr.minibatch(cfg, data, 100_000, 0, k))

    peak_a = jax.random.normal(key, (a.batch, 128))
    peak_b = jax.random.normal(key, (128, 128))
    mm = jax.jit(jnp.matmul)
    peak = 2 * a.batch * 128 * 128 / _timed(mm, peak_a, peak_b, reps=30) / 1e9

    rows = []

    def row(name, fn, *args, per=1):
        sec = _timed(fn, *args) / per
        fl = _flops(fn, *args) / per
        rows.append([name, f"{1e3 * sec:.2f}", f"{fl / 1e9:.2f}", f"{fl / sec / 1e9:.0f}"])
        return sec

    total = row("train: whole step (1 per call)", step1, state)
    row("train: whole step (10 per call, scan)", chunk10, state, per=10)
    row("train: loss + gradient (fwd + bwd)", grad, state.params, x0, key)
    row("train: loss forward only", fwd, state.params, x0, key)
    row("train: dots only, fwd + bwd", dots_grad, state.params, x0, key)
    row("train: Adam update", update, g, state.opt_state, state.params)
    row("train: minibatch draw", draw, key)

    # Sampling: the scan body at a 10 000-sample chunk, trajectory variance on.
    params = state.params
    n = a.batch
    x = jax.random.normal(key, (n, a.dim))
    t = jnp.int32(5)
    net_call = jax.jit(net.apply)
    dots_call = jax.jit(_dots_only_apply)
    sample10 = jax.jit(lambda p, k: chain.reverse(
        lambda xx, tt: net.apply(p, xx, tt), truncate(schedule, 10), k, n, (a.dim,),
        observers={"hal": mj.window_variance([(0, 10)], clock="index")}, scalar_t=True).x)
    row("sample: reverse step + variance (10 per call)", sample10, params, key, per=10)
    row("sample: network call (scalar t)", net_call, params, x, t)
    row("sample: dots only", dots_call, params, x, t)

    print(f"matmul peak here ({a.batch}x128x128): {peak:.0f} GFLOP/s; train step "
          f"{1e3 * total:.1f} ms = {1 / total:.1f} steps/s")
    print_table(["piece", "ms per step", "GFLOP per step", "GFLOP/s"], rows)


if __name__ == "__main__":
    main()
