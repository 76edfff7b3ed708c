r"""The main job: every available paper figure at its CPU-sized (quick) preset, and one summary.

    python -m experiments.reproduce --workdir=runs/reproduce

Each experiment writes its own sub-directory; `summary.md` (figures embedded) and `summary.json`
(every headline number) are written last. An experiment whose sub-directory already holds a
finished result for the same config is not run again, so an interrupted job resumes.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from mi_jax import cli, ledger
from mi_jax.report import summary_markdown
from mi_jax import workdir as wd

from experiments.common import run_or_reuse

EXPERIMENTS = ledger.EXPERIMENTS
# Analyses that reuse the models trained by the mixture experiments of the same job.
USES_MODELS = ("detection", "trajectories", "score_analysis", "ablations")

OPTIONS = (
    cli.Option("preset", "choice", "Preset for every experiment.", choices=("quick", "paper")),
    cli.Option("only", "str", "Comma-separated subset of: " + ", ".join(EXPERIMENTS)),
)


def _selected(text: str | None) -> list:
    if not text:
        return list(EXPERIMENTS)
    names = [n.strip() for n in text.split(",")]
    for n in names:
        if n not in EXPERIMENTS:
            raise cli.InputError(f"--only={text}: unknown experiment {n!r} (have "
                                 f"{', '.join(EXPERIMENTS)})")
    return names


def run_all(root: Path, preset: str, names, overwrite: bool) -> dict:
    results = {}
    for name in names:
        overrides = None
        if name == "shapes_detection":
            overrides = {"models_from": str(root / "shapes")}
            if "shapes" not in results:
                results["shapes"] = run_or_reuse("shapes", preset, root / "shapes", overwrite)
        if name in USES_MODELS:
            overrides = {"models_from": f"{root / 'gmm1d'},{root / 'gmm2d'}"}
            for dep in ("gmm1d", "gmm2d"):
                if dep not in results:
                    results[dep] = run_or_reuse(dep, preset, root / dep, overwrite)
        results[name] = run_or_reuse(name, preset, root / name, overwrite, overrides)
    return {n: results[n] for n in names}


def main():
    fv = flags.FLAGS
    preset = cli.parse(OPTIONS[0], fv.preset or "quick")
    names = _selected(fv.only)
    root = Path(fv.workdir)
    root.mkdir(parents=True, exist_ok=True)
    results = run_all(root, preset, names, fv.overwrite)
    rows = ledger.ledger_from_workdir(root)
    wd.write_json(root / "summary.json", {"preset": preset, "ledger": rows, "rule": ledger.RULE,
                                         **{n: r["headline"] for n, r in results.items()}})
    text = summary_markdown(results, preset, rows)
    wd.write_text(root / "summary.md", text)
    print(text)


if __name__ == "__main__":
    cli.define(OPTIONS)
    cli.run_main(main)
