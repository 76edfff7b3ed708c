r"""Detector benchmark: every hallucination detector scored the same way on data with exact labels.

    --models_from=runs/reproduce/gmm1d,runs/reproduce/gmm2d,runs/reproduce/shapes

Loads the trained models of finished gmm1d / gmm2d (mixture MLPs) and shapes (UNet) work
directories (without `--models_from`: trains gmm1d and gmm2d at the preset inside the work
directory first). Per model, one sampling pass keeps every detector's statistics
(`mi_jax.detection.benchmark.standard_detectors`: x0_hat variance per window, x_t / eps_hat
variance, final |eps_hat|, curvature), FLIPD is computed after it, and each task -- mixtures:
bridges vs in-support and blur vs in-support (`support.classify`); SIMPLE SHAPES: duplicates
vs in-support and every hallucination ('all') vs in-support (the shape counter) -- is scored on a
held-out half: AUROC and hallucinations removed at 96 % of in-support kept, with the best
window and a logistic fusion fitted on the other half. Cost: each detector's sampling time
(second, compiled call, first model) as a multiple of plain sampling with the official
variance only. Images are sampled strided early and dense late (every t < `--dense_steps`),
so windows are training-schedule timesteps; mixtures sample all T steps.

Writes metrics.json (per source, configuration, task and detector: per-seed values and mean +-
std), table.md, roc_<source>.png and arrays.npz (scores and labels).

Command line: `python -m experiments.detectors` (every flag and preset: `--help`).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import mi_jax as mj
from mi_jax import config, plots, sweeps
from mi_jax import workdir as wd
from mi_jax.data import shape_counter as sc
from mi_jax.data import support
from mi_jax.detection import benchmark as bm
from mi_jax.detection import registry
from mi_jax.detection.evaluate import summarise_seeds
from mi_jax.diffusion.schedule import plan_timesteps
from mi_jax.sampling.sampler import print_progress
from mi_jax.studies import mixture_models, shapes_detection
from mi_jax.studies.runner import analysis_options, model_sources
from mi_jax.validation import InputError

PHASE_BENCHMARK = 5  # sampling key phase (shapes_detection uses 4)

OPTIONS = analysis_options(
    config.Option("num_samples", "int", "Fresh samples per mixture model.", low=10),
    config.Option("num_images", "int", "Fresh images per SIMPLE SHAPES model.", low=10),
    config.CHUNK_SIZE,
    config.Option("windows", "windows", "x0_hat variance windows lo:hi (training timesteps); the "
                  "first is the official one, the best is chosen on the fit half.", low=0),
    config.Option("trace_window", "window", "Window lo,hi of the curvature score.", low=0),
    config.Option("probes", "int", "Hutchinson probes (curvature and FLIPD).", low=1),
    config.Option("t0", "int", "Timestep at which FLIPD evaluates the score.", low=0),
    config.Option("dense_steps", "int", "Images: sample every training timestep below this.",
                  low=1),
    config.Option("strided_steps", "int", "Images: evenly spaced steps above --dense_steps.",
                  low=1),
    config.Option("cost_samples", "int", "Mixture samples timed for the cost column.", low=10),
    config.Option("cost_images", "int", "Images timed for the cost column.", low=1),
    config.Option("split_seed", "int", "Seed of the fit / test split.", low=0),
    config.Option("sample_seed", "int", "Seed of the fresh samples (0: the default draw; another "
                  "value gives an independent set, e.g. to confirm a setting chosen on a table).",
                  low=0),
    config.Option("cost_repeats", "int", "Timed rounds of the cost column (median; variants "
                  "alternate within a round).", low=1),
    sources="gmm1d / gmm2d / shapes",
)
Config = config.config_class("DetectorsConfig", OPTIONS)

_WINDOWS = [(0, 10), (0, 3), (0, 5), (0, 20), (0, 50), (10, 50), (50, 100), (100, 200),
            (200, 400)]
_BASE = dict(windows=_WINDOWS, trace_window=[0, 10], probes=1, t0=5, k=support.DEFAULT_K,
             dense_steps=50, strided_steps=50, split_seed=0, sample_seed=0, cost_repeats=3)
PRESETS = {
    "quick": dict(_BASE, num_samples=8000, num_images=1000, chunk_size=8000, cost_samples=4000,
                  cost_images=100),
    "paper": dict(_BASE, num_samples=100_000, num_images=10_000, chunk_size=20_000,
                  cost_samples=20_000, cost_images=1000, dense_steps=200, strided_steps=200),
}
MIXTURE_TASKS = {"bridges": support.BRIDGE, "blur": support.BLUR}
DUPLICATE = sc.CATEGORIES.index("duplicate")


def _kind(path: Path) -> str:
    metrics = path / wd.METRICS_FILE
    kind = wd.read_json(metrics).get("experiment") if metrics.exists() else None
    if kind not in ("gmm1d", "gmm2d", "shapes"):
        raise InputError(f"models_from={path}: not a finished gmm1d, gmm2d or shapes run")
    return kind


def validate(cfg: Config) -> None:
    if cfg.chunk_size > cfg.num_samples:
        raise InputError(f"chunk_size={cfg.chunk_size}: exceeds num_samples={cfg.num_samples}")
    for path in (cfg.models_from.split(",") if cfg.models_from else []):
        kind = _kind(Path(path))
        T = (shapes_detection.saved_shapes_config(Path(path)).T if kind == "shapes" else
             mixture_models.load_models(path).schedule.num_steps)
        for lo, hi in list(cfg.windows) + [tuple(cfg.trace_window)]:
            if hi > T:
                raise InputError(f"windows={lo}:{hi}: must lie inside [0, T={T}) ({path})")
        if cfg.t0 >= T:
            raise InputError(f"t0={cfg.t0}: must be < T={T} ({path})")
        if kind == "shapes" and cfg.dense_steps + cfg.strided_steps > T:
            raise InputError(f"dense_steps={cfg.dense_steps}: with strided_steps="
                             f"{cfg.strided_steps} must fit in T={T} ({path})")
        plan = (plan_timesteps(T, cfg.strided_steps, cfg.dense_steps) if kind == "shapes"
                else None)  # what _Source samples
        visited = np.arange(T) if plan is None else plan
        for lo, hi in cfg.windows:
            if not np.any((visited >= lo) & (visited < hi)):
                raise InputError(f"windows={lo}:{hi}: holds none of the {len(visited)} sampled "
                                 f"timesteps ({path})")


# ----------------------------------------------------------------------------------------
# Sources: models, a sampler, labels per task
# ----------------------------------------------------------------------------------------


def sample_keys(num_models: int, key_phase: int, sample_seed: int = 0) -> jax.Array:
    """One sampling key per model; sample_seed 0 is the default draw, any other value an
    independent one (folded in after the phase)."""
    path = (key_phase,) + ((sample_seed,) if sample_seed else ())
    return sweeps.seed_keys(list(range(num_models)), *path)


class _Source:
    """What the benchmark needs of one work directory: stacked params, their network, the
    sampling schedule and its training timesteps, the shape, task labels per model."""

    def __init__(self, path: Path, cfg: Config):
        self.path, self.kind = path, _kind(path)
        self.name = path.name
        if self.kind == "shapes":
            scfg, self.network, schedule, state = shapes_detection.load_models(path)
            self.params, self.res = state.eval_params, scfg.resolution
            self.train_schedule = schedule
            self.schedule, self.ts = mj.sampling_plan(schedule, cfg.strided_steps,
                                                      cfg.dense_steps)
            self.shape = (self.res, self.res, 1)
            self.names = ["SIMPLE SHAPES"] * len(scfg.seeds)
            self.num = cfg.num_images
            self.regions = sc.column_masks(self.res)
        else:
            models = mixture_models.load_models(path)
            self.network, self.params = models.network, models.params
            self.schedule = self.train_schedule = models.schedule
            self.ts = None
            self.grid = models.grid
            self.shape = (models.grid.configs[0].mixture.dim,)
            self.names = [models.grid.configs[c].name for c in models.grid.config_index]
            self.num = cfg.num_samples
            self.regions = None
        self.num_models = len(self.names)
        self.sample_seed = cfg.sample_seed
        self._post_hoc = jax.jit(lambda p, x, t0, k, probes, names: registry.post_hoc_scores(
            names, registry.Model(self.network.eps_fn(p), self.train_schedule, t0, probes), x, k),
            static_argnames=("t0", "probes", "names"))

    def tasks(self, x: np.ndarray, m: int, k: float) -> dict:
        """{task: (select (n,) bool, positive (n,) bool)} for model m's samples."""
        if self.kind == "shapes":
            primary = sc.count_shapes(x, self.res).primary
            return {"duplicates": (primary < 0) | (primary == DUPLICATE),
                    "all": np.ones(len(x), bool)}, primary >= 0
        mixture = self.grid.configs[self.grid.config_index[m]].mixture
        labels = support.classify(x, mixture, k)
        inside = labels == support.IN_SUPPORT
        return {t: inside | (labels == lab) for t, lab in MIXTURE_TASKS.items()}, ~inside

    def sample(self, observers: dict, num: int, chunk: int, key_phase: int, params=None,
               models=mj.Stacked()):
        """Every model's samples (or, with `models=Single()` and one model's params, the first
        model's)."""
        keys = sample_keys(self.num_models, key_phase, self.sample_seed)
        return mj.sample(self.network, self.schedule,
                         keys if isinstance(models, mj.Stacked) else keys[0], num, self.shape,
                         params=self.params if params is None else params, models=models,
                         observers=observers, net_timesteps=self.ts,
                         chunk_size=min(chunk, num), progress=print_progress("sample"))

    def post_hoc(self, names, params, x, t0, probes, key) -> dict:
        """{name: (n,)} of the post-hoc detectors `names` (registry) on one model's samples."""
        out = self._post_hoc(params, x, t0=t0, k=key, probes=probes, names=tuple(names))
        return {n: np.asarray(v) for n, v in out.items()}


