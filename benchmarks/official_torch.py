r"""Time the paper's own PyTorch toy code (../shared/official, unchanged) on this machine.

    .venv-torch/bin/python benchmarks/official_torch.py --case=train_2d
    .venv-torch/bin/python benchmarks/official_torch.py --case=sample_2d_10000 --sample_steps=100

Nothing of the official code is copied: this script imports its `ddpm_torch.toy` package from
`--official_dir` (with the do-nothing `wandb` / `torchvision` / `sklearn` stubs beside it) and
times the official objects as its `train_toy.py` builds them: `Decoder(d, 128, 3)`, Adam 1e-3,
`GaussianDiffusion` (linear betas 0.001 -> 0.2, T = 1000, eps prediction, fixed-large),
`Trainer.step` on `DataStreamer` batches of 10 000, and `p_sample_step` for sampling (`--sample_steps`
of the 1 000 reverse steps, the rate scaled to 1 000: every step costs the same). Two threads,
as the 2-core CI machine; median of `--reps` timed runs after a warm-up. Prints one JSON line
with the keys `benchmarks.bench_core` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _import_official(official_dir: str):
    sys.path.insert(0, os.path.join(official_dir, "stubs"))
    sys.path.insert(0, os.path.join(official_dir, "gaussian_experiments"))
    import torch
    from ddpm_torch import toy

    torch.set_num_threads(2)
    return torch, toy


def _diffusion(toy):
    betas = toy.get_beta_schedule("linear", beta_start=0.001, beta_end=0.2, timesteps=1000)
    return toy.GaussianDiffusion(betas=betas, model_mean_type="eps", model_var_type="fixed-large",
                                 loss_type="mse")


def case_train(toy, torch, dim: int, steps: int, reps: int) -> dict:
    if dim == 2:
        loader = toy.DataStreamer("gaussian25", batch_size=10_000, num_batches=10)
    else:
        loader = toy.DataStreamer("gaussian1d", batch_size=10_000, num_batches=2, modes=[1, 2, 3])
    torch.manual_seed(0)
    model = toy.Decoder(dim, 128, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainer = toy.Trainer(model=model, optimizer=opt, diffusion=_diffusion(toy), epochs=1,
                          trainloader=loader,
                          args=types.SimpleNamespace(log_results=False, dataset="bench"))
    batches = []
    for x in loader:
        batches.append(x)
        if len(batches) == 10:
            break
    for i in range(5):  # warm-up
        trainer.step(batches[i % len(batches)])
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(steps):
            trainer.step(batches[i % len(batches)])
        rates.append(steps / (time.perf_counter() - t0))
    return {"steps_per_s": statistics.median(rates), "runs": rates,
            "peak_rss_mib": peak_rss_mib()}


def case_sample(toy, torch, num: int, steps: int, reps: int) -> dict:
    torch.manual_seed(0)
    model = toy.Decoder(2, 128, 3).eval()
    diffusion = _diffusion(toy)
    rates = []
    with torch.inference_mode():
        for rep in range(reps + 1):  # the first run warms up
            x = torch.randn(num, 2)
            t = torch.empty((num,), dtype=torch.int64)
            t0 = time.perf_counter()
            for ti in range(steps - 1, -1, -1):
                t.fill_(ti)
                x = diffusion.p_sample_step(model, x, t)
            if rep:
                rates.append(num / ((time.perf_counter() - t0) * 1000 / steps))
    return {"samples_per_s": statistics.median(rates), "runs": rates,
            "peak_rss_mib": peak_rss_mib()}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", required=True, help="train_1d | train_2d | sample_2d_<num>")
    p.add_argument("--official_dir", default=os.path.join(os.path.dirname(ROOT), "shared",
                                                          "official"))
    p.add_argument("--train_steps", type=int, default=20)
    p.add_argument("--sample_steps", type=int, default=100)
    p.add_argument("--reps", type=int, default=1)
    a = p.parse_args()
    torch, toy = _import_official(a.official_dir)
    if a.case.startswith("train_"):
        out = case_train(toy, torch, int(a.case[6]), a.train_steps, a.reps)
    elif a.case.startswith("sample_2d_"):
        out = case_sample(toy, torch, int(a.case.split("_")[-1]), a.sample_steps, a.reps)
    else:
        raise SystemExit(f"--case={a.case}: unknown (train_1d, train_2d, sample_2d_<num>)")
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
