"""The claims ledger: each claim of the paper, the value measured here, and a verdict by one rule.

Each study declares its own claims (`STUDY.claims` in `mi_jax.studies.<name>`, the `Claim`s and
the extractors that read its metrics); here are the rule (`verdict`, `RULE`, also printed by
`experiments.ledger --help`), the `Measurement` an extractor returns, the helpers extractors read
metrics with, the claims no study here can measure (`PAPER_ONLY`), the row order and the rendering.
`ledger(results)` takes the metrics and configs of finished studies (as written to their work
directories) and returns one row per claim; `ledger_from_workdir(root)` reads them from a main-job
directory (or any directory holding `gmm1d/`, `gmm2d/`, ... sub-directories, e.g. a GPU run), and
`ledger_markdown(rows)` renders the table. Nothing here is written by hand: a value that is not in
the metrics makes the row "not measured".
"""

from __future__ import annotations

import dataclasses
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
        self.values = floats(self.values)  # JSON null (an undefined seed) -> NaN

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
    v = np.asarray(floats(values), np.float64)
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
# Reading the studies' metrics: results = {study: {"metrics": ..., "config": ...}}. Each
# study's extractors (its `STUDY.claims`) read its metrics with these.
# ------------------------------------------------------------------------------------------


def floats(values) -> list:
    """Per-seed values from JSON (null -> NaN: a seed where the quantity is undefined)."""
    return [float("nan") if v is None else float(v) for v in values]


def read(results, exp, *path):
    """metrics[path[0]][path[1]]... of study `exp` in `results`, None where absent. The first key
    must be one the study's schema declares (`registry.Schema`): a reader of a renamed or
    undeclared key fails loudly instead of turning its row into "not measured"."""
    from mi_jax.studies import registry

    schema = registry.get(exp).schema
    if path and not schema.declares(path[0]):
        raise registry.SchemaError(f"key={path[0]}: not in the metrics schema of {exp} "
                                   f"(declared: {', '.join(schema.metrics + schema.optional)})")
    node = results.get(exp, {}).get("metrics")
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    return node


def config_of(results, exp) -> dict:
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


def protocol(results, exp, what: str) -> str:
    """How study `exp`'s models were trained and sampled, for a row's protocol column."""
    cfg = config_of(results, exp)
    return (f"{exp} preset {cfg.get('preset', '?')}: {what}; {_recipe(cfg)}; "
            f"{cfg.get('num_samples')} samples/model; seeds {cfg.get('seeds')}")


def convergence(results, exp, names=None) -> tuple:
    """(converged, note) of study `exp`'s models by the rule's step (1), over the configurations
    `names` (default: every one with a curve). A configuration that stops early (`epochs`) is
    judged on the curve up to its own last step."""
    conv = read(results, exp, "convergence")
    cfg = config_of(results, exp)
    if not conv:
        return False, f"{exp}: no convergence curve (--curve_every)"
    seeds = len(cfg.get("seeds") or [0])
    pooled = (cfg.get("curve_samples") or 0) * seeds
    for name in (names or list(conv)):
        entry = conv.get(name)
        if not entry or not entry.get("steps"):
            return False, f"{name}: no convergence curve"
        end = int(cfg.get("steps") or entry["steps"][-1])
        n_train = read(results, exp, "configs", name, "num_train") or cfg.get("num_train")
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
            return False, (f"{name}: bridge rate {pct(a)} at step {s0} -> {pct(b)} at step "
                           f"{s1} (allowed change {pct(tol)})")
    return True, ""


def gated(m: Measurement, results, exp, names=None) -> Measurement:
    """`m` with the convergence of study `exp`'s models (configurations `names`) attached."""
    m.converged, m.convergence_note = convergence(results, exp, names)
    return m