def _median_times(fns: dict, repeats: int) -> dict:
    """Median seconds of each compiled call; the calls alternate within every round, so a slow
    spell of a shared machine hits every variant alike instead of one."""
    for fn in fns.values():
        fn()  # compile
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()  # returns host arrays: the work is done when it returns
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def _costs(src: _Source, detectors, cfg: Config, n: int) -> dict:
    """Sampling time (first model, compiled call) over plain sampling with the official
    variance only: the trajectory statistics together, the curvature, FLIPD (plain sampling
    plus its after-sampling pass) and the fused score (everything)."""
    params0 = bm.model_slice(src.params, 0)
    chunk = min(cfg.chunk_size, n)

    def run(observers):
        return lambda: src.sample(observers, n, chunk, PHASE_BENCHMARK, params0, mj.Single())

    official = detectors[0]
    x = jnp.asarray(run(official.observers)().x)
    key = jax.random.key(cfg.split_seed)
    post_hoc = _post_hoc_names(detectors)
    trajectory = bm.merged_observers([d for d in detectors if d.name != "curvature"])
    curvature = bm.merged_observers([official] + [d for d in detectors if d.name == "curvature"])
    seconds = _median_times({
        "plain": run(official.observers), "trajectory statistics": run(trajectory),
        "curvature": run(curvature), "everything": run(bm.merged_observers(detectors)),
        "flipd_after": lambda: src.post_hoc(post_hoc, params0, x, cfg.t0, cfg.probes, key)},
        cfg.cost_repeats)
    plain, after = seconds["plain"], seconds["flipd_after"]
    out = {d.name: seconds["trajectory statistics"] / plain for d in detectors}
    out.update({detectors[0].name: 1.0, "curvature": seconds["curvature"] / plain,
                **{n: (plain + after) / plain for n in post_hoc}, bm.RANDOM: 1.0,
                bm.BEST_WINDOW: seconds["trajectory statistics"] / plain,
                bm.FUSED: (seconds["everything"] + after) / plain})
    return {"multiple_of_plain": out, "seconds": seconds, "samples": n,
            "repeats": cfg.cost_repeats}


