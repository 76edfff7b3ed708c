r"""The paper's own training budget on a CPU: each (mixture, seed) model of the 1D and 2D `paper`
presets trained as its own resumable unit, one after another.

On 2 CPU cores a model at the official settings takes ~0.6 h (1D, 20 000 steps) to ~3 h (2D,
100 000 steps); the twelve models of issue 38 do not fit a 3-hour sitting, so each is a separate
work directory (`<root>/units/<name>`) that the study itself writes and resumes (training
checkpoints after every chunk, finished sampler chunks kept). Models run one after another, not
vmapped: on CPU one model of batch 10 000 already fills both cores, and a finished model can be
committed while the next one trains. A unit is the gmm1d / gmm2d study at its `paper` preset
restricted to one mixture and one seed, so it runs the same code path as the study; a seed's key
does not depend on which other models share a grid, so the unit trains the model the full preset
would have trained (up to the float rounding of batched matmuls).

`assemble` stacks the finished units of a study into one work directory of the full preset
(`<root>/gmm1d`, `<root>/gmm2d`): the trained states and losses are stacked in the preset's grid
order, training is then already complete, and the study samples and scores every model in one
grid exactly as `experiments.gmm1d --preset=paper` would. The ledger reads those directories.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from mi_jax import config
from mi_jax import workdir as wd
from mi_jax.training import train as tr
from mi_jax.validation import InputError

UNITS_DIR = "units"
SEEDS = (0, 1, 2)
MIXTURES_1D = (((1.0, 2.0, 3.0), 20_000), ((1.0, 2.0, 4.0, 5.0), 50_000))
LAYOUTS = ("square", "rotated")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One model of a paper preset: the study, and its overrides of the `paper` preset."""

    name: str
    study: str
    overrides: tuple  # sorted (flag, value) pairs, hashable

    @property
    def settings(self) -> dict:
        return dict(self.overrides)

    def config(self):
        from mi_jax.studies import runner

        study = runner.load(self.study)
        return config.preset(study.Config, study.PRESETS, "paper", **self.settings)


def _unit(name: str, study: str, **overrides) -> Unit:
    return Unit(name, study, tuple(sorted(overrides.items())))


def _unit_1d(modes, n, seed) -> Unit:
    label = "".join(f"{m:g}" for m in modes)
    # 10 000 epochs of n // 10 000 batches: the official step count of this mixture, so no
    # step is spent as a masked no-op (the preset's shared count is the larger mixture's).
    return _unit(f"gmm1d_m{label}_n{n}_s{seed}", "gmm1d", single_mixture=True,
                 modes=list(modes), num_train=n, seeds=[seed], steps=10_000 * (n // 10_000))


def _unit_2d(layout, seed) -> Unit:
    return _unit(f"gmm2d_{layout}_s{seed}", "gmm2d", layout=layout, seeds=[seed])


def units(seeds=SEEDS) -> list:
    """Every unit, in the order they run: the 1D {1,2,3} models first (the shortest: a complete
    three-seed row soonest), then the 2D grids seed by seed (both layouts of a seed together),
    then the 1D {1,2,4,5} models."""
    (m_a, n_a), (m_b, n_b) = MIXTURES_1D
    out = [_unit_1d(m_a, n_a, s) for s in seeds]
    out += [_unit_2d(layout, s) for s in seeds for layout in LAYOUTS]
    out += [_unit_1d(m_b, n_b, s) for s in seeds]
    return out


def select(text: str | None, available: list) -> list:
    """The units named in comma-separated `text` (a name, or a prefix such as `gmm2d_square`);
    all of them when empty. An unknown name is refused in one line."""
    if not text:
        return list(available)
    picked = []
    for part in (p.strip() for p in text.split(",")):
        match = [u for u in available if u.name == part or u.name.startswith(part)]
        if not match:
            raise InputError(f"units={text}: {part!r} names no unit (have "
                             f"{', '.join(u.name for u in available)})")
        picked += [u for u in match if u not in picked]
    return picked


def status(root, unit: Unit) -> str:
    """'finished', 'training at step S', or 'not started'."""
    d = Path(root) / UNITS_DIR / unit.name
    if wd.finished(d, unit.config()):
        return "finished"
    if (d / tr.TRAIN_CHECKPOINT).exists():
        with np.load(d / tr.TRAIN_LOSSES) as f:
            return f"training at step {f['losses'].shape[1]}"
    return "not started"


def run_units(root, chosen: list, log=print) -> dict:
    """Run (or resume, or reuse) each unit in turn; returns {name: metrics}."""
    from mi_jax.studies import runner

    root = Path(root)
    for u in chosen:  # every config is checked before any work starts
        runner.load(u.study).validate(u.config())
    out = {}
    for i, u in enumerate(chosen):
        log(f"== unit {i + 1}/{len(chosen)}: {u.name} ({status(root, u)})")
        t0 = time.perf_counter()
        out[u.name] = runner.run_or_reuse(u.study, "paper", root / UNITS_DIR / u.name,
                                          overrides=u.settings)
        log(f"== unit {u.name}: {time.perf_counter() - t0:.0f} s")
    return out
