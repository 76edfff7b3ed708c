r"""The official PyTorch code beside mi_jax at equal protocol and budget, scored with mi_jax's
labels: bridge / blur rates, mode width against the exact score, and the official statistic
(x0_hat variance over the last 10 steps) as a detector of bridges (AUROC, removed at 96 % kept).

    python -m benchmarks.official_compare --official=runs/official/square_s*.npz \
        --mi_jax=runs/equal/gmm2d --workdir=runs/official_compare

`--official`: files of `benchmarks/official_train.py` (one per seed; comma-separated paths or
globs). `--mi_jax`: finished gmm1d / gmm2d work directories trained at the same protocol (their
metrics hold the same quantities per seed, and the exact score's mode width that both sides are
measured against). Agreement rule, per quantity: the 95 % Welch interval of the difference of
the two means (over seeds) contains 0; with fewer than 2 seeds on a side, "n/a".
Writes `table.md` and `metrics.json` into `--workdir`.
"""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import numpy as np
from absl import flags

from mi_jax import cli
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.evaluation import intervals
from mi_jax.evaluation.mixture import bridge_blur_report
from mi_jax.validation import InputError

QUANTITIES = ("bridge", "blur", "width_vs_exact", "bridges_auroc", "bridges_removed_at_96_kept")
LAYOUTS = {"gaussian25": "square", "gaussian25_rotated": "rotated"}

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined when run as a script, so importing this module for its
    functions leaves absl's global flags alone)."""
    flags.DEFINE_string("official", None,
                        "Comma-separated official_train.py outputs (globs allowed).")
    flags.DEFINE_string("mi_jax", None, "Comma-separated finished gmm1d / gmm2d work directories.")
    flags.DEFINE_string("workdir", None, "Output directory (table.md, metrics.json).")
    flags.DEFINE_float("k", support.DEFAULT_K, "In-support radius in mode standard deviations.")


def config_of(info: dict, means: np.ndarray, std: float):
    """mi_jax's name and mixture for an official run's dataset; refuses one whose modes differ."""
    if info["dataset"] == "gaussian1d":
        modes = [float(m) for m in np.asarray(means).ravel()]
        name = "modes=" + ",".join(f"{m:g}" for m in modes) + f" N={info['size']}"
        mixture = mx.mixture_1d(modes, 0.05)
    else:
        name = LAYOUTS[info["dataset"]]
        mixture = mx.grid_2d(name, 0.05)
    ours = np.asarray(mixture.means)[np.asarray(mixture.mask)]
    theirs = np.asarray(means, np.float64).reshape(len(ours), -1)
    key = lambda a: np.lexsort(np.round(a, 6).T[::-1])
    if not (np.allclose(ours[key(ours)], theirs[key(theirs)], atol=1e-4)
            and np.allclose(np.asarray(mixture.stds)[0], std, rtol=1e-4)):
        raise InputError(f"official={info['dataset']}: its modes are not mi_jax's {name} "
                         "mixture (coordinates differ)")
    return name, mixture


def official_rows(paths: list, oracle_width: dict, k: float, recipe: dict) -> dict:
    """{config name: [per-seed report]} of the official runs, scored with mi_jax's labels; a run
    whose budget or protocol differs from the mi_jax run of the same configuration is refused."""
    out: dict = {}
    for path in paths:
        with np.load(path) as f:
            info = json.loads(str(f["info"]))
            name, mixture = config_of(info, f["means"], float(f["std"]))
            if name not in oracle_width:
                raise InputError(f"official={path}: no mi_jax run of {name} given (--mi_jax)")
            theirs = {"steps": info["steps"], "batch_size": info["batch_size"],
                      "T": info["timesteps"], "width": 128, "lr": 1e-3,
                      "lr_schedule": "constant", "batch_order": "in_order",
                      "num_train": info["size"], "hal_window": [0, info["window"]],
                      "focus_steps": 0, "ema_decay": 0.0}
            if info["dataset"] != "gaussian1d":  # the official 25-mode grid, unshifted
                theirs.update(grid_size=5, grid_shift=0.0)
            differ = [f"{key} {v} vs {recipe[name].get(key)}" for key, v in theirs.items()
                      if recipe[name].get(key) != v]
            if differ:
                raise InputError(f"official={path}: not the protocol of the mi_jax run of {name} "
                                 f"({', '.join(differ)})")
            r = bridge_blur_report(f["x"], f["hal"], mixture, k, oracle_width[name])
        out.setdefault(name, []).append(
            {"seed": info["seed"], "steps": info["steps"], "samples": info["samples"],
             "bridge": r["bridge"], "blur": r["blur"], "width_vs_exact": r["width_vs_exact"],
             "bridges_auroc": r["bridges"]["auroc"],
             "bridges_removed_at_96_kept": r["bridges"]["removed_at_96_kept"],
             "num_bridges": r["bridges"]["num_positive"], "train_s": info["train_s"]})
    return out