def _post_hoc_names(detectors) -> list:
    return [d.source for d in detectors if registry.is_post_hoc(d.source)]


def evaluate_source(src: _Source, cfg: Config, log=print) -> tuple[dict, dict]:
    windows = [tuple(w) for w in cfg.windows]
    detectors = bm.standard_detectors(windows, tuple(cfg.trace_window), probes=cfg.probes,
                                      regions=src.regions)
    log(f"[detectors] {src.path}: {src.num_models} model(s), {src.num} samples each, "
        f"{src.schedule.num_steps} sampling steps")
    res = src.sample(bm.merged_observers(detectors), src.num, cfg.chunk_size, PHASE_BENCHMARK)
    finite = np.all(np.isfinite(res.x.reshape(src.num_models, src.num, -1)), axis=-1)
    x_safe = np.where(finite.reshape(finite.shape + (1,) * len(src.shape)), res.x, 0.0)
    fit_mask = bm.fit_split(src.num, cfg.split_seed)
    per_model, arrays = [], {}
    for m in range(src.num_models):
        key = jax.random.fold_in(jax.random.key(cfg.split_seed), m)
        after = src.post_hoc(_post_hoc_names(detectors), bm.model_slice(src.params, m),
                             jnp.asarray(x_safe[m]), cfg.t0, cfg.probes, key)
        scores = bm.score_all(detectors, bm.model_slice(res.observed, m), after, src.num, m)
        selects, positive = src.tasks(x_safe[m], m, cfg.k)
        positive = positive | ~finite[m]
        fusion = bm.fusion_inputs(list(scores))
        per_model.append({t: bm.evaluate_task({n: s[sel] for n, s in scores.items()},
                                              positive[sel], fit_mask[sel], fusion)
                          for t, sel in selects.items()})
        arrays.update({f"{src.name}__m{m}__{n}": s.astype(np.float32) for n, s in scores.items()})
        arrays[f"{src.name}__m{m}__positive"] = positive
        for t, sel in selects.items():
            arrays[f"{src.name}__m{m}__select_{t}"] = sel
    arrays[f"{src.name}__fit_mask"] = fit_mask
    n_cost = min(cfg.cost_images if src.kind == "shapes" else cfg.cost_samples, src.num)
    cost = _costs(src, detectors, cfg, n_cost)
    result = {"source": str(src.path), "kind": src.kind, "num_samples": src.num,
              "model_names": src.names,
              "sampling_steps": int(src.schedule.num_steps), "cost": cost, "configs": {}}
    for name in dict.fromkeys(src.names):
        rows = [per_model[m] for m in range(src.num_models) if src.names[m] == name]
        result["configs"][name] = {
            t: {d: summarise_seeds([{k: r[t][d][k] for k in ("auroc", "removed_at_96_kept",
                                                              "num_positive")} for r in rows])
                for d in rows[0][t] if all(d in r[t] for r in rows)}
            for t in rows[0]}
        for t in rows[0]:
            # summarised only when every seed chose a window (a seed without positives has none)
            if bm.BEST_WINDOW in result["configs"][name][t]:
                result["configs"][name][t][bm.BEST_WINDOW]["windows"] = [
                    r[t][bm.BEST_WINDOW]["window"] for r in rows if bm.BEST_WINDOW in r[t]]
    return result, arrays