def pooled_counts(rates, trials_each) -> tuple:
    """(successes, trials) of per-model rates, each over `trials_each` samples (one number, or
    one per model)."""
    rates = np.asarray(floats(rates), np.float64)
    n = np.broadcast_to(np.asarray(trials_each, np.float64), rates.shape)
    ok = np.isfinite(rates)
    return float(np.sum(np.round(rates[ok] * n[ok]))), float(np.sum(n[ok]))


def rate_interval(rates, trials_each) -> tuple:
    """The Wilson interval of per-model rates pooled into counts (`pooled_counts`)."""
    return intervals.wilson(*pooled_counts(rates, trials_each))


def snap(rates, n) -> np.ndarray:
    """Rates read back from float32 JSON, snapped to whole counts of `n` samples (so that equal
    counts differ by exactly 0, not by float rounding); unchanged when n is unknown."""
    rates = np.asarray(floats(np.ravel(rates)), np.float64).reshape(np.shape(rates))
    return np.round(rates * n) / n if n else rates


def num_samples(results, exp) -> float:
    return float(config_of(results, exp).get("num_samples") or 0)


def pct(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}%"


def fmt(v, key: str) -> str:
    """An AUROC as 0.xxx, anything else as a percentage; undefined (None / NaN) as n/a."""
    if key != "auroc":
        return pct(v)
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.3f}"


# ------------------------------------------------------------------------------------------
# The rows: every registered study's claims, and the claims no study here can measure
# ------------------------------------------------------------------------------------------


def _not_here(key: str, statement: str, quantity: str, reason: str) -> Claim:
    """A claim of the paper this project cannot measure: always "not measured", with `reason`."""
    return Claim(key, statement, quantity, 0.0, 0.0, True, lambda r: None, unavailable=reason)


