"""Recursive retraining ("model collapse"): generation g+1 trains fresh models only on samples of
generation g, after an optional filter (paper Sec. 6, Fig. 8).

Models are filters x seeds, flattened filter-major to M = F x R (model m has filter m // R and
seed m % R). Generation 0 sees only real data, so it is trained once per seed and its candidates
are shared by every filter of that seed; from generation 1 on, all M models train in one jitted
call per chunk and sample in one jitted call per chunk. Keys depend on (seed, generation, phase)
only, so the filters of one seed share initial weights and sampler noise in every generation:
their curves differ by what the filter kept, not by independent randomness.

The official 2D protocol is the default `RecursionConfig`: 5 generations, 100 000 training samples,
102 500 candidates per generation, keep the 100 000 lowest trajectory variances (or a random
100 000, or the first 100 000 for no filter). Beyond it: mixing a fraction of real data back in
(`real_fraction`) and accumulating every generation's kept samples (`accumulate`).

Every finished generation is saved in `workdir/gen_<g>/` (training checkpoint with params and
losses, kept samples, a subsample of the candidates, metrics.json written last), and training and
sampling inside a generation resume from their own checkpoints, so a killed run restarted with the
same arguments ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mi_jax import sweeps
from mi_jax import workdir as wd
from mi_jax.detection import registry
from mi_jax.detection.metrics import keep_lowest
from mi_jax.diffusion.schedule import Schedule
from mi_jax.sampling.observers import paper_observers, window_variance
from mi_jax.sampling.sampler import print_progress
from mi_jax.training import train as tr
from mi_jax.validation import check, check_float, check_int

PHASE_INIT, PHASE_SAMPLE, PHASE_FILTER = 1, 2, 3
BUILTIN_FILTERS = ("none", "random", "variance", "restart")
# restart: repair instead of discarding -- the candidates the variance filter would drop are
# re-noised to `restart_t` and resampled by the same model (`mi_jax.sampling.repair`), re-scored
# and restarted again up to `restart_rounds` times; then the first num_keep are kept, as "none"
# keeps them. Its 'generated' metrics are the model's candidates before repair, 'kept' after.
DETECTOR_PREFIX = "detector:"  # detector:<name>: any of `registry.filter_names()`
GENERATION_DIR = "gen_{}"
MIN_REMOVED = 2  # fewer dropped candidates than this: no 'removed' evaluation
KEPT_FILE, SAMPLES_FILE = "kept.npz", "samples.npz"


@dataclasses.dataclass(frozen=True)
class RecursionConfig:
    """What each generation trains on. Defaults: the official 2D protocol."""

    generations: int = 5
    num_train: int = 100_000
    num_candidates: int = 102_500
    filters: tuple = ("none", "random", "variance")
    real_fraction: float = 0.0   # share of every later generation's training set that is real
    accumulate: bool = False     # train on real + every generation's kept samples so far
    restart_t: int = 100         # the restart filter's re-noising timestep t'
    restart_rounds: int = 2      # restarts at most per flagged candidate

    def __post_init__(self):
        check_int(self.generations, "generations", low=1)
        check_int(self.num_train, "num_train", low=1)
        check_float(self.real_fraction, "real_fraction", low=0.0, high=1.0)
        check(self.real_fraction < 1.0, "real_fraction", self.real_fraction,
              "must be < 1 (1 would never train on generated samples)")
        check(isinstance(self.accumulate, bool), "accumulate", self.accumulate, "must be a bool")
        check(not (self.accumulate and self.real_fraction > 0), "real_fraction",
              self.real_fraction, "must be 0 with accumulate (accumulation keeps all real data)")
        check_int(self.num_candidates, "num_candidates", low=self.num_keep)
        check(isinstance(self.filters, tuple) and len(self.filters) >= 1, "filters", self.filters,
              "must be a non-empty tuple")
        check(len(set(self.filters)) == len(self.filters), "filters", self.filters,
              "must be distinct")
        check_int(self.restart_t, "restart_t", low=1)
        check_int(self.restart_rounds, "restart_rounds", low=1, high=10)
        for name in self.filters:
            check(name in BUILTIN_FILTERS or (isinstance(name, str) and name.startswith(
                DETECTOR_PREFIX) and name[len(DETECTOR_PREFIX):] in registry.filter_names()),
                "filters", name, f"must be one of {BUILTIN_FILTERS} or "
                f"{DETECTOR_PREFIX}<{'|'.join(registry.filter_names())}>")

    @property
    def num_real(self) -> int:
        """Real samples in each later generation's training set (replace mode)."""
        return int(round(self.real_fraction * self.num_train))

    @property
    def num_keep(self) -> int:
        """Generated samples each filter keeps per generation."""
        return self.num_train - self.num_real

    def train_size(self, generation: int) -> int:
        if generation == 0 or not self.accumulate:
            return self.num_train
        return self.num_train + generation * self.num_keep

    @property
    def detectors(self) -> tuple:
        """The registered detectors the filters score with ('var_x0' always: the variance
        filter, restart and the saved candidates' variance)."""
        return ("var_x0",) + tuple(f[len(DETECTOR_PREFIX):] for f in self.filters
                                   if f.startswith(DETECTOR_PREFIX) and f != "detector:var_x0")


