r"""The official PyTorch code beside mi_jax at equal protocol and budget, scored with mi_jax's
labels: bridge / blur rates, mode width against the exact score, and the official statistic
(x0_hat variance over the last 10 steps) as a detector of bridges (AUROC, removed at 96 % kept).

    python -m benchmarks.official_compare --official=runs/official/square_s*.npz \
        --mi_jax=runs/equal --workdir=runs/official_compare

`--official`: files of `benchmarks/official_train.py` (one per seed; comma-separated paths or
globs). `--mi_jax`: finished gmm1d / gmm2d work directories trained at the same protocol (their
metrics hold the same quantities per seed, and the exact score's mode width that both sides are
measured against); the official samples are labelled with each mi_jax run's own in-support radius
k. Agreement rule, per quantity: the 95 % Welch interval of the difference of the two means (over
seeds) contains 0; with fewer than 2 seeds on a side, "n/a". With 3 seeds a side the test has
little power: "agree" means no difference was found at that spread, not that none exists.
Writes `table.md` and `metrics.json` into `--workdir`.
"""

from __future__ import annotations

import glob
import json
import math
import os
from pathlib import Path

import numpy as np
from absl import flags

from mi_jax import cli
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.evaluation import intervals
from mi_jax.evaluation.mixture import bridge_blur_report
from mi_jax.validation import InputError

QUANTITIES = ("bridge", "blur", "width_vs_exact", "bridges_auroc", "bridges_removed_at_96_kept")
# The official toy code's protocol beyond its budget (train_toy.py, ddpm_torch/toy.py): width 128,
# one TemporalLayer repeated (tied weights), no input bias, Adam 1e-3 constant, batches in the
# data's order, linear betas 0.001 -> 0.2, modes of std 0.05, float32, no extra loss terms.
OFFICIAL_CONSTANTS = {"width": 128, "lr": 1e-3, "lr_schedule": "constant",
                      "batch_order": "in_order", "beta_start": 1e-3, "beta_end": 0.2, "std": 0.05,
                      "tied": True, "input_bias": False, "jacobian_weight": 0.0,
                      "compute_dtype": "float32", "focus_steps": 0, "ema_decay": 0.0}
LAYOUTS = {"gaussian25": "square", "gaussian25_rotated": "rotated"}

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined when run as a script, so importing this module for its
    functions leaves absl's global flags alone)."""
    flags.DEFINE_string("official", None,
                        "Comma-separated official_train.py outputs (globs allowed).")
    flags.DEFINE_string("mi_jax", None, "Comma-separated finished gmm1d / gmm2d work directories.")
    flags.DEFINE_string("workdir", None, "Output directory (table.md, metrics.json).")


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


def official_rows(paths: list, oracle_width: dict, recipe: dict) -> dict:
    """{config name: [per-seed report]} of the official runs, scored with mi_jax's labels at the
    mi_jax run's k; a run whose budget or protocol differs from the mi_jax run of the same
    configuration, or a seed given twice, is refused."""
    out: dict = {}
    for path in paths:
        with np.load(path) as f:
            info = json.loads(str(f["info"]))
            name, mixture = config_of(info, f["means"], float(f["std"]))
            if name not in oracle_width:
                raise InputError(f"official={path}: no mi_jax run of {name} given (--mi_jax)")
            theirs = dict(OFFICIAL_CONSTANTS, steps=info["steps"],
                          batch_size=info["batch_size"], T=info["timesteps"],
                          num_train=info["size"], hal_window=[0, info["window"]])
            if info["dataset"] != "gaussian1d":  # the official 25-mode grid, unshifted
                theirs.update(grid_size=5, grid_shift=0.0)
            differ = [f"{key} {v} vs {recipe[name].get(key)}" for key, v in theirs.items()
                      if recipe[name].get(key) != v]
            if differ:
                raise InputError(f"official={path}: not the protocol of the mi_jax run of {name} "
                                 f"({', '.join(differ)})")
            r = bridge_blur_report(f["x"], f["hal"], mixture, recipe[name]["k"],
                                   oracle_width[name])
        if any(row["seed"] == info["seed"] for row in out.get(name, [])):
            raise InputError(f"official={path}: a second run of {name} with seed {info['seed']} "
                             "(each seed counts once)")
        out.setdefault(name, []).append(
            {"seed": info["seed"], "steps": info["steps"], "samples": info["samples"],
             "bridge": r["bridge"], "blur": r["blur"], "width_vs_exact": r["width_vs_exact"],
             "bridges_auroc": r["bridges"]["auroc"],
             "bridges_removed_at_96_kept": r["bridges"]["removed_at_96_kept"],
             "num_bridges": r["bridges"]["num_positive"], "train_s": info["train_s"]})
    return out


