r"""SIMPLE SHAPES: trajectory variance as a detector, per kind of hallucination, region and window.

        --models_from=runs/reproduce/shapes[,runs/shapes_seed1]

Loads the trained UNets of finished `experiments.shapes` runs (every seed of each), samples
fresh images with a sampler that is strided early and dense late (every training timestep below
`--dense_steps`), so windows are given in the training schedule's timesteps and the official one
(t = 9..0) is computed step by step, and reports, per seed and pooled: AUROC and hallucinations
removed at 96 % of in-support kept, for each kind of hallucination against in-support images
(duplicate = mode interpolation; wrong shape, malformed, empty) and all together, on the whole
image, the max over the three columns and the square column, for every window of `--windows`;
beside the paper's statistic (per-pixel variances averaged over a region), the variance of each
column's mean ink (`region_mean_variance`), max over columns; and content controls
(`content_controls`): the final image's column ink alone, and each score's AUROC among images
with the same number of shapes, and each window's rank correlation of a column's variance with
that column's final ink (how much of a window's AUROC is the amount of ink it sees forming
rather than the model's uncertainty). With --snapshots, every training
snapshot of a source is evaluated too, and `compute_curve.png` plots composition and detection
against training steps.

Command line: `python -m experiments.shapes_detection` (every flag and preset: `--help`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

import mi_jax as mj
from mi_jax import checkpoint, plots, report, sweeps
from mi_jax import config, ledger
from mi_jax import workdir as wd
from mi_jax.data import shape_counter as sc
from mi_jax.detection import metrics as dm
from mi_jax.evaluation import intervals
from mi_jax.sampling.sampler import print_progress
from mi_jax.studies import shapes
from mi_jax.studies.registry import Schema, Study
from mi_jax.training import train as tr
from mi_jax.validation import InputError

PHASE_DETECTION = 4  # the sampling key phase of this analysis (shapes uses 1..3)
# column_ink_max: the variance of each column's mean x0_hat (its ink), max over columns -- not the
# paper's statistic (a mean of per-pixel variances), measured beside it.
REGIONS = ("whole_image", "column_max", "square_column", "column_ink_max")

OPTIONS = (
    config.Option("preset", "choice", "Settings to start from.", choices=("quick", "paper")),
    config.Option("models_from", "str", "Comma-separated finished experiments.shapes work "
                  "directories (all their seeds are used).", default=None),
    config.Option("snapshots", "bool", "Also evaluate every training snapshot of each source "
                  "(experiments.shapes --snapshot_steps): detection and composition against "
                  "training steps."),
    config.Option("num_samples", "int", "Fresh images per model.", low=10),
    config.CHUNK_SIZE,
    config.Option("dense_steps", "int", "Sample every training timestep below this one.", low=1),
    config.Option("strided_steps", "int", "Evenly spaced sampling steps above --dense_steps.",
                  low=1),
    config.Option("windows", "windows", "Trajectory-variance windows lo:hi in training-schedule "
                  "timesteps; the first is the headline (0:10 = the official window).", low=0),
)
Config = config.config_class("ShapesDetectionConfig", OPTIONS)

# Wide windows last: from t ~ 400 on, x0_hat starts near the data mean, so a window reaching
# that far measures how much ink forms in it (see `content_controls`).
_WINDOWS = [(0, 10), (0, 5), (0, 20), (0, 50), (10, 50), (50, 100), (0, 100), (100, 200),
            (0, 200), (200, 400), (400, 600), (0, 400), (200, 600), (0, 600), (0, 1000)]
PRESETS = {
    # 100 sampling steps (the shapes quick preset's count), every one of the last 50.
    "quick": dict(snapshots=False, num_samples=1000, chunk_size=500, dense_steps=50,
                  strided_steps=50, windows=_WINDOWS),
    "paper": dict(snapshots=False, num_samples=10_000, chunk_size=1000, dense_steps=200,
                  strided_steps=200, windows=_WINDOWS),
}


def _sources(cfg) -> list:
    if not cfg.models_from:
        raise InputError("models_from=: must name at least one experiments.shapes "
                         "work directory")
    return [Path(p) for p in cfg.models_from.split(",")]


def _models(cfg) -> list:
    """(name, source directory, checkpoint file, training steps) of every model stack to
    evaluate: each source's final state and, with --snapshots, its snapshots (name@step)."""
    out = []
    for path in _sources(cfg):
        steps = saved_shapes_config(path).steps
        if cfg.snapshots:
            out += [(f"{path.name}@{s}", path, shapes.snapshot_path(path, s), s)
                    for s in shapes.saved_snapshot_steps(path)]
        out.append((path.name, path, path / tr.TRAIN_CHECKPOINT, steps))
    return out


