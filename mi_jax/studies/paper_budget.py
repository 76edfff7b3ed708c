r"""The paper's own training budget on a CPU: each (mixture, seed) model of the 1D and 2D `paper`
presets trained as its own resumable unit, one after another.

On 2 idle CPU cores one model at the official settings trains at ~18 steps/s (batch 10 000;
`benchmarks.bench_sweep --single`), ~20 min (1D, 20 000 steps) to ~1.5 h (2D, 100 000 steps)
plus sampling; the twelve models of issue 38 do not fit a 3-hour sitting beside other work, so
each is a separate work directory (`<root>/units/<name>`) that the study itself writes and
resumes (training checkpoints after every chunk, finished sampler chunks kept). Models run one
after another: on CPU one model of batch 10 000 already fills both cores (several models in one
grid train no faster per model), and a finished model can be committed while the next trains. A unit is the gmm1d / gmm2d study at its `paper` preset
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


def _unit_1d(modes, n, steps, seed) -> Unit:
    label = "".join(f"{m:g}" for m in modes)
    return _unit(f"gmm1d_m{label}_n{n}_s{seed}", "gmm1d", single_mixture=True,
                 modes=list(modes), num_train=n, seeds=[seed], steps=steps)


def _unit_2d(layout, seed) -> Unit:
    return _unit(f"gmm2d_{layout}_s{seed}", "gmm2d", layout=layout, seeds=[seed])


def units() -> list:
    """Every unit of the two paper presets, in the order they run: the 1D models of Fig. 2's
    first mixture (the shortest: a complete row soonest), the 2D grids seed by seed (both layouts
    of a seed together), then the 1D models of the second mixture. A 1D unit trains its own
    mixture's official step count (epochs x batches per epoch), so no step is spent as a masked
    no-op, as it would be beside the larger mixture in one vmapped grid."""
    from mi_jax.studies import gmm1d, gmm2d

    p1 = config.preset(gmm1d.Config, gmm1d.PRESETS, "paper")
    p2 = config.preset(gmm2d.Config, gmm2d.PRESETS, "paper")
    steps = lambda n: p1.epochs * (n // p1.batch_size) if p1.epochs else p1.steps
    (m_a, n_a), (m_b, n_b) = (p1.modes, p1.num_train), (p1.modes_b, p1.num_train_b)
    out = [_unit_1d(m_a, n_a, steps(n_a), s) for s in p1.seeds]
    out += [_unit_2d(layout, s) for s in p2.seeds for layout in LAYOUTS]
    out += [_unit_1d(m_b, n_b, steps(n_b), s) for s in p1.seeds]
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
    """'finished', 'checkpoint at step S of N' (resumable from there), or 'not started'."""
    d = Path(root) / UNITS_DIR / unit.name
    cfg = unit.config()
    if wd.finished(d, cfg):
        return "finished"
    if (d / tr.TRAIN_CHECKPOINT).exists():
        with np.load(d / tr.TRAIN_LOSSES) as f:
            return f"checkpoint at step {f['losses'].shape[1]} of {cfg.steps}"
    return "not started"


def unit_row(root, unit: Unit) -> str:
    """One Markdown row of the progress table: the unit's state and, once it is finished, its
    headline numbers (bridge / blur rates of its samples, mode width against the exact score's,
    and the official window's AUROC and removal at 96 % kept, against bridges)."""
    state = status(root, unit)
    if state != "finished":
        return f"| {unit.name} | {state} |" + " |" * 5
    d = Path(root) / UNITS_DIR / unit.name
    (b,) = wd.read_json(d / wd.METRICS_FILE)["bridges"].values()  # one model per unit
    n = wd.read_config(d).get("num_samples")
    pct = lambda v: f"{100 * v:.3f} %"  # noqa: E731
    return (f"| {unit.name} | finished | {pct(b['bridge']['mean'])} ({b['num_bridges'][0]} of "
            f"{n}) | {pct(b['blur']['mean'])} | {b['width_vs_exact']['mean']:.2f}x | "
            f"{b['bridges_auroc']['mean']:.3f} | {100 * b['bridges_removed_at_96_kept']['mean']:.1f} % |")


PROGRESS_HEADER = ("| unit | state | bridges | blur | mode width vs exact | AUROC (bridges, "
                   "official window) | bridges removed at 96 % kept |\n|---|---|---|---|---|---|---|")


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


STUDIES = ("gmm1d", "gmm2d")


def _unit_state(unit_dir: Path):
    """A finished unit's training state (stacked, one model), its grid and its study config."""
    from mi_jax import checkpoint
    from mi_jax.studies import mixture_models
    from mi_jax.studies import mixture_study as ms

    trained = mixture_models.load_models(unit_dir)
    cfg = trained.config
    target = ms.init_grid(trained.network, ms.train_config_from(cfg), trained.grid)
    return checkpoint.load(unit_dir / tr.TRAIN_CHECKPOINT, target), trained.grid


def assemble(root, study: str, log=print) -> Path:
    """Stack the finished units of `study` into `<root>/<study>`, a work directory of the full
    `paper` preset whose training is complete: the states (every model's step set to the
    preset's step count, as a vmapped run leaves it), the losses (a model that stopped at its
    own epoch budget has NaN past it) and the convergence curve (a model frozen past its budget
    keeps its last point). Running the study on that directory then samples and scores every
    model in one grid. Returns the directory."""
    import jax
    import jax.numpy as jnp

    from mi_jax import checkpoint
    from mi_jax.studies import mixture_study as ms
    from mi_jax.studies import runner

    root = Path(root)
    if study not in STUDIES:
        raise InputError(f"study={study}: must be one of {', '.join(STUDIES)}")
    mod = runner.load(study)
    cfg = config.preset(mod.Config, mod.PRESETS, "paper")
    configs = mod.build_configs(cfg)
    configs = configs["configs"] if isinstance(configs, dict) else configs
    grid = ms.Grid(list(configs), list(cfg.seeds))
    mine = [u for u in units() if u.study == study]
    missing = [u.name for u in mine if status(root, u) != "finished"]
    if missing:
        raise InputError(f"study={study}: units not finished yet: {', '.join(missing)} "
                         "(run experiments.paper_budget first)")
    by_model = {}
    for u in mine:
        state, g = _unit_state(root / UNITS_DIR / u.name)
        by_model[(g.configs[0].name, int(g.seeds[0]))] = (u, state)
    wanted = [(grid.configs[c].name, int(s)) for c, s in zip(grid.config_index, grid.model_seeds)]
    lacking = [f"{n} seed {s}" for n, s in wanted if (n, s) not in by_model]
    if lacking:
        raise InputError(f"study={study}: no unit holds the model(s) {', '.join(lacking)}")
    order = [by_model[w] for w in wanted]
    log(f"assembling {study}: " + ", ".join(u.name for u, _ in order))
    stacked = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *[s for _, s in order])
    stacked = stacked._replace(step=jnp.full_like(stacked.step, cfg.steps))
    losses = np.full((grid.num_models, cfg.steps), np.nan, np.float32)
    curves = []
    for m, (u, _) in enumerate(order):
        d = root / UNITS_DIR / u.name
        with np.load(d / tr.TRAIN_LOSSES) as f:
            own = f["losses"][0]
        losses[m, :len(own)] = own
        curve = wd.read_json(d / ms.CONVERGENCE_FILE)["points"] if (
            d / ms.CONVERGENCE_FILE).exists() else []
        curves.append({p["step"]: p["models"][0] for p in curve})
    points = []
    if all(curves):
        for step in range(cfg.curve_every, cfg.steps + 1, cfg.curve_every):
            models = [c.get(step, c[max(s for s in c if s <= step)]) for c in curves]
            points.append({"step": step, "models": models})
    out = root / study
    wd.prepare(out, cfg)
    unit_seconds = [tr.recorded_seconds(root / UNITS_DIR / u.name) for u, _ in order]
    wd.write_npz(out / tr.TRAIN_LOSSES, losses=losses,  # the units' training clocks, summed
                 seconds=np.float64(float("nan") if None in unit_seconds else sum(unit_seconds)))
    checkpoint.save(out / tr.TRAIN_CHECKPOINT, stacked)
    if points:
        wd.write_json(out / ms.CONVERGENCE_FILE, {"every": cfg.curve_every, "points": points})
    return out


def run_assembled(root, study: str, log=print) -> dict:
    """`assemble`, then the study at its paper preset in that directory (sampling and scoring
    every model; training is already complete). Returns its metrics."""
    from mi_jax.studies import runner

    mod = runner.load(study)
    out = Path(root) / study
    if not wd.finished(out, config.preset(mod.Config, mod.PRESETS, "paper")):
        assemble(root, study, log)
    return runner.run_or_reuse(study, "paper", out)