def _study_config(d: Path) -> dict:
    """A gmm1d / gmm2d directory's config with every field its config.json leaves out (version 1
    omitted unset ones) at the study's own default."""
    from mi_jax.studies import gmm1d, gmm2d

    saved = wd.read_config(d)
    study = gmm2d if "grid_size" in saved or "layout" in saved else gmm1d
    return study.Config.from_saved(saved).to_dict()


def mi_jax_rows(dirs: list) -> tuple:
    """({config name: [per-seed report]}, {config name: exact-score mode width}, {name: recipe}).
    Directories holding the same configuration (the paper budget's one-seed units) pool their
    seeds when their protocols agree; another protocol or a seed given twice is refused."""
    rows, widths, recipe = {}, {}, {}
    for d in dirs:
        d = Path(d)
        if not (d / wd.METRICS_FILE).exists():
            raise InputError(f"mi_jax={d}: holds no finished gmm1d / gmm2d run")
        metrics, cfg = wd.read_json(d / wd.METRICS_FILE), _study_config(d)
        for name, b in metrics["bridges"].items():
            mine = {key: cfg.get(key) for key in (
                "batch_size", "T", "width", "lr", "lr_schedule", "batch_order", "num_samples",
                "hal_window", "grid_size", "grid_shift", "k", *OFFICIAL_CONSTANTS)}
            n_train = (metrics.get("configs", {}).get(name, {}).get("num_train")
                       or cfg.get("num_train"))
            mine["num_train"] = n_train
            # The steps this model trained: an epoch budget stops it before `steps`.
            steps = cfg.get("steps")
            if cfg.get("epochs") and n_train:
                steps = min(steps, cfg["epochs"] * (n_train // cfg["batch_size"]))
            mine["steps"] = steps
            new = [{"seed": s, **{q: b[q]["per_seed"][i] for q in QUANTITIES},
                    "num_bridges": b["num_bridges"][i]} for i, s in enumerate(cfg["seeds"])]
            if name in recipe:
                differ = [f"{key} {v} vs {mine.get(key)}" for key, v in recipe[name].items()
                          if mine.get(key) != v]
                if differ:
                    raise InputError(f"mi_jax={d}: its {name} is of another protocol than an "
                                     f"earlier directory's ({', '.join(differ)})")
                twice = sorted({r["seed"] for r in new} & {r["seed"] for r in rows[name]})
                if twice:
                    raise InputError(f"mi_jax={d}: seed(s) {twice} of {name} given twice")
            recipe[name] = mine
            rows[name] = rows.get(name, []) + new
            widths.setdefault(name, []).append(b["oracle_mode_width"])
    width = {name: float(np.mean(w)) for name, w in widths.items()}
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


def protocol_line(name: str, e: dict) -> str:
    """What both sides of one configuration ran: the shared protocol and the sample counts."""
    r, off, ours = e["recipe"], e["official"], e["mi_jax"]
    seeds = lambda rows: ", ".join(str(row["seed"]) for row in rows)
    return (f"- {name}: {r['steps']} steps x batch {r['batch_size']} on {r['num_train']} points, "
            f"width {r['width']}, Adam {r['lr']:g} {r['lr_schedule']}, {r['batch_order']} "
            f"batches, T = {r['T']}, window t in [{r['hal_window'][0]}, {r['hal_window'][1]}), "
            f"labels at k = {r['k']:g}; official seeds {seeds(off)} ({off[0]['samples']} samples "
            f"each, training {sum(row['train_s'] for row in off) / len(off):.0f} s per seed on "
            f"average), mi_jax "
            f"seeds {seeds(ours)} ({r['num_samples']} samples each)")


def markdown(table: dict) -> str:
    lines = [protocol_line(name, e) for name, e in table.items()]
    lines += ["", "Agreement: the 95 % Welch interval of official - mi_jax (means over seeds) "
              "contains 0; with 3 seeds a side the test has little power, so \"yes\" means no "
              "difference was found at this spread.", "",
              "| configuration | quantity | official (per seed) | mi_jax (per seed) | official - "
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
    """The files named by comma-separated paths or globs, each once (overlapping globs would
    otherwise count a seed twice)."""
    out = []
    for part in text.split(","):
        found = sorted(glob.glob(part.strip()))
        if not found:
            raise InputError(f"official={text}: {part.strip()!r} matches no file")
        out += [f for f in found if os.path.realpath(f) not in map(os.path.realpath, out)]
    return out


def main():
    if not FLAGS.official or not FLAGS.mi_jax:
        raise InputError("official=<unset>: --official and --mi_jax are both required")
    paths = _paths(FLAGS.official)
    ours, width, recipe = mi_jax_rows(FLAGS.mi_jax.split(","))
    official = official_rows(paths, width, recipe)
    table = compare(official, ours, recipe)
    out = Path(FLAGS.workdir)
    out.mkdir(parents=True, exist_ok=True)
    wd.write_json(out / "metrics.json", {"files": paths, "table": table})
    text = markdown(table)
    wd.write_text(out / "table.md", text)
    print(text)


if __name__ == "__main__":
    define_flags()
    cli.run_main(main)
