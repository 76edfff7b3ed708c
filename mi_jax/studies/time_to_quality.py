r"""Time to quality: how much training compute a CPU recipe needs to reach the quality of the
paper-budget models (issue 38, item 6).

The reference is the finished 2D paper-budget units (`experiments.paper_budget`: the official
protocol, one model per layout and seed). The candidates are the curves of
`experiments.convergence` (each recipe's models sampled and scored every `--eval_every` steps).
Per layout and recipe, a curve point reaches the reference's quality when its mean over seeds is
within the reference's seed spread: bridge rate <= reference mean + reference std, and AUROC of
the official window's variance against bridges >= reference mean - reference std (std over
seeds, ddof 1; with one reference seed, the counting standard error of its rate and the
Hanley-McNeil one of its AUROC). A bar is reached at the first point from which every later
point holds it too (one noisy dip does not count). That point's compute, over the reference's,
is the ratio. A recipe with a decaying learning rate is read off one long run, whose rate at
step s has not yet decayed as a run planned for s steps would have: for such recipes the ratio
is that of the long run's schedule, not of a run sized to reach the bar (not measured here).

Compute is training FLOPs: XLA's count for one forward pass of the network at the run's own
batch (the toy MLP's time path costs per distinct timestep, so the per-sample cost depends on
the batch), times 3 for forward and backward, times batch and steps. Measured seconds are not
compared: a unit's `seconds.train` times only its last sitting, and units resume across
sittings on a shared CPU.

    python -m experiments.time_to_quality --reference=results/paper --curves=runs/convergence \
        --workdir=runs/time_to_quality
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import plots
from mi_jax import workdir as wd
from mi_jax.nets import make_mlp
from mi_jax.sweeps import finite_mean
from mi_jax.training import train as tr
from mi_jax.validation import InputError

LAYOUTS = ("square", "rotated")


@functools.lru_cache(maxsize=None)
def forward_flops(width: int, batch: int, dim: int = 2, T: int = 1000, tied: bool = True) -> float:
    """XLA's FLOP count of one forward pass of the toy MLP over `batch` samples, per sample."""
    net = make_mlp(dim, width, 3, tied, num_timesteps=T)
    params = net.init(jax.random.key(0))
    n = batch
    lowered = jax.jit(net.apply).lower(params, jnp.zeros((n, dim)), jnp.zeros((n,), jnp.int32))
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"]) / n


def training_flops(steps: int, batch: int, width: int) -> float:
    """Forward and backward (3 forward passes) over steps x batch samples."""
    return 3.0 * forward_flops(width, batch) * float(steps) * float(batch)


def _finite(values) -> list:
    """The finite numbers among values (a NaN AUROC is saved as null)."""
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def reference(root) -> dict:
    """{layout: {'bridge': [per seed], 'auroc': [...], 'hallucinated': [...], 'num_bridges',
    'num_samples', 'flops', 'grid_size', 'k'}} of the finished 2D paper-budget units under `root`
    (refuses a root with none)."""
    from mi_jax.studies import paper_budget as pb

    out: dict = {}
    for u in pb.units():
        if u.study != "gmm2d" or pb.status(root, u) != "finished":
            continue
        d = Path(root) / pb.UNITS_DIR / u.name
        cfg = wd.read_config(d)
        metrics = wd.read_json(d / wd.METRICS_FILE)
        (layout, b), = metrics["bridges"].items()
        with np.load(d / tr.TRAIN_LOSSES) as f:  # the steps it trained (an epoch budget may stop
            steps = int(f["losses"].shape[1])    # it before cfg["steps"])
        ref = out.setdefault(layout, {"bridge": [], "auroc": [], "hallucinated": [],
                                      "num_samples": cfg["num_samples"], "num_bridges": [],
                                      "flops": [], "grid_size": cfg["grid_size"], "k": cfg["k"]})
        ref["bridge"].append(b["bridge"]["mean"])
        ref["auroc"].append(b["bridges_auroc"]["mean"])
        ref["hallucinated"].append(b["hallucinated"]["mean"])
        ref["num_bridges"].append(b["num_bridges"][0])
        ref["flops"].append(training_flops(steps, cfg["batch_size"], cfg["width"]))
    if not out:
        raise InputError(f"reference={root}: holds no finished 2D paper-budget unit "
                         "(python -m experiments.paper_budget)")
    return out


def _band(values: list, counting_se: float) -> tuple:
    """(mean, spread): the seed std (ddof 1), or the counting standard error of one seed."""
    mean = float(np.mean(values))
    spread = float(np.std(values, ddof=1)) if len(values) >= 2 else counting_se
    return mean, spread


def _auroc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley-McNeil standard error of an AUROC."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc))
    return math.sqrt(max(var, 0.0) / max(n_pos * n_neg, 1))


def bars(ref: dict) -> dict:
    """The quality a curve must reach: bridge rate at most, AUROC at least."""
    n = ref["num_samples"]
    p = float(np.mean(ref["bridge"]))
    bridge_mean, bridge_spread = _band(ref["bridge"], math.sqrt(p * (1 - p) / n))
    aurocs = _finite(ref["auroc"])
    if not aurocs:
        raise InputError("reference: no unit of this layout has a finite AUROC (no bridges)")
    pos = int(np.mean(ref["num_bridges"]))
    neg = int(round(n * (1 - float(np.mean(ref["hallucinated"]))))) - pos  # blur left out
    auroc_mean, auroc_spread = _band(aurocs, _auroc_se(float(np.mean(aurocs)), pos, neg))
    return {"bridge_max": bridge_mean + bridge_spread, "bridge_mean": bridge_mean,
            "auroc_min": auroc_mean - auroc_spread, "auroc_mean": auroc_mean,
            "seeds": len(ref["bridge"]), "auroc_seeds": len(aurocs)}