def saved_shapes_config(path: Path):
    return config.from_values(shapes.Config, wd.read_config(path))


def validate(cfg: Config) -> None:
    for path in _sources(cfg):
        if not (path / wd.METRICS_FILE).exists() or not (path / tr.TRAIN_CHECKPOINT).exists():
            raise InputError(f"models_from={path}: not a finished experiments.shapes run")
        scfg = saved_shapes_config(path)
        if scfg.images_dir:
            raise InputError(f"models_from={path}: trained on images_dir (no shape "
                             "counter ground truth)")
        if cfg.snapshots and not shapes.saved_snapshot_steps(path):
            raise InputError(f"snapshots=True: models_from={path} has no training snapshots "
                             "(train with experiments.shapes --snapshot_steps)")
        if cfg.dense_steps + cfg.strided_steps > scfg.T or cfg.dense_steps >= scfg.T:
            raise InputError(f"dense_steps={cfg.dense_steps}: with strided_steps="
                             f"{cfg.strided_steps} must fit in T={scfg.T}")
        for lo, hi in cfg.windows:
            if hi > scfg.T:
                raise InputError(f"windows={lo}:{hi}: must lie inside [0, T={scfg.T})")


def load_models(path: Path, checkpoint_file: Path | None = None):
    """(shapes config, network, schedule, stacked TrainState) of a finished shapes run, from its
    final state or from `checkpoint_file` (a snapshot of the same run)."""
    scfg = saved_shapes_config(path)
    network = shapes.make_network(scfg)
    schedule = mj.linear_schedule(scfg.T, scfg.beta_start, scfg.beta_end)
    train_cfg = shapes.train_config(scfg)
    like = jax.vmap(lambda k: tr.init_state(network, train_cfg, k))(
        sweeps.seed_keys(scfg.seeds, shapes.PHASE_INIT))
    return scfg, network, schedule, checkpoint.load(checkpoint_file or path / tr.TRAIN_CHECKPOINT,
                                                    like)


