"""The recursion's report: Markdown tables, figures (per dataset and Fig. 8), its section of the
main job's summary and its rows of the claims ledger."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mi_jax import ledger, plots, report, sweeps
from mi_jax import recursive as rec
from mi_jax import workdir as wd
from mi_jax.data import mixtures as mx
from mi_jax.data import support
from mi_jax.evaluation import intervals
from mi_jax.studies.recursive.config import NOT_MNIST, DatasetConfig
from mi_jax.studies.recursive.pooling import min_mode_share

TABLE_METRICS = {"gmm2d": ("hallucination_rate", "bridge_rate", "blur_rate", "modes_covered",
                           "hist_kl"),
                 "shapes": ("hallucination_rate",), "digits": ("frechet",)}
# The pooled table also splits SIMPLE SHAPES' rate by category (the recursion table's per-model
# columns do not fit three seeds per cell).
POOLED_EXTRA = {"shapes": ("duplicate", "empty", "malformed")}


def mass_curves_figure(path: Path, metrics: dict, true_weights) -> None:
    """gmm2d: bridge rate (generated candidates and the kept training set) and the smallest
    mode share of the generated candidates per generation, one line per filter (mean +- std
    over seeds): the two quantities of a bridge-and-mass target."""
    r, gens = len(metrics["seeds"]), metrics["per_generation"]
    panels = [("bridge_rate", "generated", "bridge % (generated candidates)"),
              ("bridge_rate", "kept", "bridge % (kept: next training set)"),
              ("min_mode_share", "generated", "smallest mode share (generated)")]
    fig, axes = plots.figure(ncols=len(panels), width=3.8, height=3.0)
    for ax, (name, which, title) in zip(axes[0], panels):
        for i, f in enumerate(metrics["filters"]):
            per_gen = [min_mode_share(g[which]["mode_mass"], true_weights)[i * r:(i + 1) * r]
                       if name == "min_mode_share" else
                       100.0 * np.asarray(g[which][name][i * r:(i + 1) * r], np.float64)
                       for g in gens]
            mean = np.asarray([v.mean() for v in per_gen])
            std = np.nan_to_num(np.asarray([sweeps.seed_std(v) for v in per_gen]))
            x = [g["generation"] for g in gens]
            ax.plot(x, mean, marker="o", label=f)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        if which == "generated":  # the reference lines of a bridge-and-mass target
            first = np.asarray(gens[0]["generated"]["bridge_rate"][:r], np.float64).mean()
            level, text = ((0.5, "half the true mass") if name == "min_mode_share" else
                           (150.0 * first, "1.5x generation 0"))
            ax.axhline(level, color="grey", ls="--", lw=0.8, label=text)
        ax.set_xlabel("generation")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    wd.save_figure(fig, path)


def recursion_table(metrics: dict, true_weights=None) -> str:
    """Markdown, one row per generation and filter: the generated and the kept candidates'
    metrics (TABLE_METRICS; rates in %), mean +- std over seeds. With `true_weights` (the valid
    modes' weights), also each model's smallest per-mode in-support mass relative to its mode's
    true weight ('min mode share'; 1 for the data, 0 once a mode is lost)."""
    filters, r = metrics["filters"], len(metrics["seeds"])
    names = [n for n in TABLE_METRICS[metrics["dataset"]]
             if n in metrics["per_generation"][0]["generated"]]
    if true_weights is not None:
        names.append("min_mode_share")
    cols = [(w, n) for w in ("generated", "kept") for n in names]

    def cell(gen: dict, which: str, name: str, f: int) -> str:
        if name == "min_mode_share":
            vals = min_mode_share(gen[which]["mode_mass"][f * r:(f + 1) * r], true_weights)
        else:
            vals = np.asarray(gen[which][name][f * r:(f + 1) * r], np.float64)
        scale = 100.0 if name.endswith("_rate") else 1.0
        mean, std = scale * float(np.mean(vals)), scale * float(sweeps.seed_std(vals))
        return f"{mean:.2f}" + ("" if np.isnan(std) else f" +- {std:.2f}")

    label = lambda n: n.replace("_rate", " %").replace("_", " ")  # noqa: E731
    head = ["gen", "filter"] + [f"{w}: {label(n)}" for w, n in cols]
    lines = [f"# {metrics['dataset']}: recursive retraining ({r} seed(s), mean +- std; 'kept' "
             "is the next generation's training set)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for gen in metrics["per_generation"]:
        for i, f in enumerate(filters):
            lines.append("| " + " | ".join([str(gen["generation"]), f] + [
                cell(gen, w, n, i) for w, n in cols]) + " |")
    return "\n".join(lines) + "\n"


def pooled_table(metrics: dict) -> str:
    """Markdown for pooled curves: per generation and filter, each table metric of the generated
    and the kept candidates as every seed's value and mean +- std (rates in %)."""
    name = metrics["dataset"]
    wanted = TABLE_METRICS[name] + POOLED_EXTRA.get(name, ())
    whichs = [w for w in ("generated", "kept") if w in metrics["curves"]]
    names = [n for n in wanted if n in metrics["curves"]["generated"]]
    percent = lambda n: name == "shapes" or n.endswith("_rate")  # noqa: E731

    def cell(c: dict, g: int, n: str) -> str:
        scale = 100.0 if percent(n) else 1.0
        vals = scale * np.asarray(c["per_seed"][g], np.float64)
        spread = sweeps.seed_std(vals)
        return (" / ".join(f"{v:.1f}" for v in vals) + f" ({vals.mean():.1f}"
                + ("" if np.isnan(spread) else f" +- {spread:.1f}") + ")")

    label = lambda n: n.replace("_rate", "").replace("_", " ") + (" %" if percent(n) else "")  # noqa: E731
    head = ["gen", "filter", "seeds"] + [f"{w}: {label(n)}" for w in whichs for n in names]
    lines = [f"# {name}: recursive retraining pooled from {len(metrics['pooled_from'])} runs "
             "(per seed, in the order of the seeds column; mean +- std)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in range(metrics["generations"]):
        for f in metrics["filters"]:
            seeds = ",".join(map(str, metrics["filter_seeds"][f]))
            lines.append("| " + " | ".join([str(g), f, seeds] + [
                cell(metrics["curves"][w][n][f], g, n) for w in whichs for n in names]) + " |")
    lines += ["", "Runs: " + "; ".join(f"{f}: " + ", ".join(
        f"seed {s} from {src}" for s, src in zip(metrics["filter_seeds"][f],
                                                 metrics["sources"][f]))
        for f in metrics["filters"])]
    return "\n".join(lines) + "\n"


def mode_weights(d: DatasetConfig):
    """The valid modes' weights of the gmm2d grid (None for the other datasets)."""
    if d.dataset != "gmm2d":
        return None
    mixture = mx.grid_2d("square", size=d.grid_size)
    valid = np.asarray(mixture.mask, bool)
    return np.asarray(mixture.weights, np.float64)[valid]


def curve_panel(ax, metrics: dict, which: str = "generated") -> None:
    name, metric = metrics["dataset"], metrics["headline_metric"]
    scale = 100.0 if metric == "hallucination_rate" else 1.0
    # A pooled run's filters may hold different numbers of seeds.
    counts = {f: len(metrics.get("filter_seeds", {}).get(f, metrics["seeds"]))
              for f in metrics["filters"]}
    for f in metrics["filters"]:
        c = metrics["curves"][which][metric][f]
        gens = np.arange(len(c["mean"]))
        # One seed: std is NaN, and null once read back from metrics.json (a finished run).
        mean = np.asarray(c["mean"], np.float64) * scale
        std = np.nan_to_num(np.asarray(c["std"], np.float64)) * scale
        ax.plot(gens, mean, marker="o", label=f"{f} ({counts[f]} seed{'s' * (counts[f] > 1)})")
        ax.fill_between(gens, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("generation")
    ax.set_xticks(gens)  # generations are whole numbers
    ax.set_ylabel("hallucinated %" if scale == 100.0 else
                  "Frechet distance (classifier features)")
    ax.set_title(f"{name} (mean +- std over seeds)", fontsize=9)
    ax.legend(fontsize=7)


def dataset_figures(workdir: Path, metrics: dict, info: dict, d: DatasetConfig) -> None:
    """generations.png (samples per filter and generation), curves.png and, for images,
    removed.png in the dataset's work directory."""
    name = d.dataset
    gens = metrics["generations"]
    filters = metrics["filters"]
    samples = [np.load(workdir / rec.GENERATION_DIR.format(g) / rec.SAMPLES_FILE)["candidates"]
               for g in range(gens)]
    r = len(metrics["seeds"])
    fig, axes = plots.figure(ncols=gens, nrows=len(filters), width=2.6, height=2.6)
    for i, f in enumerate(filters):
        for g in range(gens):
            x = samples[g][i * r]  # seed 0 of this filter
            ax = axes[i, g]
            if name == "gmm2d":
                mixture = info["mixture"]
                inside = np.asarray(support.in_support(x, mixture, d.k))
                plots.scatter_2d(ax, x, mixture, inside, f"{f}, gen {g}", max_points=5000)
            else:
                side = d.resolution
                plots.image_grid(ax, x.reshape(-1, side, side)[:36], 6)
                ax.set_title(f"{f}, gen {g}", fontsize=8)
    wd.save_figure(fig, workdir / "generations.png")
    curves_figure(workdir / "curves.png", metrics)
    if name != "gmm2d" and "variance" in filters:
        _removed_figure(workdir, samples[0], d, filters.index("variance") * r)


def curves_figure(path: Path, metrics: dict) -> None:
    panels = [("generated", "generated candidates"), ("kept", "kept by the filter (next "
              "training set)"), ("removed", "dropped by the filter")]
    panels = [p for p in panels if p[0] in metrics["curves"]]
    fig, axes = plots.figure(ncols=len(panels))
    for ax, (which, title) in zip(axes[0], panels):
        curve_panel(ax, metrics, which)
        ax.set_title(f"{metrics['dataset']}: {title}", fontsize=9)
    wd.save_figure(fig, path)


def _removed_figure(workdir: Path, candidates: np.ndarray, d: DatasetConfig, model: int) -> None:
    """Generation 0, the variance filter's first model: the candidates with the highest x0_hat
    variance (what the filter drops first), a random sample, and the lowest."""
    with np.load(workdir / rec.GENERATION_DIR.format(0) / rec.SAMPLES_FILE) as z:
        hal = z["hal"][model]
    x = candidates[model]
    side = d.resolution
    order = np.argsort(np.where(np.isfinite(hal), hal, np.inf))
    rng = np.random.default_rng(0)
    groups = [("highest x0_hat variance (dropped first)", order[::-1][:48]),
              ("random candidates", rng.choice(len(x), 48, replace=False)),
              ("lowest x0_hat variance", order[:48])]
    fig, axes = plots.figure(ncols=3, width=3.6, height=3.0)
    for ax, (title, idx) in zip(axes[0], groups):
        plots.image_grid(ax, x[idx].reshape(-1, side, side), 8)
        ax.set_title(f"gen 0: {title}", fontsize=8)
    wd.save_figure(fig, workdir / "removed.png")


def fig8_figure(path: Path, results: dict) -> None:
    """Fig. 8: one panel per dataset ({name: metrics}), the headline metric per generation."""
    fig, axes = plots.figure(ncols=len(results), width=4.2, height=3.6)
    for i, m in enumerate(results.values()):
        curve_panel(axes[0, i], m)
    wd.save_figure(fig, path)


# ------------------------------------------------------------------------------------------
# The main job's summary section and the ledger claims (see mi_jax.studies.registry)
# ------------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list:
    pm = report.pm
    lines = ["## Recursive retraining on own samples (paper Fig. 8)", "",
             "Each generation trains fresh models only on the previous generation's kept samples "
             "(no filter / random subset / lowest trajectory variance); mean +- std over seeds of "
             "the generated candidates.", ""]
    for name, res in metrics["results"].items():
        metric = metrics["headline"][name]["metric"]
        curves = res["curves"]["generated"][metric]
        filters = list(curves)
        fmt = report.pct if metric == "hallucination_rate" else (lambda v: f"{v:.2f}")
        label = "hallucinated" if metric == "hallucination_rate" else "Frechet distance"
        lines += [f"**{name}** ({label}; {res['info'].get('source', '')})", "",
                  "| generation | " + " | ".join(filters) + " |",
                  "|---|" + "---|" * len(filters)]
        for g in range(len(curves[filters[0]]["mean"])):
            lines.append(f"| {g} | " + " | ".join(
                pm(curves[f]['mean'][g], curves[f]['std'][g], fmt) for f in filters) + " |")
        lines += ["", f"![generations](recursive/{name}/generations.png)", ""]
    lines += ["![Fig. 8](recursive/fig8_recursive.png)", ""]
    return lines


def _filters_compared(dataset, metric):
    """Random minus variance filter at the last generation, per seed, on `dataset`'s `metric`
    of the generated candidates."""
    def extract(results):
        res = ledger.read(results, "recursive", "results", dataset)
        if not res or NOT_MNIST in res.get("info", {}).get("source", ""):
            return None  # the digits row is a claim about MNIST, not about the font stand-in
        curves = res["curves"]["generated"][metric]
        if "random" not in curves or "variance" not in curves:
            return None
        d = results["recursive"].get("datasets", {}).get(dataset, {})
        n = float(d.get("num_candidates") or 0) if metric == "hallucination_rate" else 0
        rnd = ledger.snap(curves["random"]["per_seed"][-1], n)
        var = ledger.snap(curves["variance"]["per_seed"][-1], n)
        gens = len(curves["random"]["mean"])
        fmt = ledger.pct if metric == "hallucination_rate" else (lambda v: f"{v:.2f}")
        cfg = ledger.config_of(results, "recursive")
        what = res.get("info", {}).get("source", dataset)
        if d:
            what += (f"; T={d.get('T')}, {d.get('steps')} steps x batch {d.get('batch_size')}"
                     + (f", width {d['width']}" if d.get("width") else "")
                     + f", Adam {d.get('lr')} {d.get('lr_schedule') or 'cosine'}, "
                     f"{d.get('batch_order') or 'random'} batches, "
                     f"keep {d.get('num_train')} of {d.get('num_candidates')} candidates, "
                     f"{d.get('sampling_steps')} sampling steps, filter window "
                     f"{tuple(d.get('hal_window') or ())} ({d.get('hal_clock') or 'index'} "
                     "clock)")
        counting = None
        if metric == "hallucination_rate":
            counting = intervals.difference(ledger.rate_interval(rnd, n),
                                            ledger.rate_interval(var, n))
        return ledger.Measurement(list(rnd - var),
                                  f"recursive preset {cfg.get('preset')}: {what}; {gens} "
                                  f"generations, seeds {d.get('seeds', cfg.get('seeds'))}",
                                  f"last generation: random {fmt(float(rnd.mean()))}, variance "
                                  f"filter {fmt(float(var.mean()))} ({metric})", counting=counting)
    return extract


CLAIMS = (
    ledger.Claim("recursive_2d", "Variance filtering slows collapse under recursive "
                 "retraining, 2D grid (Fig. 8).", "hallucination rate, random minus variance "
                 "filter, last generation", 0.0, 0.0, True,
                 _filters_compared("gmm2d", "hallucination_rate")),
    ledger.Claim("recursive_shapes", "The same on SIMPLE SHAPES (Fig. 8).",
                 "hallucination rate, random minus variance filter, last generation", 0.0,
                 0.0, True, _filters_compared("shapes", "hallucination_rate")),
    ledger.Claim("recursive_digits", "Filtering slows collapse on MNIST (Fig. 8; here real "
                 "MNIST digits, Frechet distance in a small classifier's features).",
                 "Frechet distance, random minus variance filter, last generation", 0.0, 0.0,
                 True, _filters_compared("digits", "frechet"), percent=False,
                 unavailable="no recursion run on real MNIST digits in this directory "
                             "(`python -m experiments.recursive --datasets=digits` with the "
                             "`mnist` extra; runs on rendered font digits do not count)"),
)