def mi_jax_rows(dirs: list) -> tuple:
    """({config name: [per-seed report]}, {config name: exact-score mode width}, {name: recipe})."""
    rows, width, recipe = {}, {}, {}
    for d in dirs:
        d = Path(d)
        if not (d / wd.METRICS_FILE).exists():
            raise InputError(f"mi_jax={d}: holds no finished gmm1d / gmm2d run")
        metrics, cfg = wd.read_json(d / wd.METRICS_FILE), wd.read_config(d)
        for name, b in metrics["bridges"].items():
            width[name] = b["oracle_mode_width"]
            recipe[name] = {key: cfg.get(key) for key in (
                "batch_size", "T", "width", "lr", "lr_schedule", "batch_order", "num_samples",
                "hal_window", "grid_size", "grid_shift")}
            recipe[name]["focus_steps"] = cfg.get("focus_steps") or 0
            recipe[name]["ema_decay"] = cfg.get("ema_decay") or 0.0
            n_train = (metrics.get("configs", {}).get(name, {}).get("num_train")
                       or cfg.get("num_train"))
            recipe[name]["num_train"] = n_train
            # The steps this model trained: an epoch budget stops it before `steps`.
            steps = cfg.get("steps")
            if cfg.get("epochs") and n_train:
                steps = min(steps, cfg["epochs"] * (n_train // cfg["batch_size"]))
            recipe[name]["steps"] = steps
            rows[name] = [{"seed": s, **{q: b[q]["per_seed"][i] for q in QUANTITIES},
                           "num_bridges": b["num_bridges"][i]}
                          for i, s in enumerate(cfg["seeds"])]
    return rows, width, recipe


def welch(a, b) -> tuple:
    """(difference of means a - b, its 95 % Welch interval) over finite values."""
    a = np.asarray([v for v in a if v is not None and math.isfinite(v)], np.float64)
    b = np.asarray([v for v in b if v is not None and math.isfinite(v)], np.float64)
    if a.size < 2 or b.size < 2:
        return float(a.mean() - b.mean()) if a.size and b.size else float("nan"), None
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return diff, (diff, diff)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = intervals.t_quantile_975(max(1, int(math.floor(df)))) * math.sqrt(va + vb)
    return diff, (diff - half, diff + half)


def compare(official: dict, ours: dict, recipe: dict) -> dict:
    table = {}
    for name in official:
        if name not in ours:
            continue
        entry = {"recipe": recipe.get(name), "official": official[name], "mi_jax": ours[name],
                 "quantities": {}}
        for q in QUANTITIES:
            a = [r[q] for r in official[name]]
            b = [r[q] for r in ours[name]]
            diff, ci = welch(a, b)
            agree = None if ci is None else bool(ci[0] <= 0.0 <= ci[1])
            entry["quantities"][q] = {"official": a, "mi_jax": b, "difference": diff,
                                      "interval": ci, "agree": agree}
        table[name] = entry
    return table


def _fmt(q: str, v) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.3f}" if q in ("bridges_auroc", "width_vs_exact") else f"{100 * v:.2f}%"


def markdown(table: dict) -> str:
    lines = ["| configuration | quantity | official (per seed) | mi_jax (per seed) | official - "
             "mi_jax [95 % Welch] | agree |", "|---|---|---|---|---|---|"]
    for name, e in table.items():
        for q, v in e["quantities"].items():
            per = lambda xs: " / ".join(_fmt(q, x) for x in xs)
            ci = v["interval"]
            diff = _fmt(q, v["difference"]) + ("" if ci is None else
                                                f" [{_fmt(q, ci[0])}, {_fmt(q, ci[1])}]")
            agree = "n/a" if v["agree"] is None else ("yes" if v["agree"] else "**no**")
            lines.append(f"| {name} | {q} | {per(v['official'])} | {per(v['mi_jax'])} | {diff} "
                         f"| {agree} |")
    return "\n".join(lines) + "\n"


def _paths(text: str) -> list:
    out = []
    for part in text.split(","):
        found = sorted(glob.glob(part.strip()))
        if not found:
            raise InputError(f"official={text}: {part.strip()!r} matches no file")
        out += found
    return out


def main():
    if not FLAGS.official or not FLAGS.mi_jax:
        raise InputError("official=<unset>: --official and --mi_jax are both required")
    paths = _paths(FLAGS.official)
    ours, width, recipe = mi_jax_rows(FLAGS.mi_jax.split(","))
    official = official_rows(paths, width, FLAGS.k, recipe)
    table = compare(official, ours, recipe)
    out = Path(FLAGS.workdir)
    out.mkdir(parents=True, exist_ok=True)
    wd.write_json(out / "metrics.json", {"k": FLAGS.k, "files": paths, "table": table})
    text = markdown(table)
    wd.write_text(out / "table.md", text)
    print(text)


if __name__ == "__main__":
    define_flags()
    cli.run_main(main)