PAPER_ONLY = (
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

# The table's row order: the paper's (the control, interpolation, its mechanism, detection,
# SIMPLE SHAPES, recursion, then what is not measured here). A registered claim not listed
# here follows, in the registry's order.
ROW_ORDER = ("control", "interpolation_1d", "interpolation_2d", "rotated_no_x_axis", "more_data",
             "separation", "smooth_x0", "detect_auroc_2d", "detect_95_96_2d",
             "detect_auroc_2d_best", "detect_95_96_2d_best", "detect_95_96_1d",
             "shapes_duplicates", "shapes_detect", "shapes_detect_controlled", "recursive_2d",
             "recursive_shapes", "recursive_digits", "vdm_interpolates", "hands", "shapes_64")


def claims() -> list:
    """Every claim of the ledger, in row order: the registered studies' and `PAPER_ONLY`."""
    from mi_jax.studies import registry

    found = [c for s in registry.studies() for c in s.claims] + list(PAPER_ONLY)
    keys = [c.key for c in found]
    if len(set(keys)) != len(keys):
        raise ValueError(f"claim keys are not unique: {sorted(keys)}")
    rank = {k: i for i, k in enumerate(ROW_ORDER)}
    return sorted(found, key=lambda c: rank.get(c.key, len(ROW_ORDER)))  # stable: registry order


def ledger(results: dict) -> list:
    """One row per claim: statement, quantity, value (mean, std, n, per seed), bars, protocol,
    note and verdict. results: {experiment: {"metrics": metrics.json, "config": config.json}}."""
    from mi_jax.studies.registry import SchemaError

    rows = []
    for claim in claims():
        error = ""
        try:
            m = claim.extract(results)
        except SchemaError:
            raise  # a reader of an undeclared key: a bug to fix, not a row to annotate
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
            finite = [v for v in floats(m.values) if np.isfinite(v)]
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


def ledger_from_workdir(root) -> list:
    """The ledger of a directory holding finished studies in sub-directories named after them
    (the main job's layout; also a GPU run's). Each metrics.json is checked against its study's
    schema (`registry.SchemaError` names a missing key)."""
    from mi_jax import workdir as wd
    from mi_jax.studies import registry

    results = {}
    for study in registry.studies():
        d = Path(root) / study.name
        if (d / "metrics.json").exists():
            results[study.name] = {
                "metrics": study.read_metrics(d),
                "config": wd.read_config(d) if (d / wd.CONFIG_FILE).exists() else {}}
            # A study may keep one config per part in its sub-directories (recursive: datasets).
            results[study.name]["datasets"] = {p.parent.name: wd.read_config(p)
                                               for p in sorted(d.glob(f"*/{wd.CONFIG_FILE}"))}
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
    show = lambda iv: ("n/a" if iv is None or not all(np.isfinite(floats(iv)))  # JSON: null
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


def results_markdown(columns: dict, sources: dict, progress: dict | None = None,
                     official: dict | None = None) -> str:
    """The ledgers of several budgets side by side ({label: rows}, each from a `ledger.json`):
    one line per claim with each budget's value and verdict, the verdict counts per budget, the
    protocol each row was measured with, and the rule. `sources` ({label: path}) is cited;
    `progress` ({label: Markdown}) says how far a budget's runs have got; `official` ({label:
    Markdown}) is the official code beside mi_jax at that budget (`benchmarks.official_compare`).
    """
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
    for label, text in (official or {}).items():
        lines += ["", f"## {label}: the official PyTorch code beside mi_jax", "", text.rstrip()]
    for label in labels:
        lines += ["", f"## {label}: protocols, intervals and notes", "",
                  ledger_markdown(columns[label]).split("\n\n" + RULE)[0].rstrip()]
    lines += ["", RULE]
    return "\n".join(lines) + "\n"


def write_ledger(root) -> str:
    """The claims ledger of a directory of finished studies: `ledger.md`, `ledger.json`."""
    from mi_jax import workdir as wd
    from mi_jax.studies import registry
    from mi_jax.validation import InputError

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"workdir={root}: is not a directory")
    rows = ledger_from_workdir(root)
    if all(r["verdict"] == NOT_MEASURED for r in rows):
        raise InputError(f"workdir={root}: holds no finished experiment ("
                         + ", ".join(registry.MAIN_JOB) + " sub-directories)")
    text = ledger_markdown(rows)
    wd.write_json(root / "ledger.json", {"ledger": rows, "rule": RULE})
    wd.write_text(root / "ledger.md", text)
    return text


OFFICIAL_COMPARE = "official_compare"  # a budget's official-vs-mi_jax table, beside its ledger


def write_results(path, columns) -> str:
    """`results_markdown` of the committed ledgers named by `columns` ("label:directory", each
    directory holding a `ledger.json`), written to `path`; returns the text."""
    from mi_jax import workdir as wd
    from mi_jax.validation import InputError

    rows, sources, progress, official = {}, {}, {}, {}
    for item in columns:
        label, sep, directory = item.partition(":")
        if not sep or not label or not directory:
            raise InputError(f"columns={item}: must be label:directory")
        file = Path(directory) / "ledger.json"
        if not Path(directory).is_dir():
            raise InputError(f"columns={item}: {directory} is not a directory")
        if file.exists():
            rows[label], sources[label] = wd.read_json(file)["ledger"], str(file)
        else:  # no study finished there yet: every row "not measured"
            rows[label], sources[label] = ledger({}), f"{directory} (no ledger.json yet)"
        if (Path(directory) / "units").is_dir():  # the paper budget's units (paper_budget)
            from mi_jax.studies import paper_budget as pb

            progress[label] = "\n".join(
                [pb.PROGRESS_HEADER] + [pb.unit_row(directory, u) for u in pb.units()])
        table = Path(directory) / OFFICIAL_COMPARE / "table.md"
        if table.exists():  # benchmarks.official_compare's output at this budget
            official[label] = (f"From `{table}` (`python -m benchmarks.official_compare`; "
                               "commands in docs/experiments.md).\n\n" + table.read_text())
    text = results_markdown(rows, sources, progress, official)
    wd.write_text(Path(path), text)
    return text