@dataclasses.dataclass(frozen=True)
class Problem:
    """A dataset for the loop: real training data per seed and a per-sample-set evaluation.

    real(seed) -> (num_train, *shape) array; evaluate(x (n, *shape)) -> {name: float or list}.
    """

    name: str
    shape: tuple
    real: Callable[[int], np.ndarray]
    evaluate: Callable[[np.ndarray], dict]


@dataclasses.dataclass(frozen=True)
class Training:
    """How each generation trains and samples (the same in every generation)."""

    network: object
    schedule: Schedule                 # training schedule
    config: tr.TrainConfig
    steps: int
    chunk_steps: int = 500
    unroll: bool = False               # conv nets on CPU (see mi_jax.training.train.train_chunk)
    sampling_schedule: Schedule | None = None   # respaced schedule for strided sampling
    net_timesteps: np.ndarray | None = None     # its network timesteps
    window: tuple = (0, 10)
    window_clock: str = "train"        # how `window` counts (mi_jax.sampling.observers.CLOCKS)
    sample_chunk: int = 10_000
    vectorise: bool = True             # False: one model at a time (conv nets on CPU)
    keep_candidates: int = 20_000      # candidates saved per model and generation (figures)
    mesh: object = "auto"              # models over devices: "auto" (all, if several), None, a Mesh
    checkpoint_every_s: float = 0.0    # > 0: at most one training checkpoint per this many seconds


def select(filter_name: str, scores: dict, finite: np.ndarray, count: int, key,
           ranked: bool = False) -> np.ndarray:
    """Indices of the `count` candidates a filter keeps; non-finite candidates are never kept.

    scores: per-candidate scores of one model by registered detector name (`registry.score`;
    'var_x0' for the variance filter).
    ranked: return them in the filter's own order (a score filter's ascending score, random's
    draw order) instead of sorted: the official code trains the next generation on them in that
    order with unshuffled batches.
    """
    n = len(finite)
    check(int(finite.sum()) >= count, "candidates", int(finite.sum()),
          f"too few finite candidates to keep {count}")
    if filter_name in ("none", "restart"):  # restart: candidates already repaired in place
        return np.flatnonzero(finite)[:count]
    if filter_name == "random":
        order = np.asarray(jax.random.permutation(key, n))
        kept = order[finite[order]][:count]
        return kept if ranked else np.sort(kept)
    name = "var_x0" if filter_name == "variance" else filter_name[len(DETECTOR_PREFIX):]
    check(name in scores, "filters", filter_name, f"has no scores (given: {sorted(scores)})")
    raw = np.asarray(scores[name], np.float64)
    values = np.where(finite, np.nan_to_num(raw, nan=np.inf), np.inf)
    kept = keep_lowest(values, count)
    return kept[np.argsort(values[kept], kind="stable")] if ranked else kept


