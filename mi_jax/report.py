"""The main job's report: `summary.md` from the headline numbers of finished experiments.

`summary_markdown(results, preset, ledger_rows, times)` renders the claims ledger (see
`mi_jax.ledger`), each registered study's own section (`STUDY.summary`, `mi_jax.studies.registry`)
in the registry's order, and the job's wall time per study; every number comes from the studies'
metrics and `sittings.json` files. Here are also the formatting
helpers the sections share. A spread over a single seed is shown as "(1 seed)", never as "+- 0".
"""

from __future__ import annotations

import math

from mi_jax import ledger


def _undefined(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def pct(v) -> str:
    return "n/a" if _undefined(v) else f"{100 * v:.2f}%"


def auroc(v) -> str:
    return "n/a" if _undefined(v) else f"{v:.3f}"


def pm(mean, std, fmt=pct) -> str:
    """'mean +- std', or 'mean (1 seed)' when the spread is undefined (None / NaN)."""
    return f"{fmt(mean)} (1 seed)" if _undefined(std) else f"{fmt(mean)} +- {fmt(std)}"


def detection_lines(detection: dict) -> list:
    """The trajectory variance (official window) as a detector: paper claim >95% removed at 96% kept."""
    lines = ["", "Trajectory variance as a hallucination detector (mean +- std over seeds; the paper "
             "reports >95% of hallucinations removed while 96% of in-support samples are kept):", "",
             "| configuration | AUROC | removed at 96% kept | kept at 95% removed |", "|---|---|---|---|"]
    for name, d in detection.items():
        (a, sa), (r, sr), (k, sk) = d["auroc"], d["removed_at_96_kept"], d["kept_at_95_removed"]
        lines.append(f"| {name} | {pm(a, sa, auroc)} | {pm(r, sr)} | {pm(k, sk)} |")
    return lines


def time_lines(times: dict) -> list:
    """The job's wall time per study ({name: (seconds, sittings) or None}) and in total."""
    known = {n: t for n, t in times.items() if t}
    lines = ["## Wall time", "", "Every sitting that ran the study, interruptions included (a "
             "study run before timing was recorded: unknown).", "",
             "| study | wall time | sittings |", "|---|---|---|"]
    for name, t in times.items():
        lines.append(f"| {name} | {t[0] / 60:.1f} min | {t[1]} |" if t else
                     f"| {name} | unknown | - |")
    total = sum(t[0] for t in known.values())
    missing = "" if len(known) == len(times) else f" ({len(times) - len(known)} unknown)"
    lines += [f"| **total** | **{total / 3600:.2f} h**{missing} | |", ""]
    return lines


def summary_markdown(results: dict, preset: str, ledger_rows: list | None = None,
                     times: dict | None = None) -> str:
    """summary.md: the ledger `ledger_rows` (if given), then the section of every registered
    study in `results` ({name: metrics}), then the wall time `times` (if given)."""
    from mi_jax.studies import registry

    lines = [f"# mi_jax reproduction summary ({preset} preset)", ""]
    if ledger_rows is not None:
        lines += ["## Claims ledger", "", "Each claim of the paper, the value measured by this job "
                  "and a verdict computed from it (rule below the table).", "",
                  ledger.ledger_markdown(ledger_rows), ""]
    for study in registry.studies():
        if study.name in results and study.summary is not None:
            lines += study.summary(results[study.name])
    if times is not None:
        lines += time_lines(times)
    return "\n".join(lines) + "\n"