def evaluate_source(path: Path, cfg: Config, log=print, checkpoint_file: Path | None = None,
                    train_steps: int | None = None) -> tuple[dict, dict]:
    scfg, network, schedule, state = load_models(path, checkpoint_file)
    res_px, seeds = scfg.resolution, scfg.seeds
    sample_sched, ts_net = mj.sampling_plan(schedule, cfg.strided_steps, cfg.dense_steps)
    steps = ts_net
    log(f"[shapes_detection] {checkpoint_file or path}: {len(seeds)} model(s), "
        f"{cfg.num_samples} images each, "
        f"{len(steps)} sampling steps (every t < {cfg.dense_steps})")
    windows, columns = [tuple(w) for w in cfg.windows], sc.column_masks(res_px)
    observers = {"hal": mj.window_variance(windows, regions=columns),
                 "ink": mj.region_mean_variance(windows, columns)}
    out = sweeps.sample_models(network, state.eval_params, sample_sched,
                               sweeps.seed_keys(seeds, PHASE_DETECTION), cfg.num_samples,
                               (res_px, res_px, 1), observers=observers, net_timesteps=ts_net,
                               chunk_size=cfg.chunk_size, progress=print_progress("sample"))
    var, var_regions = out.observed["hal"].var, out.observed["hal"].var_regions  # (M,W,n),(M,W,n,3)
    counts = [sc.count_shapes(out.x[m], res_px) for m in range(len(seeds))]
    primary = np.stack([c.primary for c in counts])  # (M, n): -1 in support, else a category
    ink = out.observed["ink"]  # (M, W, n, 3)
    region_scores = {"whole_image": var, "column_max": var_regions.max(-1),
                     "square_column": var_regions[..., 1], "column_ink_max": ink.max(-1)}
    table = {}
    for region, scores in region_scores.items():
        table[region] = []
        for w in range(len(cfg.windows)):
            per_seed = [dm.by_category(scores[m, w], primary[m], sc.CATEGORIES)
                        for m in range(len(seeds))]
            pooled = dm.by_category(scores[:, w].ravel(), primary.ravel(), sc.CATEGORIES)
            table[region].append({"window": list(cfg.windows[w]), "per_seed": per_seed,
                                  "pooled": pooled})
    heldout = {region: heldout_best_window(scores, primary, cfg.windows)
               for region, scores in region_scores.items()}
    controls = content_controls(region_scores, var_regions, out.x, primary,
                                np.stack([c.counts.reshape(len(c.primary), -1).sum(1)
                                          for c in counts]), columns, cfg.windows)
    composition = {c: [float(np.mean(p == i)) for p in primary] for i, c in enumerate(sc.CATEGORIES)}
    composition["in_support"] = [float(np.mean(p < 0)) for p in primary]
    result = {"source": str(path), "train_steps": int(train_steps or scfg.steps), "seeds": seeds,
              "sampling_steps": int(len(steps)),
              "composition": composition, "detection": table, "heldout_best": heldout,
              "controls": controls,
              "sample_seconds": out.seconds, "num_nonfinite": out.num_nonfinite}
    arrays = {"samples": out.x[:, :400].astype(np.float16), "var": var,
              "var_regions": var_regions, "ink_var": ink, "primary": primary}
    return result, arrays


def content_controls(region_scores: dict, column_scores, images, primary, shape_totals, columns,
                     windows, kind: str = "duplicate") -> dict:
    """How much of a variance score's AUROC (kind vs in-support) is the amount of content: a
    duplicate column holds two shapes' ink, so any score that grows with ink ranks it high.

    final_ink_column_max: AUROC of the final image's ink, max over columns (no trajectory: the
    shape counter's own signal). stratified: per region and window, the AUROC over pairs of
    images with the same number of shapes (`metrics.stratified_auroc`; strata also split by
    model), i.e. what the variance ranks beyond how many shapes formed. ink_correlation: per
    window, the rank correlation of every column's variance (column_scores (M, W, n, 3)) with
    that column's final ink, over all images. images (M, n, R, R, 1) in [-1, 1]; primary,
    shape_totals (M, n)."""
    k = sc.CATEGORIES.index(kind)
    ink = (np.clip(np.asarray(images, np.float64), -1, 1) + 1) / 2
    col = np.asarray(columns, np.float64).reshape(len(columns), -1)
    column_ink = ink.reshape(*ink.shape[:2], -1) @ (col / col.sum(1, keepdims=True)).T  # (M,n,3)
    sel = (primary < 0) | (primary == k)
    positive = primary[sel] == k
    strata = (np.arange(len(primary))[:, None] * 1000 + shape_totals)[sel]
    return {"kind": kind,
            "final_ink_column_max": dm.auroc(column_ink.max(-1)[sel], positive),
            "stratified": {region: [dm.stratified_auroc(region_scores[region][:, w][sel],
                                                        positive, strata)
                                    for w in range(len(windows))]
                           for region in ("whole_image", "column_max")},
            "ink_correlation": [dm.rank_correlation(column_scores[:, w], column_ink)
                                for w in range(len(windows))],
            "stratum_sizes": {int(t): [int(np.sum(positive[shape_totals[sel] == t])),
                                       int(np.sum(~positive[shape_totals[sel] == t]))]
                              for t in np.unique(shape_totals[sel])}}


