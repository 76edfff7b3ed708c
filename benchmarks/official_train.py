r"""Train the paper's own PyTorch toy code (../shared/official, unchanged) at a given budget, sample
it with its own sampler and save what mi_jax needs to score it with its own labels.

    .venv-torch/bin/python benchmarks/official_train.py --dataset=gaussian25 --steps=6000 \
        --samples=100000 --seed=0 --out=runs/official/square_s0.npz

Nothing of the official code is copied: its `ddpm_torch` package is imported from
`--official_dir` (with the do-nothing stubs beside it), and the model, optimiser, data and
sampler are the objects its `train_toy.py` / `train_toy_filter.py` build: `Decoder(d, 128, 3)`,
Adam 1e-3, `GaussianDiffusion` (linear betas 0.001 -> 0.2, T = 1000, eps, fixed-large),
`Trainer.step` on `DataStreamer` batches of 10 000 in the data's fixed order, and
`p_sample_save_all` for sampling, whose x0_hat trajectory gives the official statistic: the
variance over the last `--window` steps (np.var, ddof 0; mean over the dimensions in 2D).
Samples and modes are saved in the official data's coordinates (the 2D grids divided by the
data's standard deviation), which are mi_jax's (`mi_jax.data.mixtures.grid_2d`).
`benchmarks/official_compare.py` scores the saved files beside mi_jax runs.

Training saves `<out>.ckpt.pt` every `--checkpoint_every` steps (weights, Adam's moments, the
drawn data -- the official data is unseeded -- torch's RNG state, losses and clock); the same
command continues from it, so a run interrupted or split over sittings (`--stop_at`) trains as
the uninterrupted run would. The checkpoint is removed once the output is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("gaussian1d", "gaussian25", "gaussian25_rotated")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line naming the flag, exit 2 (as mi_jax's entry points)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def parse(argv=None):
    ap = _Parser(description=__doc__.splitlines()[0])
    ap.add_argument("--official_dir", default=os.path.join(os.path.dirname(ROOT), "shared",
                                                           "official"))
    ap.add_argument("--dataset", default="gaussian25", choices=DATASETS)
    ap.add_argument("--modes", default="1,2,3", help="1D means (gaussian1d only).")
    ap.add_argument("--size", type=int, default=None,
                    help="Training points (default: run.sh's, 20 000 in 1D, 100 000 in 2D).")
    ap.add_argument("--steps", type=int, required=True, help="Training steps of batch 10 000.")
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=10_000, help="Samples per sampler call.")
    ap.add_argument("--window", type=int, default=10, help="Last reverse steps of the variance.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timesteps", type=int, default=1000)
    ap.add_argument("--out", required=True, help="Output .npz file.")
    ap.add_argument("--checkpoint_every", type=int, default=2000,
                    help="Save the training state to <out>.ckpt.pt every this many steps; a run "
                    "started again with the same flags continues from it.")
    ap.add_argument("--stop_at", type=int, default=None,
                    help="Stop after the checkpoint at this step (run the same command again to "
                    "continue): splits a long run over sittings.")
    a = ap.parse_args(argv)
    for name in ("steps", "samples", "chunk", "window", "threads", "timesteps",
                 "checkpoint_every"):
        if getattr(a, name) < 1:
            ap.error(f"--{name}={getattr(a, name)}: must be >= 1")
    if a.size is None:
        a.size = 20_000 if a.dataset == "gaussian1d" else 100_000
    if a.size < 10_000 or a.size % 10_000:
        # The official DataStreamer serves whole batches only: any remainder would never be
        # trained on, yet be recorded as the training-set size.
        ap.error(f"--size={a.size}: must be a positive multiple of the batch of 10 000")
    if a.stop_at is not None and not (1 <= a.stop_at < a.steps
                                      and a.stop_at % a.checkpoint_every == 0):
        ap.error(f"--stop_at={a.stop_at}: must be a multiple of --checkpoint_every="
                 f"{a.checkpoint_every} below --steps={a.steps}")
    if not os.path.isdir(os.path.join(a.official_dir, "gaussian_experiments")):
        ap.error(f"--official_dir={a.official_dir}: holds no gaussian_experiments/")
    return a


def _run_identity(a) -> dict:
    """What a checkpoint must share with the command continuing it."""
    return {"dataset": a.dataset, "modes": a.modes if a.dataset == "gaussian1d" else None,
            "size": a.size, "steps": a.steps, "seed": a.seed, "timesteps": a.timesteps}


def main(argv=None) -> dict | None:
    a = parse(argv)
    sys.path.insert(0, os.path.join(a.official_dir, "stubs"))
    sys.path.insert(0, os.path.join(a.official_dir, "gaussian_experiments"))
    import torch
    from ddpm_torch import toy

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    batches = a.size // 10_000
    if a.dataset == "gaussian1d":
        modes = [float(m) for m in a.modes.split(",")]
        loader = toy.DataStreamer("gaussian1d", batch_size=10_000, num_batches=batches, modes=modes)
        dim, means, std = 1, np.asarray(modes, np.float64)[:, None], 0.05
    else:
        loader = toy.DataStreamer(a.dataset, batch_size=10_000, num_batches=batches)
        data = loader.dataset
        dim, means, std = 2, np.asarray(data.modes, np.float64) / data.stdev, 0.05 / data.stdev
    betas = toy.get_beta_schedule("linear", beta_start=0.001, beta_end=0.2, timesteps=a.timesteps)
    diffusion = toy.GaussianDiffusion(betas=betas, model_mean_type="eps",
                                      model_var_type="fixed-large", loss_type="mse")
    model = toy.Decoder(dim, 128, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainer = toy.Trainer(model=model, optimizer=opt, diffusion=diffusion, epochs=1,
                          trainloader=loader,
                          args=types.SimpleNamespace(log_results=False, dataset=a.dataset))
    model.train()
    losses, step, before = [], 0, 0.0
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    ckpt = a.out + ".ckpt.pt"
    if os.path.exists(ckpt):  # continue exactly: same data, weights, Adam moments and RNG state
        state = torch.load(ckpt, weights_only=False)
        if state["run"] != _run_identity(a):
            print(f"error: --out={a.out}: its checkpoint {ckpt} is of another run "
                  f"({state['run']}); remove it or choose another --out", file=sys.stderr)
            sys.exit(2)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        loader.dataset.data = state["data"]
        torch.set_rng_state(state["torch_rng"])
        losses, step, before = list(state["losses"]), state["step"], state["train_s"]
        print(f"[official train] resuming from the checkpoint at step {step}", flush=True)
    t0, first, skip = time.perf_counter(), step, step % batches  # a resumed epoch skips the seen
    while step < a.steps:
        for x in loader:  # one epoch: the fixed data in order, as the official Trainer walks it
            if skip:
                skip -= 1
                continue
            trainer.step(x)
            losses.append(trainer.stats.extract()["loss"] if hasattr(trainer.stats, "extract")
                          else float("nan"))
            trainer.stats.reset() if hasattr(trainer.stats, "reset") else None
            step += 1
            if step % 500 == 0 or step == a.steps:
                rate = (step - first) / (time.perf_counter() - t0)
                print(f"[official train] step {step}/{a.steps}  loss {losses[-1]:.4f}  "
                      f"{rate:.1f} steps/s  ETA {(a.steps - step) / rate:,.0f}s", flush=True)
            if step % a.checkpoint_every == 0 and step < a.steps:
                tmp = ckpt + ".tmp"
                torch.save({"run": _run_identity(a), "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "data": loader.dataset.data,
                            "torch_rng": torch.get_rng_state(), "losses": losses, "step": step,
                            "train_s": before + time.perf_counter() - t0}, tmp)
                os.replace(tmp, ckpt)
                if step == a.stop_at:
                    print(f"[official train] stopped at step {step} (--stop_at); the same "
                          "command continues", flush=True)
                    return None
            if step >= a.steps:
                break
    train_s = before + time.perf_counter() - t0
    model.eval()
    xs, hal, t0 = [], [], time.perf_counter()
    for start in range(0, a.samples, a.chunk):
        n = min(a.chunk, a.samples - start)
        with torch.no_grad():
            x, _, _, pred_x0 = diffusion.p_sample_save_all(model, shape=(n, dim),
                                                           seed=a.seed * 1_000_003 + start)
        tail = np.stack([p.numpy() for p in pred_x0[-a.window:]], axis=1)  # (n, window, dim)
        hal.append(np.var(tail, axis=1).mean(axis=-1))
        xs.append(x.numpy().reshape(n, dim))
        rate = (start + n) / (time.perf_counter() - t0)
        print(f"[official sample] {start + n}/{a.samples}  {rate:,.0f} samples/s", flush=True)
    sample_s = time.perf_counter() - t0
    info = {"impl": "official-pytorch", "dataset": a.dataset, "size": a.size, "steps": a.steps,
            "batch_size": 10_000, "samples": a.samples, "window": a.window, "seed": a.seed,
            "timesteps": a.timesteps, "train_s": train_s, "sample_s": sample_s,
            "torch": torch.__version__, "threads": a.threads}
    tmp = a.out + ".tmp.npz"
    np.savez(tmp, x=np.concatenate(xs), hal=np.concatenate(hal),
             losses=np.asarray(losses, np.float32), means=means, std=np.float64(std),
             info=json.dumps(info))
    os.replace(tmp, a.out)
    if os.path.exists(ckpt):  # the output holds what the checkpoint was kept for
        os.remove(ckpt)
    print(json.dumps(info), flush=True)
    return info


if __name__ == "__main__":
    main()