# ----------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------


def table_markdown(results: dict) -> str:
    lines = ["| source | configuration | task | detector | AUROC | removed @ 96 % kept | "
             "cost (x plain) |", "|---|---|---|---|---|---|---|"]
    for sname, src in results.items():
        cost = src["cost"]["multiple_of_plain"]
        for cname, tasks in src["configs"].items():
            for task, dets in tasks.items():
                for d, v in dets.items():
                    a, r = v["auroc"], v["removed_at_96_kept"]
                    lines.append(f"| {sname} | {cname} | {task} ({v['num_positive']['mean']:.0f} "
                                 f"pos.) | {d} | {_pm(a)} | {_pm(r, 100)} % | "
                                 f"{cost.get(d, float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def _pm(v: dict, scale: float = 1.0) -> str:
    mean, std = v["mean"] * scale, v["std"] * scale
    digits = 3 if scale == 1.0 else 1
    return f"{mean:.{digits}f}" + ("" if not np.isfinite(std) else f" +- {std:.{digits}f}")


def headline(results: dict) -> dict:
    """Per source, configuration and task: the best detector by mean AUROC and the official
    variance's AUROC, each with its cost."""
    out = {}
    for sname, src in results.items():
        cost = src["cost"]["multiple_of_plain"]
        for cname, tasks in src["configs"].items():
            for task, dets in tasks.items():
                ranked = sorted((d for d in dets if d != bm.RANDOM),
                                key=lambda d: -np.nan_to_num(dets[d]["auroc"]["mean"], nan=-1))
                official = next(d for d in dets if d.startswith(bm.WINDOW_PREFIX))
                out[f"{sname}/{cname}/{task}"] = {
                    "best": ranked[0], "best_auroc": dets[ranked[0]]["auroc"]["mean"],
                    "best_cost": cost.get(ranked[0]), "official": official,
                    "official_auroc": dets[official]["auroc"]["mean"]}
    return out


def _figure(workdir: Path, sname: str, src: dict, arrays: dict) -> str:
    configs = list(src["configs"])
    tasks = list(src["configs"][configs[0]])
    fig, axes = plots.figure(ncols=len(configs), nrows=len(tasks), width=4.0, height=3.4)
    fit = arrays[f"{sname}__fit_mask"]
    names = [k.split("__")[2] for k in arrays if k.startswith(f"{sname}__m0__")
             and not k.split("__")[2].startswith(("positive", "select_"))]
    shown = [n for n in names if not n.startswith(bm.WINDOW_PREFIX)] + names[:1]
    for c, cname in enumerate(configs):
        m = src["model_names"].index(cname)
        for r, task in enumerate(tasks):
            sel = arrays[f"{sname}__m{m}__select_{task}"] & ~fit
            plots.roc_panel(axes[r, c], {n: arrays[f"{sname}__m{m}__{n}"][sel] for n in shown},
                            arrays[f"{sname}__m{m}__positive"][sel],
                            f"{cname}: {task} (model {m}, test half)", "flagged (TPR)")
    wd.save_figure(fig, workdir / f"roc_{sname}.png")
    return f"roc_{sname}.png"


def run(cfg: Config, workdir, log=print) -> dict:
    validate(cfg)
    workdir = Path(workdir)
    results, arrays = {}, {}
    for path in model_sources(cfg, workdir):
        src = _Source(Path(path), cfg)
        res, arr = evaluate_source(src, cfg, log)
        results[src.name] = res
        arrays.update(arr)
    figures = [_figure(workdir, name, r, arrays) for name, r in results.items()]
    text = table_markdown(results)
    wd.write_text(workdir / "table.md", text)
    log(text)
    wd.write_npz(workdir / "arrays.npz", **arrays)
    metrics = {"experiment": "detectors", "sources": results, "headline": headline(results),
               "figures": figures, "provenance": wd.provenance()}
    wd.write_json(workdir / wd.METRICS_FILE, metrics)
    return metrics
