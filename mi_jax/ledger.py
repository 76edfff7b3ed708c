"""The claims ledger: each claim of the paper, the value measured here, and a verdict by one rule.

`ledger(results)` takes the metrics and configs of finished experiments (as written to their work
directories) and returns one row per claim; `ledger_from_workdir(root)` reads them from a main-job
directory (or any directory holding `gmm1d/`, `gmm2d/`, ... sub-directories, e.g. a GPU run), and
`ledger_markdown(rows)` renders the table. Nothing here is written by hand: a value that is not in
the metrics makes the row "not measured".

The verdict rule (`verdict`, also `RULE` and `experiments.ledger --help`) is in `RULE` below.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from mi_jax.evaluation import intervals

REPRODUCED, PARTLY, NOT_REPRODUCED, NOT_MEASURED = (
    "reproduced", "partly", "not reproduced", "not measured")
TOO_FEW, NOT_CONVERGED = "too few positives", "not converged"
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, TOO_FEW, NOT_CONVERGED, NOT_MEASURED)

MIN_SEEDS = 3           # seeds (or models) a "reproduced" needs
COMPARE_TOL = 1e-12     # "beyond a bar" means by more than this (float rounding of counts)
MIN_POSITIVES = 100     # pooled hallucinations a detection row needs
CONVERGENCE_REL = 0.10  # the bridge rate may move by 10 % of itself over the last quarter ...
CONVERGENCE_ABS = 0.001  # ... or by 0.1 percentage point, or by twice its counting noise

RULE = (
    "Verdict rule. Each claim has a bar (the paper's level; for a direction claim, 0) and a weaker "
    "bar, and an orientation (larger or smaller supports it); every comparison below is strict. "
    "Values are per seed (non-finite ones dropped; none left: not measured). "
    "(1) Not converged: a row resting on the gmm1d / gmm2d studies' models (the studies that "
    "record a convergence curve; the recursion and SIMPLE SHAPES rows are not gated) whose study "
    "has no convergence curve reaching the end of training with >= 2 points in its last "
    "quarter, or whose mean "
    "bridge rate over seeds moved over that last quarter by more than the largest of "
    f"{CONVERGENCE_REL:.0%} of its value, {100 * CONVERGENCE_ABS:g} percentage point and twice "
    "the counting standard error of the change. "
    f"(2) Too few positives: a detection row with fewer than {MIN_POSITIVES} hallucinations "
    "pooled over seeds. "
    f"(3) Reproduced: >= {MIN_SEEDS} seeds, the one-sided 97.5 % Student-t bound of the mean over "
    "seeds (mean - t(0.975, n-1) * std / sqrt(n)) beyond the bar, and, for counted quantities "
    "(rates, shares, detection fractions, AUROCs), the counting bound of the pooled counts "
    "beyond the bar as well (Wilson score interval for a pooled proportion; a difference takes "
    "the lower bound of one minus the upper bound of the other; an AUROC the Hanley-McNeil "
    "standard error of each model, combined over models). "
    "(4) Partly: the mean beyond the weaker bar (for a direction claim: the direction, strictly). "
    "(5) Not reproduced: otherwise. The detection fractions' counting bound treats the 96 %-kept "
    "threshold as fixed (it is estimated on the same samples).")


@dataclasses.dataclass
class Measurement:
    """Per-seed values of one claim's quantity, what produced them, and what the rule needs
    beyond them: `counting` is the (lo, hi) 95 % counting interval of the pooled quantity (None
    where the quantity is not a count), `positives` the pooled hallucinations of a detection
    row, `converged` False (with the reason in `convergence_note`) for unconverged models."""

    values: list
    protocol: str
    note: str = ""
    counting: tuple | None = None
    positives: int | None = None
    converged: bool | None = None
    convergence_note: str = ""

    def __post_init__(self):
        self.values = _floats(self.values)  # JSON null (an undefined seed) -> NaN

    @property
    def finite(self) -> list:
        return [v for v in self.values if np.isfinite(v)]

    @property
    def n(self) -> int:
        return len(self.finite)

    @property
    def mean(self) -> float:
        return float(np.mean(self.finite)) if self.finite else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(self.finite, ddof=1)) if self.n > 1 else float("nan")


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper: its statement, the quantity measured, and the bars of the rule.

    higher: True when a larger value supports the claim. full: the paper's bar for the bounds;
    weak: the bar for the mean that makes a claim "partly" reproduced. percent: format as %.
    detection: the row needs `MIN_POSITIVES` pooled hallucinations.
    unavailable: why the claim cannot be measured here (the row then always reads "not
    measured" with this reason), for the paper's figures this project cannot reproduce.
    """

    key: str
    statement: str
    quantity: str
    full: float
    weak: float
    higher: bool
    extract: Callable[[dict], Measurement | None]
    percent: bool = True
    detection: bool = False
    unavailable: str = ""