@dataclasses.dataclass
class RecursionResult:
    filters: tuple
    seeds: list
    metrics: list            # per generation: see `run_recursion`
    seconds: float

    def curve(self, name: str, which: str = "generated") -> np.ndarray:
        """A scalar metric per generation, filter and seed: (G, F, R)."""
        f, r = len(self.filters), len(self.seeds)
        return np.asarray([np.asarray(g[which][name], np.float64).reshape(f, r)
                           for g in self.metrics])


def _evaluate_all(problem: Problem, xs: np.ndarray) -> dict:
    """problem.evaluate on each model's samples, gathered per metric as lists over models."""
    out: dict = {}
    for x in xs:
        for name, value in problem.evaluate(x).items():
            out.setdefault(name, []).append(value)
    return out


def _mesh(training: Training, num_models: int):
    if training.mesh != "auto":
        return training.mesh
    return sweeps.auto_mesh() if num_models > 1 else None


def _train_group(training: Training, seeds, generation, data, n_valid, ckpt_dir, log):
    state = jax.vmap(lambda k: tr.init_state(training.network, training.config, k))(
        sweeps.seed_keys(seeds, generation, PHASE_INIT))

    def run(st, on_chunk):
        return sweeps.train_models(
            training.network, training.schedule, training.config, st, jnp.asarray(data),
            jnp.asarray(n_valid, jnp.int32), training.steps, mesh=_mesh(training, len(seeds)),
            on_chunk=on_chunk, chunk_steps=training.chunk_steps, unroll=training.unroll,
            progress=tr.print_progress(f"train gen {generation}", every_s=20))

    return tr.train_resumable(run, state, ckpt_dir, log, every_s=training.checkpoint_every_s)


def _setup(training: Training) -> registry.Setup:
    return registry.Setup((tuple(training.window),), training.window_clock,
                          tuple(training.window))


def _sample_group(training: Training, params, seeds, generation, num, shape, detectors,
                  chunk_dir):
    schedule = training.sampling_schedule or training.schedule
    observers = {**paper_observers(training.window, clock=training.window_clock),
                 **registry.observers(detectors, _setup(training))}
    return sweeps.sample_models(
        training.network, params, schedule,
        sweeps.seed_keys(seeds, generation, PHASE_SAMPLE), num, shape, _mesh(training, len(seeds)),
        observers=observers, chunk_size=min(training.sample_chunk, num),
        net_timesteps=training.net_timesteps, progress=print_progress(f"sample gen {generation}"),
        resume_dir=chunk_dir)


def _groups(num_models: int, vectorise: bool) -> list:
    return [list(range(num_models))] if vectorise else [[m] for m in range(num_models)]


