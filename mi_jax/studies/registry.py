"""The study registry: what each study of the main job declares about its outputs.

Each registered study module exports `STUDY = Study(...)`:

    name      its module and its sub-directory in a main-job directory;
    schema    the keys its `metrics.json` holds (`Schema`), checked when the study writes the file
              (`Study.write_metrics`) and when a finished one is read (`Study.read_metrics`); the
              ledger may read only declared keys, so a renamed key fails loudly, never as a
              silently "not measured" row;
    needs     the studies whose trained models it analyses: the main job runs them first, in
              the same directory, and passes their work directories as `models_from`;
    summary   its section of `summary.md`: metrics -> Markdown lines;
    claims    its rows of the claims ledger (`mi_jax.ledger.Claim`, with the extractors that
              read its metrics; the verdict rule stays in `mi_jax.ledger`).

`report`, `ledger` and `runner.main_job` iterate over `studies()`; nothing switches on a name.
The registry names modules instead of importing them, so that a study module may import the
ledger and the report (which load the registry only when called).
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable

from mi_jax import workdir as wd
from mi_jax.validation import InputError

# The main job's studies, in the order they run and report.
MAIN_JOB = ("gmm1d", "gmm2d", "detection", "score_analysis", "trajectories", "ablations",
            "shapes", "shapes_detection", "recursive", "vdm")
# Registered beside the main job: their ledger rows are read wherever a directory holds them.
BESIDE_MAIN_JOB = ()


class SchemaError(InputError):
    """A metrics.json (or a reader of one) that does not match its study's declared schema."""


@dataclasses.dataclass(frozen=True)
class Schema:
    """The layout of a study's metrics.json. metrics: top-level keys every finished run holds;
    optional: top-level keys some runs hold (e.g. only with a shape counter); headline: keys of
    metrics["headline"] (empty: keyed by configuration or source)."""

    metrics: tuple = ()
    optional: tuple = ()
    headline: tuple = ()

    def declares(self, key: str) -> bool:
        return key in self.metrics or key in self.optional or key == "headline"

    def missing(self, metrics: dict) -> list:
        """The declared keys `metrics` lacks ("headline.<key>" for a headline key)."""
        gone = [k for k in ("headline",) + tuple(self.metrics) if k not in metrics]
        head = metrics.get("headline")
        if isinstance(head, dict):
            gone += [f"headline.{k}" for k in self.headline if k not in head]
        return gone


@dataclasses.dataclass(frozen=True)
class Study:
    """What one study declares (see the module docstring)."""

    name: str
    schema: Schema
    needs: tuple = ()
    summary: Callable[[dict], list] | None = None
    claims: tuple = ()

    def check(self, metrics: dict, where: str) -> dict:
        """`metrics` if it holds every declared key, else a one-line SchemaError naming them."""
        gone = self.schema.missing(metrics)
        if gone:
            raise SchemaError(f"metrics={where}: {self.name} metrics lack {', '.join(gone)} "
                              f"(declared by mi_jax.studies.{self.name}.STUDY)")
        return metrics

    def write_metrics(self, workdir, metrics: dict) -> dict:
        """Check `metrics` against the schema, then write `workdir/metrics.json` (last: it marks
        the directory finished)."""
        path = Path(workdir) / wd.METRICS_FILE
        wd.write_json(path, self.check(metrics, str(path)))
        return metrics

    def read_metrics(self, workdir) -> dict:
        """A finished run's metrics.json, checked against the schema."""
        path = Path(workdir) / wd.METRICS_FILE
        return self.check(wd.read_json(path), str(path))


def get(name: str) -> Study:
    """The registered study `name` (its module's STUDY)."""
    if name not in MAIN_JOB + BESIDE_MAIN_JOB:
        raise InputError(f"study={name}: not registered (have "
                         f"{', '.join(MAIN_JOB + BESIDE_MAIN_JOB)})")
    return importlib.import_module(f"mi_jax.studies.{name}").STUDY


def studies(names=MAIN_JOB + BESIDE_MAIN_JOB) -> list:
    """The registered studies `names` (default: all), in that order."""
    return [get(n) for n in names]