def heldout_best_window(scores, primary, windows, kind: str = "duplicate") -> dict:
    """The best window for `kind` vs in-support chosen on the even-numbered images of every
    model, and its AUROC on the odd-numbered ones: a best-window figure that is not selected on
    the images it is measured on. scores (M, W, n), primary (M, n)."""
    k = sc.CATEGORIES.index(kind)

    def auroc(w, half):
        return dm.by_category(scores[:, w, half].ravel(), primary[:, half].ravel(),
                              sc.CATEGORIES)[kind]["auroc"]

    fit = [auroc(w, slice(0, None, 2)) for w in range(len(windows))]
    best = int(np.nanargmax(fit)) if np.any(np.isfinite(fit)) else 0
    return {"kind": kind, "window": list(windows[best]), "fit_auroc": fit[best],
            "test_auroc": auroc(best, slice(1, None, 2)),
            "test_positives": int(np.sum(primary[:, 1::2] == k))}


def _stat(entry, kind, key):
    per = [s[kind][key] for s in entry["per_seed"]]
    return per, entry["pooled"][kind][key]


def headline(results: dict) -> dict:
    """Per source: the official window (the first) and the best window for duplicates vs
    in-support (by pooled AUROC), per region, with per-seed values."""
    head = {}
    for name, r in results.items():
        out = {"composition": {k: float(np.mean(v)) for k, v in r["composition"].items()}}
        for region, rows in r["detection"].items():
            aur = [row["pooled"]["duplicate"]["auroc"] for row in rows]
            best = int(np.nanargmax(aur)) if np.any(np.isfinite(aur)) else 0
            for label, i in (("official", 0), ("best", best)):
                per, pooled = _stat(rows[i], "duplicate", "auroc")
                rem_per, rem = _stat(rows[i], "duplicate", "removed_at_96_kept")
                out[f"{region}_{label}"] = {"window": rows[i]["window"], "duplicate_auroc": pooled,
                                            "duplicate_auroc_per_seed": per,
                                            "duplicate_removed_at_96_kept": rem,
                                            "duplicate_removed_per_seed": rem_per,
                                            **{f"{k}_auroc": rows[i]["pooled"][k]["auroc"]
                                               for k in ("empty", "malformed", "all")}}
        out["heldout_best"] = r["heldout_best"]
        ctl = r["controls"]
        out["controls"] = {"final_ink_column_max": ctl["final_ink_column_max"],
                           "ink_correlation": dict(zip(
                               [f"{lo}:{hi}" for lo, hi in (row["window"] for row in
                                                            r["detection"]["column_max"])],
                               ctl["ink_correlation"]))}
        for region, vals in ctl["stratified"].items():
            best = int(np.nanargmax(vals)) if np.any(np.isfinite(vals)) else 0
            out["controls"][f"{region}_stratified"] = {
                "official": vals[0], "best": vals[best],
                "best_window": r["detection"][region][best]["window"]}
        head[name] = out
    return head


def _figures(workdir: Path, cfg: Config, results: dict, arrays: dict) -> list:
    import matplotlib.patches as patches

    names = []
    for name, r in results.items():
        a = arrays[name]
        rows = r["detection"]["column_max"]
        fig, axes = plots.figure(ncols=3, width=5.2, height=3.6)
        labels = [f"{lo}:{hi}" for lo, hi in cfg.windows]
        for ax, kind in zip(axes[0], ("duplicate", "empty")):
            for region in REGIONS:
                vals = [row["pooled"][kind]["auroc"] for row in r["detection"][region]]
                ax.plot(range(len(vals)), vals, marker="o", label=region)
            if kind == "duplicate":
                for region, vals in r["controls"]["stratified"].items():
                    ax.plot(range(len(vals)), vals, marker="x", ls="--",
                            label=f"{region}, same shape count")
                ax.axhline(r["controls"]["final_ink_column_max"], color="k", lw=0.8, ls="-.",
                           label="final column ink (no trajectory)")
            ax.axhline(0.5, color="grey", lw=0.5, ls=":")
            ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
            ax.set_xlabel("window [lo, hi) in training timesteps")
            ax.set_ylabel(f"AUROC, {kind} vs in-support")
            ax.legend(fontsize=7)
        corr = r["controls"]["ink_correlation"]
        axes[0, 2].plot(range(len(corr)), corr, marker="o", color="k")
        axes[0, 2].set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
        axes[0, 2].set_xlabel("window [lo, hi) in training timesteps")
        axes[0, 2].set_ylabel("rank correlation: column variance vs final column ink")
        wd.save_figure(fig, workdir / f"windows_{name}.png")
        # Generated images of the first model, outlined by kind, titled with their variance.
        g = 8
        aur = [row["pooled"]["duplicate"]["auroc"] for row in rows]
        best = int(np.nanargmax(aur)) if np.any(np.isfinite(aur)) else 0
        score = a["var_regions"][0, best].max(-1)
        fig, axes = plots.figure(ncols=g, nrows=g, width=1.1, height=1.25)
        colours = ("tab:red", "tab:orange", "tab:purple", "tab:blue")
        for i, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if i >= a["samples"].shape[1]:
                continue
            ax.imshow(np.asarray(a["samples"][0, i], np.float32)[..., 0], cmap="gray", vmin=-1,
                      vmax=1)
            kind = int(a["primary"][0, i])
            res_px = a["samples"].shape[2]
            if kind >= 0:
                ax.add_patch(patches.Rectangle((-0.5, -0.5), res_px - 1, res_px - 1, fill=False,
                                               edgecolor=colours[kind], lw=3))
            ax.set_title(f"{score[i]:.1e}", fontsize=6)
        fig.suptitle(f"{name}, seed {r['seeds'][0]}: column-max variance over t in "
                     f"{cfg.windows[best]} (titles); outlined: " + ", ".join(
                         f"{c} = {colours[j]}" for j, c in enumerate(sc.CATEGORIES)), fontsize=8)
        wd.save_figure(fig, workdir / f"samples_{name}.png")
        names += [f"windows_{name}.png", f"samples_{name}.png"]
    return names


