r"""A PyTorch stand-in for the paper's official toy code, to time it on *this* machine.

    .venv-torch/bin/python benchmarks/reference_torch.py --case=train_2d
    .venv-torch/bin/python benchmarks/reference_torch.py --case=sample_2d_10000

Written for mi_jax from the description of the official `gaussian_experiments` code in the
paper digest (not copied from it): the `Decoder` MLP (width 128, three weight-tied temporal
layers, each calling its own `enc(t_emb)`, so the time path runs per sample and per layer),
linear betas 0.001 -> 0.2 over T = 1000, epsilon-prediction MSE, Adam 1e-3, batches taken in
order from a fixed data array, and ancestral sampling with the fixed-large variance, one
network call per step with t broadcast to every sample. It measures what
`../shared/perf-reference.md` measured, the same way (torch.set_num_threads(2), warm-up, median
of `--reps` timed runs), so `benchmarks.bench_core --reference_python=...` can put the two
implementations side by side in one session. It needs only torch and numpy (not a project
dependency: see BUILD_NOTES.md) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch
from torch import nn

T = 1000
WIDTH = 128


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class TemporalLayer(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width, bias=False)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.enc = nn.Linear(width, width)
        self.act = nn.LeakyReLU(0.02)

    def forward(self, x, t_emb):
        out = self.fc1(self.act(self.norm1(x)))
        out = out + self.enc(t_emb)
        out = self.fc2(self.act(self.norm2(out)))
        return out + x


class Decoder(nn.Module):
    def __init__(self, dim: int, width: int = WIDTH, num_layers: int = 3):
        super().__init__()
        self.width = width
        self.in_fc = nn.Linear(dim, width, bias=False)
        self.t_proj = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.02))
        layer = TemporalLayer(width)
        self.layers = nn.ModuleList([layer] * num_layers)  # one module three times: tied
        self.out_norm = nn.LayerNorm(width)
        self.out_fc = nn.Linear(width, dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x, t):
        t_emb = self.t_proj(timestep_embedding(t, self.width))
        h = self.in_fc(x)
        for layer in self.layers:
            h = layer(h, t_emb)
        return self.out_fc(self.out_norm(h))


class Diffusion:
    def __init__(self):
        betas = np.linspace(0.001, 0.2, T, dtype=np.float64)
        alphas_bar = np.cumprod(1.0 - betas)
        alphas_bar_prev = np.append(1.0, alphas_bar[:-1])
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)
        self.sqrt_ab, self.sqrt_1m_ab = as_t(np.sqrt(alphas_bar)), as_t(np.sqrt(1 - alphas_bar))
        self.recip_sqrt_ab = as_t(np.sqrt(1 / alphas_bar))
        self.recip_m1_sqrt_ab = as_t(np.sqrt(1 / alphas_bar - 1))
        self.coef_x0 = as_t(betas * np.sqrt(alphas_bar_prev) / (1 - alphas_bar))
        self.coef_xt = as_t((1 - alphas_bar_prev) * np.sqrt(1 - betas) / (1 - alphas_bar))
        post_var = betas * (1 - alphas_bar_prev) / (1 - alphas_bar)
        self.sigma = as_t(np.sqrt(np.append(post_var[1], betas[1:])))  # fixed-large

    def loss(self, model, x0):
        t = torch.randint(0, T, (x0.shape[0],))
        noise = torch.randn_like(x0)
        x_t = self.sqrt_ab[t][:, None] * x0 + self.sqrt_1m_ab[t][:, None] * noise
        return ((model(x_t, t) - noise) ** 2).mean()

    @torch.inference_mode()
    def sample(self, model, n, dim, steps=T):
        """Ancestral sampling over the last `steps` steps of the chain (all T by default)."""
        x = torch.randn(n, dim)
        for i in reversed(range(steps)):
            t = torch.full((n,), i, dtype=torch.int64)
            eps = model(x, t)
            x0_hat = self.recip_sqrt_ab[i] * x - self.recip_m1_sqrt_ab[i] * eps
            mean = self.coef_x0[i] * x0_hat + self.coef_xt[i] * x
            x = mean + (self.sigma[i] * torch.randn_like(x) if i > 0 else 0.0)
        return x


def grid_data(dim: int, n: int) -> torch.Tensor:
    """Round-robin modes, std 0.05: the 25-mode 2D grid (normalised) or 1D modes {1, 2, 3}."""
    rng = np.random.default_rng(0)
    if dim == 2:
        modes = np.array([(2 * i, 2 * j) for i in range(-2, 3) for j in range(-2, 3)], float)
        x = (modes[np.arange(n) % 25] + 0.05 * rng.standard_normal((n, 2))) / math.sqrt(0.05**2 + 8)
    else:
        x = np.array([1.0, 2.0, 3.0])[np.arange(n) % 3, None] + 0.05 * rng.standard_normal((n, 1))
    return torch.as_tensor(x, dtype=torch.float32)


def time_runs(fn, reps: int, warm_up=None) -> list[float]:
    (warm_up or fn)()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def case_train(dim: int, batch: int, steps: int, reps: int) -> dict:
    model, diffusion = Decoder(dim), Diffusion()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = grid_data(dim, 100_000)
    pos = [0]

    def run():
        for _ in range(steps):
            start = pos[0] % data.shape[0]
            x0 = data[start:start + batch]
            pos[0] += batch
            loss = diffusion.loss(model, x0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    secs = time_runs(run, reps)
    rates = [steps / s for s in secs]
    return {"steps_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "peak_rss_mib": peak_rss_mib()}


def case_sample(dim: int, num: int, steps: int, reps: int) -> dict:
    model, diffusion = Decoder(dim), Diffusion()
    model.eval()
    secs = time_runs(lambda: diffusion.sample(model, num, dim, steps), reps,
                     warm_up=lambda: diffusion.sample(model, num, dim, 2))
    rates = [num * steps / T / s for s in secs]  # samples/s of a full T-step chain
    return {"samples_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "timed_steps": steps, "peak_rss_mib": peak_rss_mib()}


def case_matmul(reps: int) -> dict:
    out = {}
    for m, k, n in [(10_000, 128, 128), (1_000, 128, 128), (2048, 2048, 2048)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        inner = 20 if m < 2048 else 3
        secs = time_runs(lambda: [a @ b for _ in range(inner)], reps)
        out[f"matmul_{m}x{k}x{n}_gflops"] = 2 * m * k * n * inner / statistics.median(secs) / 1e9
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", required=True,
                   help="train_1d | train_2d | sample_2d_<n> | matmul")
    p.add_argument("--train_steps", type=int, default=20, help="steps per timed training run")
    p.add_argument("--sample_steps", type=int, default=T,
                   help="reverse steps per timed sampling run (the rate is scaled to T steps; "
                        "each step costs the same)")
    p.add_argument("--reps", type=int, default=3, help="timed runs after one warm-up")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1234)
    if args.case.startswith("train_"):
        result = case_train(int(args.case[6]), 10_000, args.train_steps, args.reps)
    elif args.case.startswith("sample_2d_"):
        result = case_sample(2, int(args.case.split("_")[-1]), args.sample_steps, args.reps)
    elif args.case == "matmul":
        result = case_matmul(args.reps)
    else:
        raise SystemExit(f"--case: unknown case {args.case!r}")
    result["torch"] = torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