def curves(conv_dir, grid_size: int | None = None, k: float | None = None) -> dict:
    """{recipe: {layout: [(step, train seconds, mean bridge, mean AUROC)]}, 'batch'/'width' per
    recipe} from a finished `experiments.convergence` directory."""
    conv_dir = Path(conv_dir)
    if not (conv_dir / wd.METRICS_FILE).exists():
        raise InputError(f"curves={conv_dir}: holds no finished experiments.convergence run")
    metrics = wd.read_json(conv_dir / wd.METRICS_FILE)
    cfg = wd.read_config(conv_dir)
    for name, want in (("grid_size", grid_size), ("k", k)):
        if want is not None and cfg.get(name) != want:
            raise InputError(f"curves={conv_dir}: its {name}={cfg.get(name)} is not the "
                             f"reference's {want}")
    layouts = [name.strip() for name in cfg["layouts"].split(",")]
    seeds = len(cfg["seeds"])
    out = {}
    for recipe, result in metrics["results"].items():
        rows = {layout: [] for layout in layouts}
        for point in result["curve"]:
            for c, layout in enumerate(layouts):  # models are config-major: layout, then seed
                models = point["models"][c * seeds:(c + 1) * seeds]
                rows[layout].append((point["step"], point["train_seconds"],
                                     float(np.mean([m["bridge"] for m in models])),
                                     finite_mean([m["bridges"]["auroc"] for m in models])))
        out[recipe] = {"batch": result["recipe"]["batch_size"],
                       "width": result["recipe"]["width"], "layouts": rows}
    return out


def reached(points: list, bar: dict) -> dict:
    """Per bar (bridge rate, AUROC, both): the first point (step, seconds) from which every later
    point holds it (None: the curve does not end holding it). A NaN AUROC holds no bar."""
    first = {"bridge": None, "auroc": None, "both": None}
    for key in first:
        for step, seconds, bridge, auroc in reversed(points):
            ok = {"bridge": bridge <= bar["bridge_max"], "auroc": auroc >= bar["auroc_min"]}
            ok["both"] = ok["bridge"] and ok["auroc"]
            if not ok[key]:
                break
            first[key] = {"step": step, "seconds": seconds}
    return first


def run(reference_dir, conv_dir, workdir, log=print) -> dict:
    refs = reference(reference_dir)
    first_ref = next(iter(refs.values()))
    found = curves(conv_dir, first_ref["grid_size"], first_ref["k"])
    table, rows = {}, ["| layout | recipe | reference (seeds) | reached: bridges | reached: "
                       "AUROC | reached: both | FLOPs ratio |", "|---|---|---|---|---|---|---|"]
    for layout, ref in refs.items():
        bar = bars(ref)
        ref_flops = float(np.mean(ref["flops"]))
        for recipe, c in found.items():
            if layout not in c["layouts"]:
                continue
            first = reached(c["layouts"][layout], bar)
            both = first["both"]
            ratio = (training_flops(both["step"], c["batch"], c["width"]) / ref_flops
                     if both else None)
            table.setdefault(layout, {})[recipe] = {**first, "bars": bar, "flops_ratio": ratio,
                                                    "reference_flops": ref_flops}
            fmt = lambda r: "not reached" if r is None else f"step {r['step']}"  # noqa: E731
            rows.append(f"| {layout} | {recipe} | bridges {100 * bar['bridge_mean']:.3f} % "
                        f"(<= {100 * bar['bridge_max']:.3f} %), AUROC {bar['auroc_mean']:.3f} "
                        f"(>= {bar['auroc_min']:.3f}), {bar['seeds']} | {fmt(first['bridge'])} | "
                        f"{fmt(first['auroc'])} | {fmt(both)} | "
                        + ("-" if ratio is None else f"{ratio:.3f}") + " |")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _figure(workdir, refs, found)
    wd.write_text(workdir / "table.md", "\n".join(rows) + "\n")
    metrics = {"experiment": "time_to_quality", "table": table,
               "reference": str(reference_dir), "curves": str(conv_dir),
               "provenance": wd.provenance()}
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    log("\n".join(rows))
    return metrics


def _figure(workdir: Path, refs: dict, found: dict) -> None:
    layouts = list(refs)
    fig, axes = plots.figure(nrows=len(layouts), ncols=2, width=4.4, height=3.2)
    for i, layout in enumerate(layouts):
        bar = bars(refs[layout])
        ref_flops = float(np.mean(refs[layout]["flops"]))
        for recipe, c in found.items():
            pts = c["layouts"].get(layout)
            if not pts:
                continue
            x = [training_flops(p[0], c["batch"], c["width"]) / ref_flops for p in pts]
            axes[i, 0].plot(x, [100 * p[2] for p in pts], "o-", label=recipe)
            axes[i, 1].plot(x, [p[3] for p in pts], "o-", label=recipe)
        for j, (mean, edge, name) in enumerate(((100 * bar["bridge_mean"],
                                                 100 * bar["bridge_max"], "bridge rate (%)"),
                                                (bar["auroc_mean"], bar["auroc_min"],
                                                 "AUROC vs bridges"))):
            ax = axes[i, j]
            ax.axhline(mean, color="k", lw=1)
            ax.axhline(edge, color="k", lw=0.8, ls="--")
            ax.axvline(1.0, color="grey", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_xlabel("training FLOPs / paper budget's")
            ax.set_title(f"{layout}: {name} (line: paper budget, dashed: its seed spread)",
                         fontsize=8)
            ax.legend(fontsize=7)
    wd.save_figure(fig, workdir / "time_to_quality.png")