def _compute_curve(workdir: Path, results: dict, head: dict) -> list:
    """Composition and duplicate AUROC against training steps, one line per source."""
    by_source = {}
    for name, r in results.items():
        by_source.setdefault(r["source"], []).append((r["train_steps"], name))
    fig, axes = plots.figure(ncols=2, width=5.0, height=3.6)
    for src, entries in by_source.items():
        entries.sort()
        steps = [s for s, _ in entries]
        label = Path(src).name
        for kind, ls in (("in_support", "-"), ("duplicate", "--"), ("empty", ":")):
            axes[0, 0].plot(steps, [head[n]["composition"][kind] for _, n in entries], ls=ls,
                            marker="o", label=f"{label}: {kind}")
        for key, ls, get in (
                ("column max, official window", "-",
                 lambda h: h["column_max_official"]["duplicate_auroc"]),
                ("column max, held-out best window", "--",
                 lambda h: h["heldout_best"]["column_max"]["test_auroc"]),
                ("column ink, held-out best window", ":",
                 lambda h: h["heldout_best"]["column_ink_max"]["test_auroc"])):
            axes[0, 1].plot(steps, [get(head[n]) for _, n in entries], ls=ls, marker="o",
                            label=f"{label}: {key}")
    axes[0, 0].set_ylabel("share of generated images")
    axes[0, 1].set_ylabel("AUROC, duplicates vs in-support")
    axes[0, 1].axhline(0.85, color="grey", lw=0.5, ls=":")
    for ax in axes[0]:
        ax.set_xlabel("training steps")
        ax.legend(fontsize=6)
    wd.save_figure(fig, workdir / "compute_curve.png")
    return ["compute_curve.png"]


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    results, arrays = {}, {}
    for name, path, ckpt, steps in _models(cfg):
        results[name], arrays[name] = evaluate_source(path, cfg, log, ckpt, steps)
    metrics = {"experiment": "shapes_detection", "sources": results,
               "headline": headline(results), "provenance": wd.provenance()}
    metrics["figures"] = _figures(Path(workdir), cfg, results, arrays)
    if cfg.snapshots:
        metrics["figures"] += _compute_curve(Path(workdir), results, metrics["headline"])
    for name, h in metrics["headline"].items():
        o, b, k = h["column_max_official"], h["column_max_best"], h["column_ink_max_best"]
        log(f"{name} ({results[name]['train_steps']} steps): duplicates vs in-support, column "
            f"max: official window {o['window']} AUROC {o['duplicate_auroc']:.3f}; best window "
            f"{b['window']} AUROC {b['duplicate_auroc']:.3f}; column ink, best window "
            f"{k['window']} AUROC {k['duplicate_auroc']:.3f}")
        for region in ("column_max", "column_ink_max"):
            ho = h["heldout_best"][region]
            log(f"    {region}: window chosen on half the images {ho['window']}, AUROC on the "
                f"other half {ho['test_auroc']:.3f} ({ho['test_positives']} duplicates)")
        c = h["controls"]
        log(f"    content controls: final column ink alone AUROC {c['final_ink_column_max']:.3f}; "
            "same number of shapes only: " + "; ".join(
                f"{region} official {c[f'{region}_stratified']['official']:.3f}, best "
                f"{c[f'{region}_stratified']['best_window']} "
                f"{c[f'{region}_stratified']['best']:.3f}"
                for region in ("whole_image", "column_max")))
        log("    rank correlation of a column's variance with its final ink: " + ", ".join(
            f"{w} {v:.2f}" for w, v in c["ink_correlation"].items()))
    wd.write_npz(Path(workdir) / "arrays.npz",
                 **{f"{n}__{k}": v for n, a in arrays.items() for k, v in a.items()})
    return STUDY.write_metrics(workdir, metrics)