def _run_generation(training: Training, problem: Problem, rcfg: RecursionConfig, seeds, g: int,
                    data: np.ndarray, n_valid: np.ndarray, gdir: Path | None, log):
    """Train and sample one generation's models (all in one jitted call unless not vectorised).
    Returns (losses (M, S), candidates x (M, n, ...), the observer outputs {name: (M, ...)}
    (scored by `_scores` once the finite mask is known), seconds, params stacked over the M
    models on the host -- only with a restart filter, else None)."""
    t0 = time.perf_counter()
    losses, xs, observed, params = [], [], [], []
    for i, group in enumerate(_groups(len(seeds), training.vectorise)):
        sub = None if gdir is None else (gdir if training.vectorise else gdir / f"model_{group[0]}")
        if sub is not None:
            sub.mkdir(parents=True, exist_ok=True)
        gseeds = [seeds[m] for m in group]
        state, loss = _train_group(training, gseeds, g, data[group], n_valid[group], sub, log)
        t1 = time.perf_counter()
        chunks = None if sub is None else sub / "sample_chunks"
        res = _sample_group(training, state.params, gseeds, g, rcfg.num_candidates,
                            problem.shape, rcfg.detectors, chunks)
        losses.append(loss)
        xs.append(res.x)
        if "restart" in rcfg.filters:  # the repair needs the models; otherwise never gathered
            params.append(jax.device_get(state.params))
        observed.append(jax.tree.map(np.asarray, res.observed))
        log(f"generation {g}, models {group[0]}..{group[-1]}: trained in {t1 - t0:.0f}s, sampled "
            f"{rcfg.num_candidates} candidates each in {res.seconds:.0f}s")
        if chunks is not None:
            shutil.rmtree(chunks, ignore_errors=True)
    params = jax.tree.map(lambda *a: np.concatenate(a), *params) if params else None
    return (np.concatenate(losses), np.concatenate(xs),
            jax.tree.map(lambda *a: np.concatenate(a), *observed), time.perf_counter() - t0,
            params)


def _scores(detectors, observed: dict, finite: np.ndarray) -> dict:
    """{detector: (M, n)} of the registered `detectors` from stacked observer outputs."""
    return {d: np.stack([registry.score(d, registry.model_slice(observed, m),
                                        registry.Context(finite.shape[1], finite=finite[m]))
                         for m in range(len(finite))]) for d in detectors}


def check_restart(rcfg: RecursionConfig, num_steps: int, window, respaced: bool) -> None:
    """With a restart filter: the sampler must visit every training timestep, restart_t lie
    below T, and the restarted chain (t = restart_t ... 0) reach the variance window."""
    if "restart" not in rcfg.filters:
        return
    check(not respaced, "filters", ",".join(rcfg.filters),
          "restart needs a sampler over every training timestep (no respacing)")
    check(rcfg.restart_t < num_steps, "restart_t", rcfg.restart_t, f"must be below T={num_steps}")
    check(window[1] <= rcfg.restart_t + 1, "restart_t", rcfg.restart_t,
          f"must reach the variance window {tuple(window)} (window hi <= restart_t + 1), else "
          "the restarted chain cannot re-score a candidate")


def _restart_flagged(training: Training, rcfg: RecursionConfig, params, x, scores, finite,
                     key) -> tuple[np.ndarray, dict]:
    """The restart filter for one model: the candidates the variance filter would drop re-noised
    to `rcfg.restart_t` and resampled (`repair.repair_flagged`). Returns the repaired candidates
    and {'restarted': per round, 'extra_calls': network calls as a share of sampling's}."""
    from mi_jax.sampling import repair

    var = np.nan_to_num(np.asarray(scores["var_x0"], np.float64), nan=np.inf)
    kept = select("variance", scores, finite, rcfg.num_keep, key)
    threshold = float(np.max(var[kept]))
    # Non-finite candidates are not restarted (re-noising NaN gives NaN); they are never kept.
    var = np.where(finite, var, -np.inf)
    observers = {"hal": window_variance(training.window, clock=training.window_clock)}
    # (A fresh eps_fn per model: `repair.restart` compiles once per model and generation,
    # ~1-2 s on CPU, inside the generation's recorded seconds.)
    out = repair.repair_flagged(training.network.eps_fn(params), training.schedule, key, x,
                                var, threshold, rcfg.restart_t, rcfg.restart_rounds, "hal",
                                observers)
    calls = out["network_calls"] / (len(x) * training.schedule.num_steps)
    return out["x"].astype(x.dtype), {"restarted": out["restarted"], "extra_calls": calls}