def verdict(values, full: float, weak: float, higher: bool = True, *, counting=None,
            positives: int | None = None, min_positives: int = 0,
            converged: bool | None = None) -> str:
    """The ledger's rule (`RULE`) applied to per-seed values and, where given, the counting
    interval (lo, hi) of the pooled quantity, the pooled positives of a detection row (needs
    `min_positives`) and whether the models converged."""
    v = np.asarray(_floats(values), np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return NOT_MEASURED
    if converged is False:
        return NOT_CONVERGED
    if min_positives and (positives is None or positives < min_positives):
        return TOO_FEW
    sign = 1.0 if higher else -1.0
    mean, lo, hi = intervals.t_interval(v)
    seed_bound = lo if higher else hi
    # Strictly beyond, by more than float rounding: counts turned into rates and averaged over
    # seeds leave ~1e-19 where the exact difference is 0 (a zero effect is not a direction).
    beyond = lambda x, bar: bool(np.isfinite(x)) and sign * (x - bar) > COMPARE_TOL
    count_ok = counting is None or beyond(counting[0] if higher else counting[1], full)
    if v.size >= MIN_SEEDS and beyond(seed_bound, full) and count_ok:
        return REPRODUCED
    if beyond(mean, weak):
        return PARTLY
    return NOT_REPRODUCED


# ------------------------------------------------------------------------------------------
# Extractors: results = {experiment: {"metrics": ..., "config": ...}}
# ------------------------------------------------------------------------------------------


def _floats(values) -> list:
    """Per-seed values from JSON (null -> NaN: a seed where the quantity is undefined)."""
    return [float("nan") if v is None else float(v) for v in values]


def _get(results, exp, *path):
    node = results.get(exp, {}).get("metrics")
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def _cfg(results, exp) -> dict:
    return results.get(exp, {}).get("config") or {}


def _recipe(cfg: dict) -> str:
    parts = [f"{cfg.get('steps')} steps x batch {cfg.get('batch_size')}",
             f"width {cfg.get('width')}", f"Adam {cfg.get('lr')} {cfg.get('lr_schedule')}"]
    if cfg.get("focus_steps"):
        parts.append(f"{cfg.get('focus_prob')} of t in [0,{cfg['focus_steps']}) (weighted)")
    if cfg.get("ema_decay"):
        parts.append(f"EMA {cfg['ema_decay']}")
    if cfg.get("epochs"):
        parts.append(f"{cfg['epochs']} epochs (steps grow with the training set)")
    if cfg.get("batch_order") == "in_order":
        parts.append("in-order batches")
    return ", ".join(parts)


def _protocol(results, exp, what: str) -> str:
    cfg = _cfg(results, exp)
    return (f"{exp} preset {cfg.get('preset', '?')}: {what}; {_recipe(cfg)}; "
            f"{cfg.get('num_samples')} samples/model; seeds {cfg.get('seeds')}")


def _first_1d(results) -> str | None:
    fig2 = _get(results, "gmm1d", "fig2")
    return next(iter(fig2)) if fig2 else None


def _bridges(results, exp, name):
    return _get(results, exp, "bridges", name)


def _layouts(results) -> list:
    table = _get(results, "gmm2d", "bridges") or {}
    return list(table)


def _grid_text(results) -> str:
    cfg = _cfg(results, "gmm2d")
    size = cfg.get("grid_size")
    return f"{size}x{size} grids ({', '.join(_layouts(results))}), N={cfg.get('num_train')}"


def convergence(results, exp, names=None) -> tuple:
    """(converged, note) of study `exp`'s models by the rule's step (1), over the configurations
    `names` (default: every one with a curve). A configuration that stops early (`epochs`) is
    judged on the curve up to its own last step."""
    conv = _get(results, exp, "convergence")
    cfg = _cfg(results, exp)
    if not conv:
        return False, f"{exp}: no convergence curve (--curve_every)"
    seeds = len(cfg.get("seeds") or [0])
    pooled = (cfg.get("curve_samples") or 0) * seeds
    for name in (names or list(conv)):
        entry = conv.get(name)
        if not entry or not entry.get("steps"):
            return False, f"{name}: no convergence curve"
        end = int(cfg.get("steps") or entry["steps"][-1])
        n_train = _get(results, exp, "configs", name, "num_train") or cfg.get("num_train")
        if cfg.get("epochs") and n_train:
            end = min(end, int(cfg["epochs"]) * (int(n_train) // int(cfg["batch_size"])))
        series = list(zip(entry["steps"], entry["bridge"]["mean"]))
        after = [(s, b) for s, b in series if s >= end]
        if not after:
            return False, f"{name}: the curve stops before step {end}"
        # The first point at or past the model's last step is its final model (frozen after an
        # epoch budget that no curve point falls on exactly).
        points = [(s, b) for s, b in series if s < end] + [(end, after[0][1])]
        quarter = [(s, b) for s, b in points if s >= 0.75 * end]
        if len(quarter) < 2:
            return False, f"{name}: fewer than 2 curve points in the last quarter of training"
        (s0, a), (s1, b) = quarter[0], quarter[-1]
        se = (math.sqrt(a * (1 - a) / pooled + b * (1 - b) / pooled) if pooled
              else float("inf"))
        tol = max(CONVERGENCE_REL * abs(a), CONVERGENCE_ABS, 2 * se)
        if abs(b - a) > tol:
            return False, (f"{name}: bridge rate {_pct(a)} at step {s0} -> {_pct(b)} at step "
                           f"{s1} (allowed change {_pct(tol)})")
    return True, ""


def _gated(m: Measurement, results, exp, names=None) -> Measurement:
    m.converged, m.convergence_note = convergence(results, exp, names)
    return m


def _pooled(rates, trials_each) -> tuple:
    """(successes, trials) of per-model rates, each over `trials_each` samples (one number, or
    one per model)."""
    rates = np.asarray(_floats(rates), np.float64)
    n = np.broadcast_to(np.asarray(trials_each, np.float64), rates.shape)
    ok = np.isfinite(rates)
    return float(np.sum(np.round(rates[ok] * n[ok]))), float(np.sum(n[ok]))


def _rate_interval(rates, trials_each) -> tuple:
    return intervals.wilson(*_pooled(rates, trials_each))


def _snap(rates, n) -> np.ndarray:
    """Rates read back from float32 JSON, snapped to whole counts of `n` samples (so that equal
    counts differ by exactly 0, not by float rounding); unchanged when n is unknown."""
    rates = np.asarray(_floats(np.ravel(rates)), np.float64).reshape(np.shape(rates))
    return np.round(rates * n) / n if n else rates


def _num_samples(results, exp) -> float:
    return float(_cfg(results, exp).get("num_samples") or 0)


def _mean_over_layouts(results, key) -> list | None:
    rows = [_bridges(results, "gmm2d", n) for n in _layouts(results)]
    if not rows or any(r is None or key not in r for r in rows):
        return None
    with np.errstate(all="ignore"):  # a layout with no bridge in some seed has a NaN AUROC there
        stacked = np.asarray([_floats(r[key]["per_seed"]) for r in rows], np.float64)
        return [float(np.nanmean(col)) if np.any(np.isfinite(col)) else float("nan")
                for col in stacked.T]


def _interp_1d(results):
    name = _first_1d(results)
    b = name and _bridges(results, "gmm1d", name)
    if not b:
        return None
    n = _num_samples(results, "gmm1d")
    exact = float(_snap(b["oracle"]["bridge"], n))
    counting = intervals.difference(_rate_interval(b["bridge"]["per_seed"], n),
                                    _rate_interval([exact], n))
    return _gated(Measurement([float(v) - exact for v in _snap(b["bridge"]["per_seed"], n)],
                              _protocol(results, "gmm1d", name),
                              f"DDPM bridges {_pct(b['bridge']['mean'])}, exact score "
                              f"{_pct(exact)} (blur {_pct(b['blur']['mean'])} not counted)",
                              counting=counting), results, "gmm1d", [name])


def _interp_2d(results):
    vals = _mean_over_layouts(results, "bridge")
    if vals is None:
        return None
    notes, rates = [], []
    for name in _layouts(results):
        b = _bridges(results, "gmm2d", name)
        rates += _floats(b["bridge"]["per_seed"])
        notes.append(f"{name}: DDPM {_pct(b['bridge']['mean'])} bridges, exact "
                     f"{_pct(b['oracle']['bridge'])}, blur {_pct(b['blur']['mean'])}")
    exact = max(_bridges(results, "gmm2d", n)["oracle"]["bridge"] for n in _layouts(results))
    n = _num_samples(results, "gmm2d")
    counting = intervals.difference(_rate_interval(rates, n), _rate_interval([exact], n))
    # a mean over L layouts of counts of n: whole multiples of 1 / (L n)
    diffs = _snap([v - exact for v in vals], len(_layouts(results)) * n)
    return _gated(Measurement([float(v) for v in diffs],
                              _protocol(results, "gmm2d", _grid_text(results)), "; ".join(notes),
                              counting=counting), results, "gmm2d")


def _rotated_axis(results):
    pairs = _get(results, "gmm2d", "pairs")
    if not pairs or "rotated" not in pairs or "per_seed" not in pairs["rotated"]["axis_share"]:
        return None
    note = ""
    if "square" in pairs:
        note = f"square grid: {_pct(pairs['square']['axis_share']['mean'])} on x-axis pairs"
    rot = pairs["rotated"]
    counting = (_rate_interval(rot["axis_share"]["per_seed"], rot["num_hallucinations"])
                if "num_hallucinations" in rot else (float("nan"), float("nan")))
    return _gated(Measurement(rot["axis_share"]["per_seed"],
                              _protocol(results, "gmm2d", _grid_text(results)), note,
                              counting=counting), results, "gmm2d")


def _sweep_difference(results, panel, label):
    sweep = _get(results, "gmm1d", panel)
    if not sweep or len(sweep["x"]) < 2:
        return None
    cfg = _cfg(results, "gmm1d")
    n = _num_samples(results, "gmm1d")
    first, last = _snap(sweep["per_seed"][0], n), _snap(sweep["per_seed"][-1], n)
    counting = intervals.difference(_rate_interval(first, n), _rate_interval(last, n))
    return _gated(Measurement(list(first - last),
                              _protocol(results, "gmm1d", f"{label} {sweep['x']}"),
                              f"rate {_pct(float(first.mean()))} at {sweep['x'][0]} -> "
                              f"{_pct(float(last.mean()))} at {sweep['x'][-1]} (k = "
                              f"{cfg.get('k')}, same training steps for every configuration)",
                              counting=counting), results, "gmm1d", sweep.get("configs"))


def _smooth_x0(results):
    sources = _get(results, "score_analysis", "sources") or {}
    src = next((src for src in sources.values() if "per_timestep" in src), None)
    if not src or not src["per_timestep"]:
        return None
    per_t = src["per_timestep"]
    t = min((int(k) for k in per_t if int(k) > 0), default=None)
    if t is None:
        return None
    gaps = per_t[str(t)]["gaps"]
    ratios = [g["max_slope_exact"] / max(g["max_slope_learned"], 1e-12) for g in gaps]
    m = Measurement(ratios, _protocol(results, "gmm1d", f"score analysis at t={t}, per gap "
                                      "and seed"),
                    f"steepest slope of x0_hat(x_t) between modes: exact / learned at t={t}")
    # Gated on the analysed configuration's own curve (score_analysis: Fig. 2's first mixture).
    return _gated(m, results, "gmm1d", [src["config"]] if "config" in src else None)


def _bridge_detection(b, key, num_samples) -> tuple:
    """(counting interval, positives) of one configuration's bridge detection `key` (auroc or
    removed_at_96_kept) over its seeds, from `mixture_study.bridge_table`'s entry `b`."""
    vals = _floats(b[f"bridges_{key}"]["per_seed"])
    pos = [int(p) for p in b["num_bridges"]]
    if key == "auroc":
        neg = [num_samples * (1 - h) for h in _floats(b["hallucinated"]["per_seed"])]
        ok = [i for i, v in enumerate(vals) if np.isfinite(v)]
        return ([vals[i] for i in ok], [pos[i] for i in ok], [neg[i] for i in ok]), sum(pos)
    return _pooled(vals, pos), sum(pos)


def _combine(parts, key) -> tuple:
    """The counting interval of several configurations' `_bridge_detection` parts."""
    if key == "auroc":
        aucs, pos, neg = (sum((list(p[i]) for p in parts), []) for i in range(3))
        return intervals.mean_auroc_interval(aucs, pos, neg)
    return intervals.wilson(sum(p[0] for p in parts), sum(p[1] for p in parts))


def _detection_2d(key):
    def extract(results):
        vals = _mean_over_layouts(results, f"bridges_{key}")
        if vals is None:
            return None
        n = _num_samples(results, "gmm2d")
        parts = [_bridge_detection(_bridges(results, "gmm2d", name), key, n)
                 for name in _layouts(results)]
        notes = ", ".join(f"{n} {_fmt(_bridges(results, 'gmm2d', n)[f'bridges_{key}']['mean'], key)}"
                          for n in _layouts(results))
        return _gated(Measurement(vals, _protocol(results, "gmm2d", _grid_text(results)
                                                  + ", window t in [0, 10), bridges vs "
                                                  "in-support"), notes,
                                  counting=_combine([p for p, _ in parts], key),
                                  positives=sum(q for _, q in parts)), results, "gmm2d")
    return extract


def _detection_best_window(key):
    """Bridges vs in-support on the 2D grids at the window of the detection sweep with the best
    AUROC (mean over layouts; one window for both), per seed averaged over layouts. The window
    is picked on the same samples: a mild optimism, stated in the note."""
    def extract(results):
        src = (_get(results, "detection", "sources") or {}).get("gmm2d")
        if not src or any("bridge_windows" not in c for c in src["configs"].values()):
            return None
        confs = src["configs"]
        with np.errstate(all="ignore"):
            aur = np.nanmean([_floats([r["auroc"]["mean"] for r in c["bridge_windows"]])
                              for c in confs.values()], axis=0)
            if not np.any(np.isfinite(aur)):
                return None
            best = int(np.nanargmax(aur))
            stacked = np.asarray([_floats(c["bridge_windows"][best][key]["per_seed"])
                                  for c in confs.values()])
            values = [float(np.nanmean(col)) for col in stacked.T if np.any(np.isfinite(col))]
        rows = [c["bridge_windows"][best] for c in confs.values()]
        pos = [[int(p) for p in _floats(r["num_positive"]["per_seed"])] for r in rows]
        num = [_floats(r["num"]["per_seed"]) for r in rows]
        vals = [_floats(r[key]["per_seed"]) for r in rows]
        if key == "auroc":
            flat = [(v, p, n - p) for vs, ps, ns in zip(vals, pos, num)
                    for v, p, n in zip(vs, ps, ns) if np.isfinite(v)]
            counting = intervals.mean_auroc_interval(*zip(*flat)) if flat else (
                float("nan"), float("nan"))
        else:
            counting = intervals.wilson(*[sum(x) for x in zip(*(
                _pooled(vs, ps) for vs, ps in zip(vals, pos)))])
        lo, hi = src["windows"][best]
        notes = ", ".join(f"{n} {_fmt(c['bridge_windows'][best][key]['mean'], key)} (official "
                          f"window {_fmt(c['bridge_windows'][0][key]['mean'], key)})"
                          for n, c in confs.items())
        cfg = _cfg(results, "detection")
        m = Measurement(values, _protocol(results, "gmm2d", _grid_text(results)) +
                        f"; detection: {cfg.get('num_samples')} fresh samples/model, best of "
                        f"{len(src['windows'])} windows: t in [{lo}, {hi})",
                        notes + "; the window is chosen on these samples", counting=counting,
                        positives=sum(sum(p) for p in pos))
        return _gated(m, results, "gmm2d")
    return extract


def _detection_1d(results):
    name = _first_1d(results)
    b = name and _bridges(results, "gmm1d", name)
    if not b:
        return None
    vals = [v for v in _floats(b["bridges_removed_at_96_kept"]["per_seed"]) if np.isfinite(v)]
    (removed, pos), positives = _bridge_detection(b, "removed_at_96_kept",
                                                  _num_samples(results, "gmm1d"))
    return _gated(Measurement(vals, _protocol(results, "gmm1d", name + ", window t in [0, 10), "
                                              "bridges vs in-support"),
                              f"AUROC {_fmt(b['bridges_auroc']['mean'], 'auroc')}; bridges per model "
                              f"{b['num_bridges']}", counting=intervals.wilson(removed, pos),
                              positives=positives), results, "gmm1d", [name])


def _shapes_duplicates(results):
    per_seed = _get(results, "shapes", "rates", "per_seed")
    if not per_seed:
        return None
    cfg = _cfg(results, "shapes")
    shares = [r["category_primary"]["duplicate"] for r in per_seed]
    return Measurement(shares,
                       f"shapes preset {cfg.get('preset')}: {cfg.get('resolution')}px, "
                       f"{cfg.get('steps')} steps, {cfg.get('num_samples')} images/model, "
                       f"seeds {cfg.get('seeds')}",
                       "share of generated images whose main defect is a duplicated shape",
                       counting=_rate_interval(shares, _num_samples(results, "shapes")))


def _shapes_duplicate_detection(results):
    """Duplicates (the mode-interpolation kind) vs in-support, max over columns, at the paper's
    window (experiments.shapes_detection's first); the best window and the content controls in
    the note (a wide window's AUROC is mostly the ink it sees forming)."""
    sources = _get(results, "shapes_detection", "sources")
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
        values += _floats([s["duplicate"]["auroc"] for s in rows[0]["per_seed"]])
        counts += [(s["duplicate"]["auroc"], s["duplicate"]["num_positive"],
                    s["duplicate"]["num"] - s["duplicate"]["num_positive"])
                   for s in rows[0]["per_seed"] if s["duplicate"]["auroc"] is not None]
        note = (f"{name}: official t in {rows[0]['window']} {_fmt(aur[0], 'auroc')}, best "
                f"window t in {rows[best]['window']} {_fmt(aur[best], 'auroc')} (pooled)")
        if "controls" in src:
            note += (f", final column ink alone {_fmt(src['controls']['final_ink_column_max'], 'auroc')}, "
                     f"rank correlation of that window's column variance with the column's ink "
                     f"{_fmt(src['controls']['ink_correlation'][best], 'auroc')}")
        notes.append(note)
    if not values:
        return None
    cfg = _cfg(results, "shapes_detection")
    return Measurement(values, f"shapes_detection: fresh samples of the shapes models, "
                       f"{cfg.get('num_samples')} images/model, dense-tail sampler (every t < "
                       f"{cfg.get('dense_steps')}), duplicates vs in-support, max over columns, "
                       "official window", "; ".join(notes),
                       counting=(intervals.mean_auroc_interval(*zip(*counts)) if counts
                                 else (float("nan"), float("nan"))),
                       positives=sum(c[1] for c in counts))


def _shapes_detection_controlled(results):
    """Duplicates vs in-support images with the same number of shapes (whole image; the best
    window of experiments.shapes_detection by this AUROC), one value per source."""
    sources = _get(results, "shapes_detection", "sources")
    values, notes, positives = [], [], 0
    for name, src in (sources or {}).items():
        if "controls" not in src:
            continue
        strat = _floats(src["controls"]["stratified"]["whole_image"])
        if not np.any(np.isfinite(strat)):
            continue
        best = int(np.nanargmax(strat))
        values.append(strat[best])
        positives += src["detection"]["whole_image"][best]["pooled"]["duplicate"]["num_positive"]
        notes.append(f"{name}: t in {src['detection']['whole_image'][best]['window']} "
                     f"{strat[best]:.3f}, official {_fmt(strat[0], 'auroc')}")
    if not values:
        return None
    return Measurement(values, "shapes_detection: whole-image variance, AUROC over pairs of "
                       "images with the same number of shapes, best window", "; ".join(notes),
                       counting=(float("nan"), float("nan")), positives=positives)


def _shapes_detection(results):
    duplicates = _shapes_duplicate_detection(results)
    if duplicates is not None:
        return duplicates
    det = _get(results, "shapes", "detection")
    if not det:
        return None
    best = max(det, key=lambda n: (det[n]["pooled"] or {}).get("auroc", -1))
    rows = det[best]["per_seed"]
    if not rows:
        return None
    cfg = _cfg(results, "shapes")
    counts = [(r["auroc"], r["num_positive"], r["num"] - r["num_positive"]) for r in rows
              if "num_positive" in r and r["auroc"] is not None]
    return Measurement([r["auroc"] for r in rows], f"shapes preset {cfg.get('preset')}: variance "
                       f"'{best}' over sampling steps {cfg.get('hal_window')}",
                       "all hallucinations (duplicates, empties, malformed) vs in-support",
                       counting=(intervals.mean_auroc_interval(*zip(*counts)) if counts
                                 else (float("nan"), float("nan"))),
                       positives=sum(c[1] for c in counts) if counts else None)


def _recursive(dataset, metric):
    def extract(results):
        res = _get(results, "recursive", "results", dataset)
        if not res:
            return None
        curves = res["curves"]["generated"][metric]
        if "random" not in curves or "variance" not in curves:
            return None
        d = results["recursive"].get("datasets", {}).get(dataset, {})
        n = float(d.get("num_candidates") or 0) if metric == "hallucination_rate" else 0
        rnd = _snap(curves["random"]["per_seed"][-1], n)
        var = _snap(curves["variance"]["per_seed"][-1], n)
        gens = len(curves["random"]["mean"])
        fmt = _pct if metric == "hallucination_rate" else (lambda v: f"{v:.2f}")
        cfg = _cfg(results, "recursive")
        what = res.get("info", {}).get("source", dataset)
        if d:
            what += (f"; T={d.get('T')}, {d.get('steps')} steps x batch {d.get('batch_size')}, "
                     f"keep {d.get('num_train')} of {d.get('num_candidates')} candidates, "
                     f"{d.get('sampling_steps')} sampling steps")
        counting = None
        if metric == "hallucination_rate":
            counting = intervals.difference(_rate_interval(rnd, n), _rate_interval(var, n))
        return Measurement(list(rnd - var),
                           f"recursive preset {cfg.get('preset')}: {what}; {gens} generations,"
                           f" seeds {d.get('seeds', cfg.get('seeds'))}",
                           f"last generation: random {fmt(float(rnd.mean()))}, variance filter "
                           f"{fmt(float(var.mean()))} ({metric})", counting=counting)
    return extract


def _control(results):
    vals, notes, trials = [], [], []
    for exp in ("gmm1d", "gmm2d"):
        for name, b in (_get(results, exp, "bridges") or {}).items():
            vals.append(b["oracle"]["hallucinated"])
            trials.append(_num_samples(results, exp))
    if not vals:
        return None
    samplers = _get(results, "ablations", "samplers") or {}
    for src, variants in samplers.items():
        for v, confs in variants.items():
            if "T'" in v:
                worst = max(c["oracle_rate"] for c in confs.values())
                notes.append(f"{v} {_pct(worst)}")
    note = (f"exact score with the experiments' 1000-step DDPM sampler, one value per mixture of "
            f"gmm1d/gmm2d (largest {_pct(max(vals))})")
    if notes:
        note += "; strided samplers make even the exact score leave the support: " + ", ".join(
            notes[:4])
    return Measurement(vals, "exact-score sampler beside every trained model", note,
                       counting=_rate_interval(vals, trials))


def _not_here(key: str, statement: str, quantity: str, reason: str) -> Claim:
    """A claim of the paper this project cannot measure: always "not measured", with `reason`."""
    return Claim(key, statement, quantity, 0.0, 0.0, True, lambda r: None, unavailable=reason)


CLAIMS = (
    Claim("control", "The exact score does not hallucinate (the control).",
          "exact-score hallucination rate per mixture (1000 steps)", 0.001, 0.01, False, _control),
    Claim("interpolation_1d", "A DDPM trained on a 1D mixture samples between nearest modes, "
          "where the data has no mass; the exact score does not (Fig. 2).",
          "bridge rate, DDPM minus exact score", 0.001, 0.0, True, _interp_1d),
    Claim("interpolation_2d", "The same on the 25-mode grids (Fig. 3).",
          "bridge rate, DDPM minus exact score (mean of layouts)", 0.001, 0.0, True, _interp_2d),
    Claim("rotated_no_x_axis", "On the rotated grid there is no interpolation along the x-axis "
          "(only nearest modes interpolate; Fig. 3c,d).",
          "share of rotated-grid hallucinations on x-axis pairs", 0.05, 0.2, False, _rotated_axis),
    Claim("more_data", "More training samples, fewer interpolated samples (Fig. 2, App. C).",
          "rate at the smallest minus the largest training set", 0.0, 0.0, True,
          lambda r: _sweep_difference(r, "size_sweep", "training-set sizes")),
    Claim("separation", "Farther modes, fewer interpolated samples (Fig. 2, App. C).",
          "rate at the smallest minus the largest spacing", 0.0, 0.0, True,
          lambda r: _sweep_difference(r, "separation_sweep", "mode spacings")),
    Claim("smooth_x0", "The learned x0_hat(x_t) is a smoothed version of the exact near-step "
          "between modes (Fig. 4).", "exact / learned steepest slope", 2.0, 1.0, True,
          _smooth_x0, percent=False),
    Claim("detect_auroc_2d", "Trajectory variance separates hallucinations from in-support "
          "samples (Fig. 7), on the 25-mode grid.", "AUROC, bridges vs in-support", 0.95, 0.75,
          True, _detection_2d("auroc"), percent=False, detection=True),
    Claim("detect_95_96_2d", "Filtering on it removes > 95 % of hallucinations while keeping 96 % "
          "of in-support samples, on the 25-mode grid.", "bridges removed at 96 % kept", 0.95,
          0.5, True, _detection_2d("removed_at_96_kept"), detection=True),
    Claim("detect_auroc_2d_best", "The same with the best window of the sweep (the paper's "
          "window is the last 10 of 1000 steps).", "AUROC, bridges vs in-support, best window",
          0.95, 0.75, True, _detection_best_window("auroc"), percent=False, detection=True),
    Claim("detect_95_96_2d_best", "Removed at 96 % kept with that window, 25-mode grid.",
          "bridges removed at 96 % kept, best window", 0.95, 0.5, True,
          _detection_best_window("removed_at_96_kept"), detection=True),
    Claim("detect_95_96_1d", "The same, 1D (Fig. 2's first mixture).",
          "bridges removed at 96 % kept", 0.95, 0.5, True, _detection_1d, detection=True),
    Claim("shapes_duplicates", "A DDPM on SIMPLE SHAPES generates duplicated shapes, never seen "
          "in training (Figs. 1, 5).", "duplicate share of generated images", 0.01, 0.0, True,
          _shapes_duplicates),
    Claim("shapes_detect", "Trajectory variance separates SIMPLE SHAPES hallucinations (Fig. 7).",
          "AUROC, official window (duplicates vs in-support where measured, else every "
          "hallucination)", 0.9, 0.6, True, _shapes_detection, percent=False, detection=True),
    Claim("shapes_detect_controlled", "The same beyond the amount of content: duplicates vs "
          "in-support images holding as many shapes.", "AUROC among images with the same "
          "number of shapes, best window", 0.9, 0.6, True, _shapes_detection_controlled,
          percent=False, detection=True),
    Claim("recursive_2d", "Variance filtering slows collapse under recursive retraining, 2D grid "
          "(Fig. 8).", "hallucination rate, random minus variance filter, last generation",
          0.0, 0.0, True, _recursive("gmm2d", "hallucination_rate")),
    Claim("recursive_shapes", "The same on SIMPLE SHAPES (Fig. 8).",
          "hallucination rate, random minus variance filter, last generation", 0.0, 0.0, True,
          _recursive("shapes", "hallucination_rate")),
    Claim("recursive_digits", "Filtering slows collapse on MNIST (Fig. 8; here rendered digits, "
          "Frechet distance in a small classifier's features).",
          "Frechet distance, random minus variance filter, last generation", 0.0, 0.0, True,
          _recursive("digits", "frechet"), percent=False),
    Claim("vdm_interpolates", "Variational diffusion models trained with T steps and sampled "
          "with T' also interpolate (App. Fig. 11, first columns).",
          "bridge rate, VDM minus exact score", 0.001, 0.0, True, lambda r: None,
          unavailable="implemented (`python -m experiments.vdm`: T x T' bridge rates against "
                      "the exact score sampled the same way) but not yet run at its preset; "
                      "experiments.ablations covers the figure's other columns"),
    _not_here("hands", "A latent diffusion model trained on 11k Hands draws extra and missing "
              "fingers, and the trajectory variance flags them (Figs. 1, 5, 17-23).",
              "hallucination rate and AUROC on hands",
              "the 11k Hands images are not shipped by any package installable here and nothing "
              "is downloaded at run time; `experiments.shapes --images_dir=PATH` runs the same "
              "pipeline on a folder of your own images"),
    _not_here("shapes_64", "The SIMPLE SHAPES results at the paper's 64x64 resolution (Figs. 1, "
              "5, 7, 8, 10).", "duplicate share and AUROC at 64x64",
              "the 64x64 `paper` preset needs a GPU (none was lent); it has run only at toy "
              "width on the CPU (a test); the SIMPLE SHAPES rows above are 32x32"),
)


def _pct(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}%"


def _fmt(v, key: str) -> str:
    """An AUROC as 0.xxx, anything else as a percentage; undefined (None / NaN) as n/a."""
    if key != "auroc":
        return _pct(v)
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


def ledger(results: dict) -> list:
    """One row per claim: statement, quantity, value (mean, std, n, per seed), bars, protocol,
    note and verdict. results: {experiment: {"metrics": metrics.json, "config": config.json}}."""
    rows = []
    for claim in CLAIMS:
        error = ""
        try:
            m = claim.extract(results)
        except (KeyError, TypeError, IndexError, ValueError) as e:
            # a metrics file of another layout: say so in the row rather than guess
            m, error = None, f"metrics layout not understood ({type(e).__name__}: {e})"
        row = {"key": claim.key, "claim": claim.statement, "quantity": claim.quantity,
               "bar": {"full": claim.full, "weak": claim.weak,
                       "direction": "higher" if claim.higher else "lower"},
               "percent": claim.percent}
        if m is None or not m.n:
            row.update(verdict=NOT_MEASURED, mean=None, std=None, n=0, per_seed=[], protocol="",
                       note=error or claim.unavailable, seed_interval=None, counting=None,
                       positives=None, converged=None)
        else:
            finite = [v for v in _floats(m.values) if np.isfinite(v)]
            _, lo, hi = intervals.t_interval(finite) if finite else (0, float("nan"),
                                                                     float("nan"))
            note = "; ".join(x for x in (m.convergence_note, m.note) if x)
            row.update(verdict=verdict(m.values, claim.full, claim.weak, claim.higher,
                                       counting=m.counting, positives=m.positives,
                                       min_positives=MIN_POSITIVES if claim.detection else 0,
                                       converged=m.converged),
                       mean=m.mean, std=None if m.n < 2 else m.std, n=m.n,
                       per_seed=[float(v) for v in m.values], protocol=m.protocol, note=note,
                       seed_interval=None if not np.isfinite(lo) else [lo, hi],
                       counting=None if m.counting is None else [float(c) for c in m.counting],
                       positives=m.positives, converged=m.converged)
        rows.append(row)
    return rows


EXPERIMENTS = ("gmm1d", "gmm2d", "detection", "trajectories", "score_analysis", "ablations",
               "shapes", "shapes_detection", "recursive")


def ledger_from_workdir(root) -> list:
    """The ledger of a directory holding finished experiments in sub-directories named after
    them (the main job's layout; also a GPU run's)."""
    results = {}
    for name in EXPERIMENTS:
        d = Path(root) / name
        if (d / "metrics.json").exists():
            results[name] = {"metrics": json.loads((d / "metrics.json").read_text()),
                             "config": json.loads((d / "config.json").read_text())
                             if (d / "config.json").exists() else {}}
            # The recursive study keeps one config per dataset in its sub-directories.
            results[name]["datasets"] = {p.parent.name: json.loads(p.read_text())
                                         for p in sorted(d.glob("*/config.json"))}
    return ledger(results)


def _value(row) -> str:
    if row["mean"] is None:
        return "-"
    f = (lambda v: f"{100 * v:.2f}%") if row["percent"] else (lambda v: f"{v:.3f}")
    spread = f" ± {f(row['std'])}" if row["std"] is not None else " (1 value, no spread)"
    return f"{f(row['mean'])}{spread} (n={row['n']})"


def _bounds(row) -> str:
    """The 95 % intervals the verdict used: over seeds (Student t) and from the counts."""
    if row["mean"] is None:
        return "-"
    f = (lambda v: f"{100 * v:.2f}%") if row["percent"] else (lambda v: f"{v:.3f}")
    show = lambda iv: ("n/a" if iv is None or not all(np.isfinite(_floats(iv)))  # JSON: null
                       else f"[{f(iv[0])}, {f(iv[1])}]")
    parts = [f"seeds {show(row['seed_interval'])}"]
    if row["counting"] is not None:
        parts.append(f"counts {show(row['counting'])}")
    if row["positives"] is not None:
        parts.append(f"{row['positives']} positives")
    return "; ".join(parts)


def _bar(row) -> str:
    f = (lambda v: f"{100 * v:g}%") if row["percent"] else (lambda v: f"{v:g}")
    op = ">" if row["bar"]["direction"] == "higher" else "<"
    return f"bounds {op} {f(row['bar']['full'])}; mean {op} {f(row['bar']['weak'])}"


def verdict_counts(rows: list) -> dict:
    """How many rows have each verdict (every verdict listed, zeros included)."""
    return {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}


def ledger_markdown(rows: list) -> str:
    """The ledger as a Markdown table, with the rule under it."""
    lines = ["| claim (paper) | measured quantity | value (mean ± std over seeds) | 95 % "
             "intervals | bars: reproduced / partly | verdict | protocol | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["claim"], r["quantity"], _value(r), _bounds(r), _bar(r),
                 f"**{r['verdict']}**", r["protocol"] or "-", r["note"] or "-"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    counts = verdict_counts(rows)
    lines += ["", ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".", "", RULE]
    return "\n".join(lines) + "\n"


def _cell(row) -> str:
    if row["verdict"] == NOT_MEASURED:
        return "not measured"
    value = _value(row).replace(" (1 value, no spread)", "")
    return f"{value}: **{row['verdict']}**"


def results_markdown(columns: dict, sources: dict, progress: dict | None = None) -> str:
    """The ledgers of several budgets side by side ({label: rows}, each from a `ledger.json`):
    one line per claim with each budget's value and verdict, the verdict counts per budget, the
    protocol each row was measured with, and the rule. `sources` ({label: path}) is cited;
    `progress` ({label: Markdown}) says how far a budget's runs have got."""
    labels = list(columns)
    keys = [r["key"] for r in next(iter(columns.values()))]
    by = {label: {r["key"]: r for r in rows} for label, rows in columns.items()}
    lines = ["# Results: the claims ledger by training budget", "",
             "Generated by `python -m experiments.ledger --results=docs/results.md` from the "
             "committed ledgers (" + ", ".join(f"{label}: `{sources[label]}`" for label in labels)
             + "); a test checks it is current. Each value is the mean ± std over seeds (n = "
             "seeds or models), with the verdict of the rule at the end.", "",
             "| claim (paper) | quantity | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for key in keys:
        first = by[labels[0]][key]
        cells = [first["claim"], first["quantity"]] + [_cell(by[label][key]) for label in labels]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", "| verdicts | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for v in VERDICTS:
        lines.append(f"| {v} | " + " | ".join(str(verdict_counts(columns[label])[v])
                                               for label in labels) + " |")
    for label, text in (progress or {}).items():
        lines += ["", f"## {label}: progress", "", text.rstrip()]
    for label in labels:
        lines += ["", f"## {label}: protocols, intervals and notes", "",
                  ledger_markdown(columns[label]).split("\n\n" + RULE)[0].rstrip()]
    lines += ["", RULE]
    return "\n".join(lines) + "\n"