# ------------------------------------------------------------------------------------------
# Outputs: the summary section and the ledger claims (see mi_jax.studies.registry)
# ------------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list:
    pct, auroc = report.pct, report.auroc
    lines = ["## SIMPLE SHAPES: detection by kind of hallucination (paper Fig. 7)", "",
             "Fresh samples of the models above; windows in training-schedule timesteps, the "
             "last 50 sampled step by step. AUROC pooled over seeds (per seed in "
             "`shapes_detection/metrics.json`).", "",
             "| region | window | duplicates vs in-support | removed at 96 % kept | empty | "
             "malformed | all |", "|---|---|---|---|---|---|---|"]
    for h in metrics["headline"].values():
        # A region x window row has a window; composition, held-out and controls do not.
        for key, row in h.items():
            if not (isinstance(row, dict) and "window" in row):
                continue
            lines.append(f"| {key} | {row['window']} | {auroc(row['duplicate_auroc'])} | "
                         f"{pct(row['duplicate_removed_at_96_kept'])} | "
                         f"{auroc(row['empty_auroc'])} | {auroc(row['malformed_auroc'])} | "
                         f"{auroc(row['all_auroc'])} |")
        lines += ["", "Composition: " + ", ".join(f"{k} {pct(v)}"
                                                 for k, v in h["composition"].items())]
        held = h.get("heldout_best", {})
        if held:
            lines += ["", "Best window chosen on the even-numbered images, AUROC on the "
                      "odd-numbered ones (duplicates vs in-support): " + ", ".join(
                          f"{region} {auroc(r['test_auroc'])} at t in "
                          f"[{r['window'][0]}, {r['window'][1]})"
                          for region, r in held.items())]
    lines += ["", "![windows](shapes_detection/windows_shapes.png)", "",
              "![samples](shapes_detection/samples_shapes.png)", ""]
    return lines