def _training_sets(rcfg: RecursionConfig, real: np.ndarray, kept_history: list, g: int):
    """Padded training sets (M, N_max, ...) and their sizes for generation g >= 1."""
    n_max = rcfg.train_size(rcfg.generations - 1)
    m = kept_history[-1].shape[0]
    data = np.zeros((m, n_max) + real.shape[2:], np.float32)
    if rcfg.accumulate:
        parts = [real] + kept_history
    else:
        parts = [real[:, :rcfg.num_real], kept_history[-1]]
    joined = np.concatenate(parts, axis=1)
    data[:, :joined.shape[1]] = joined
    return data, np.full((m,), joined.shape[1], np.int32)


def run_recursion(problem: Problem, training: Training, rcfg: RecursionConfig,
                  seeds: Sequence[int], *, workdir=None, log=print) -> RecursionResult:
    """Run `rcfg.generations` generations for every filter and seed.

    Per generation g the result holds `metrics[g]` = {
      'generated': problem.evaluate of each model's candidates (lists over the M models),
      'kept': the same for what each filter kept (the next generation's synthetic data),
      'removed': the same for what it dropped (if at least MIN_REMOVED candidates were),
      'loss': each model's mean training loss over the last 10 % of steps,
      'train_size', 'num_nonfinite', 'seconds',
      'restart' (with a restart filter): per model None, or {'restarted': candidates per round,
      'extra_calls': network calls as a share of sampling's}}.
    For a restart filter, 'generated' (and the saved candidates with their variance,
    samples.npz) are the model's candidates before repair; 'kept' and 'removed' are taken from
    the repaired ones.
    `workdir`: save every generation there and resume from what is there.
    """
    seeds = [check_int(s, "seeds", low=0, high=2**31 - 1) for s in seeds]
    check(len(seeds) >= 1 and len(set(seeds)) == len(seeds), "seeds", seeds,
          "must be distinct and not empty")
    f, r = len(rcfg.filters), len(seeds)
    model_seeds = [seeds[m % r] for m in range(f * r)]
    real = np.stack([np.asarray(problem.real(s), np.float32) for s in seeds])
    check(real.shape[1:] == (rcfg.num_train,) + tuple(problem.shape), "real", real.shape[1:],
          f"must be (num_train={rcfg.num_train}, *{tuple(problem.shape)})")
    real_m = real[np.asarray([m % r for m in range(f * r)])]
    check_restart(rcfg, training.schedule.num_steps, training.window,
                  training.sampling_schedule is not None)
    root = None if workdir is None else Path(workdir)
    metrics, kept_history = [], []
    t_start = time.perf_counter()
    for g in range(rcfg.generations):
        gdir = None if root is None else root / GENERATION_DIR.format(g)
        if gdir is not None and (gdir / wd.METRICS_FILE).exists():
            metrics.append(wd.read_json(gdir / wd.METRICS_FILE))
            with np.load(gdir / KEPT_FILE) as z:
                kept_history.append(z["kept"])
            log(f"generation {g}: finished result found in {gdir}, not re-run")
            kept_history = kept_history if rcfg.accumulate else kept_history[-1:]
            continue
        if g == 0:  # real data only: one model per seed, shared by every filter
            gen_seeds, data, n_valid = seeds, real, np.full((r,), rcfg.num_train, np.int32)
            log(f"generation 0: training {r} model(s) on real data ({rcfg.num_train} samples)")
        else:
            gen_seeds = model_seeds
            data, n_valid = _training_sets(rcfg, real_m, kept_history, g)
            log(f"generation {g}: training {f * r} models ({f} filters x {r} seeds) on "
                f"{int(n_valid[0])} samples each")
        losses, xs, observed, seconds, params = _run_generation(training, problem, rcfg,
                                                              gen_seeds, g, data, n_valid,
                                                              gdir, log)
        generated = _evaluate_all(problem, xs)
        num_nonfinite = int((~np.all(np.isfinite(xs.reshape(len(xs), rcfg.num_candidates, -1)),
                                     axis=-1)).sum())  # before generation 0's broadcast
        if g == 0:  # broadcast the seeds' candidates (and their evaluation) to every filter
            rows = np.asarray([m % r for m in range(f * r)])
            losses, xs = losses[rows], xs[rows]
            observed = jax.tree.map(lambda v: v[rows], observed)
            generated = {k: [v[i] for i in rows] for k, v in generated.items()}
        finite = np.all(np.isfinite(xs.reshape(f * r, rcfg.num_candidates, -1)), axis=-1)
        scores = _scores(rcfg.detectors, observed, finite)
        filter_keys = sweeps.seed_keys(model_seeds, g, PHASE_FILTER)
        # What each filter chooses from: the candidates, or for restart their repaired copy.
        pool, repaired = xs, {}
        for m in range(f * r):
            if rcfg.filters[m // r] == "restart":
                t1 = time.perf_counter()
                pool = xs.copy() if pool is xs else pool
                source = m % r if g == 0 else m  # generation 0: one model per seed
                pool[m], repaired[m] = _restart_flagged(
                    training, rcfg, jax.tree.map(lambda a: a[source], params), xs[m],
                    {k: v[m] for k, v in scores.items()}, finite[m], filter_keys[m])
                finite[m] = np.all(np.isfinite(pool[m].reshape(rcfg.num_candidates, -1)),
                                   axis=-1)
                seconds += time.perf_counter() - t1
                log(f"generation {g}, model {m} (restart): restarted {repaired[m]['restarted']} "
                    f"candidates, +{100 * repaired[m]['extra_calls']:.2f} % network calls")
        ranked = training.config.batch_order == "in_order"
        kept_rows = [select(rcfg.filters[m // r], {k: v[m] for k, v in scores.items()},
                            finite[m], rcfg.num_keep, filter_keys[m], ranked)
                     for m in range(f * r)]
        kept = np.stack([pool[m][rows] for m, rows in enumerate(kept_rows)])
        tail = max(1, losses.shape[1] // 10)
        gm = {"generation": g, "generated": generated,
              "kept": _evaluate_all(problem, kept), "loss": losses[:, -tail:].mean(1).tolist(),
              "train_size": int(n_valid[0]), "num_nonfinite": num_nonfinite,
              "seconds": seconds, "peak_rss_mib": wd.peak_rss_mib()}
        if repaired:  # per model: None unless its filter is restart
            gm["restart"] = [repaired.get(m) for m in range(f * r)]
        if rcfg.num_candidates - rcfg.num_keep >= MIN_REMOVED:
            # What each filter dropped: its precision (for "none", the unused tail: a random set).
            gm["removed"] = _evaluate_all(problem, [np.delete(pool[m], rows, axis=0)
                                                    for m, rows in enumerate(kept_rows)])
        log(f"generation {g} done in {seconds:.0f}s; peak memory so far "
            f"{gm['peak_rss_mib'] or float('nan'):,.0f} MiB")
        metrics.append(gm)
        kept_history.append(kept)
        if gdir is not None:
            keep = min(training.keep_candidates, rcfg.num_candidates)
            wd.write_npz(gdir / KEPT_FILE, kept=kept)
            wd.write_npz(gdir / SAMPLES_FILE, candidates=xs[:, :keep],
                         hal=scores["var_x0"][:, :keep])
            wd.write_json(gdir / wd.METRICS_FILE, gm)  # last: marks the generation finished
        # Without accumulation only the newest kept set is needed: memory stays bounded.
        kept_history = kept_history if rcfg.accumulate else kept_history[-1:]
    return RecursionResult(tuple(rcfg.filters), list(seeds), metrics,
                           time.perf_counter() - t_start)


__all__ = ["RecursionConfig", "Problem", "Training", "RecursionResult", "run_recursion", "select",
           "check_restart",
           "BUILTIN_FILTERS", "DETECTOR_PREFIX"]