def _duplicate_detection(results):
    """Duplicates (the mode-interpolation kind) vs in-support, max over columns, at the paper's
    window (experiments.shapes_detection's first); the best window and the content controls in
    the note (a wide window's AUROC is mostly the ink it sees forming)."""
    sources = ledger.read(results, "shapes_detection", "sources")
    if not sources:
        return None
    values, notes, counts = [], [], []
    for name, src in sources.items():
        rows = src["detection"]["column_max"]
        aur = [float("nan") if r["pooled"]["duplicate"]["auroc"] is None
               else r["pooled"]["duplicate"]["auroc"] for r in rows]
        if not np.any(np.isfinite(aur)):
            continue
        best = int(np.nanargmax(aur))
        values += ledger.floats([s["duplicate"]["auroc"] for s in rows[0]["per_seed"]])
        counts += [(s["duplicate"]["auroc"], s["duplicate"]["num_positive"],
                    s["duplicate"]["num"] - s["duplicate"]["num_positive"])
                   for s in rows[0]["per_seed"] if s["duplicate"]["auroc"] is not None]
        note = (f"{name}: official t in {rows[0]['window']} {ledger.fmt(aur[0], 'auroc')}, best "
                f"window t in {rows[best]['window']} {ledger.fmt(aur[best], 'auroc')} (pooled)")
        if "controls" in src:
            controls = src["controls"]
            note += (f", final column ink alone "
                     f"{ledger.fmt(controls['final_ink_column_max'], 'auroc')}, rank "
                     f"correlation of that window's column variance with the column's ink "
                     f"{ledger.fmt(controls['ink_correlation'][best], 'auroc')}")
        notes.append(note)
    if not values:
        return None
    cfg = ledger.config_of(results, "shapes_detection")
    return ledger.Measurement(values, f"shapes_detection: fresh samples of the shapes models, "
                              f"{cfg.get('num_samples')} images/model, dense-tail sampler (every "
                              f"t < {cfg.get('dense_steps')}), duplicates vs in-support, max over "
                              "columns, official window", "; ".join(notes),
                              counting=(intervals.mean_auroc_interval(*zip(*counts)) if counts
                                        else (float("nan"), float("nan"))),
                              positives=sum(c[1] for c in counts))


def _detection_controlled(results):
    """Duplicates vs in-support images with the same number of shapes (whole image; the best
    window of experiments.shapes_detection by this AUROC), one value per source."""
    sources = ledger.read(results, "shapes_detection", "sources")
    values, notes, positives = [], [], 0
    for name, src in (sources or {}).items():
        if "controls" not in src:
            continue
        strat = ledger.floats(src["controls"]["stratified"]["whole_image"])
        if not np.any(np.isfinite(strat)):
            continue
        best = int(np.nanargmax(strat))
        values.append(strat[best])
        positives += src["detection"]["whole_image"][best]["pooled"]["duplicate"]["num_positive"]
        notes.append(f"{name}: t in {src['detection']['whole_image'][best]['window']} "
                     f"{strat[best]:.3f}, official {ledger.fmt(strat[0], 'auroc')}")
    if not values:
        return None
    return ledger.Measurement(values, "shapes_detection: whole-image variance, AUROC over pairs "
                              "of images with the same number of shapes, best window",
                              "; ".join(notes), counting=(float("nan"), float("nan")),
                              positives=positives)


def _detection(results):
    """The duplicate detection of this study where it ran, else the shapes study's own
    detection of every hallucination."""
    duplicates = _duplicate_detection(results)
    if duplicates is not None:
        return duplicates
    det = ledger.read(results, "shapes", "detection")
    if not det:
        return None
    best = max(det, key=lambda n: (det[n]["pooled"] or {}).get("auroc", -1))
    rows = det[best]["per_seed"]
    if not rows:
        return None
    cfg = ledger.config_of(results, "shapes")
    counts = [(r["auroc"], r["num_positive"], r["num"] - r["num_positive"]) for r in rows
              if "num_positive" in r and r["auroc"] is not None]
    return ledger.Measurement([r["auroc"] for r in rows], f"shapes preset {cfg.get('preset')}: "
                              f"variance '{best}' over sampling steps {cfg.get('hal_window')}",
                              "all hallucinations (duplicates, empties, malformed) vs in-support",
                              counting=(intervals.mean_auroc_interval(*zip(*counts)) if counts
                                        else (float("nan"), float("nan"))),
                              positives=sum(c[1] for c in counts) if counts else None)


STUDY = Study(
    "shapes_detection",
    Schema(metrics=("sources", "figures")),
    needs=("shapes",),
    summary=summary_lines,
    claims=(
        ledger.Claim("shapes_detect", "Trajectory variance separates SIMPLE SHAPES "
                     "hallucinations (Fig. 7).", "AUROC, official window (duplicates vs "
                     "in-support where measured, else every hallucination)", 0.9, 0.6, True,
                     _detection, percent=False, detection=True),
        ledger.Claim("shapes_detect_controlled", "The same beyond the amount of content: "
                     "duplicates vs in-support images holding as many shapes.",
                     "AUROC among images with the same number of shapes, best window", 0.9, 0.6,
                     True, _detection_controlled, percent=False, detection=True),
    ),
)
