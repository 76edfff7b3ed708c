"""The detector registry: every hallucination detector declared once, read by every consumer.

A `Detector` entry names the sampler observers it needs (built for a `Setup`: windows, clock,
probes), how its per-sample score comes from one model's observer outputs (or, post hoc, from
the model and its samples, e.g. FLIPD), its direction and a one-line description. The detection
study (`evaluate`), the detector benchmark (`benchmark`), the recursion's
`--filters=detector:<name>` and the summary read names and scores from here; adding a detector
is one `register(Detector(...))` call. Scores are oriented: higher = more likely hallucinated.

Observers are merged by name over the detectors of one pass (same name = same statistic: the
first built is kept), so every score comes from the same trajectories; the names are those of
`paper_observers` ('hal', 'var_xt', 'var_eps', 'eps_norm_last').
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from mi_jax.detection.detectors import curvature_score, flipd
from mi_jax.sampling import observers as obs
from mi_jax.validation import InputError, check

OFFICIAL = 0  # index of the official window in `Setup.windows`


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a pass's observers are built for. windows: x0_hat variance windows, the first the
    official one; tracked_windows: the x_t / eps_hat variances' (None: the official one only;
    the detection study keeps every window, and the floats of a window depend on how many are
    computed together, so each consumer keeps its own); trace_window, probes, seed: the
    curvature's Hutchinson estimate; regions: optional (R, *shape) masks (images: per column)."""

    windows: tuple = (obs.OFFICIAL_WINDOW,)
    clock: str = "train"
    trace_window: tuple = obs.OFFICIAL_WINDOW
    probes: int = 1
    seed: int = 0
    regions: Any = None
    tracked_windows: tuple | None = None


@dataclasses.dataclass(frozen=True)
class Context:
    """What a score sees besides the observer outputs: n samples, the window index (windowed
    detectors), a numpy Generator (the random floor), the finite-sample mask (or None: all)."""

    n: int
    window: int = OFFICIAL
    rng: Any = None
    finite: Any = None


@dataclasses.dataclass(frozen=True)
class Model:
    """What a post-hoc score sees of one model: eps_fn(x, t) on the training schedule, FLIPD's
    timestep t0 and Hutchinson probes."""

    eps_fn: Callable
    schedule: Any
    t0: int = 5
    probes: int = 1


@dataclasses.dataclass(frozen=True)
class Detector:
    """One registered detector.

    observers(setup) -> {name: observer} it reads (None: none); score(observed, context) -> (n,) from one
    model's observer outputs; or post_hoc(model, x, key) -> (n,), a traceable function of the
    model and its samples (then `score` is unused). direction: +1 when a higher raw score means
    more likely hallucinated, -1 when lower (`score` orients it). per_window: the benchmark
    reports it at every window (`name lo:hi`); needs_regions: only with `Setup.regions`.
    in_benchmark: reported by the detector benchmark; in_detection: a column of the detection
    study (the paper's comparison: its metrics keys are fixed); label: its table heading."""

    name: str
    description: str
    observers: Callable[[Setup], dict] | None = None  # None: reads no observer
    score: Callable | None = None
    post_hoc: Callable | None = None
    direction: int = 1
    per_window: bool = False
    needs_regions: bool = False
    in_benchmark: bool = True
    in_detection: bool = False
    label: str = ""

    def __post_init__(self):
        check(isinstance(self.name, str) and self.name.strip() == self.name and self.name,
              "name", self.name, "must be a non-empty string without surrounding spaces")
        check((self.score is None) != (self.post_hoc is None), "score", self.name,
              "needs exactly one of score (from observers) or post_hoc (from the model)")
        check(self.direction in (1, -1), "direction", self.direction, "must be +1 or -1")
        if not self.label:
            object.__setattr__(self, "label", self.name)


_REGISTRY: dict = {}


def register(detector: Detector, *, replace: bool = False) -> Detector:
    """Add a detector to the registry (refused if its name is taken, unless `replace`)."""
    check(isinstance(detector, Detector), "detector", type(detector).__name__,
          "must be a registry.Detector")
    check(replace or detector.name not in _REGISTRY, "detector", detector.name,
          "is already registered")
    _REGISTRY[detector.name] = detector
    return detector


def unregister(name: str) -> None:
    """Remove a detector (tests registering a toy one clean up with this)."""
    get(name)
    del _REGISTRY[name]


def names() -> tuple:
    """Every registered detector's name, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> Detector:
    """The registered detector `name`; an unknown name is an InputError listing the names."""
    if name not in _REGISTRY:
        raise InputError(f"detector={name!r}: not registered; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def observers(detector_names: Sequence[str], setup: Setup) -> dict:
    """The one observer set a sampling pass needs for these detectors, merged by name."""
    out: dict = {}
    for name in detector_names:
        for key, o in own_observers(name, setup).items():
            out.setdefault(key, o)
    return out


def own_observers(name: str, setup: Setup) -> dict:
    """{name: observer} detector `name` reads, built for `setup`."""
    build = get(name).observers
    return {} if build is None else build(setup)


def score(name: str, observed: Mapping, context: Context) -> np.ndarray:
    """Detector `name`'s oriented score (n,) from one model's observer outputs."""
    det = get(name)
    check(det.post_hoc is None, "detector", name,
          "is post hoc: compute it with `post_hoc_scores` from the model")
    s = np.asarray(det.score(observed, context))  # its own dtype: callers cast if they need
    check(s.shape == (context.n,), "detector", name, f"gave shape {s.shape}, not ({context.n},)")
    return s if det.direction > 0 else -s


def post_hoc_scores(detector_names: Sequence[str], model: Model, x, key) -> dict:
    """{name: (n,)} of the post-hoc detectors among `detector_names`, for one model's samples x
    (traceable: jit / vmap it over models). Oriented like `score`."""
    out = {}
    for name in detector_names:
        det = get(name)
        if det.post_hoc is not None:
            s = det.post_hoc(model, x, key)
            out[name] = s if det.direction > 0 else -s
    return out


def is_post_hoc(name: str) -> bool:
    return get(name).post_hoc is not None


def detection_names() -> tuple:
    """The detection study's detectors (`in_detection`), in registration order."""
    return tuple(n for n, d in _REGISTRY.items() if d.in_detection)


def filter_names() -> tuple:
    """The detectors usable as a recursion filter (`detector:<name>`): scored from the sampling
    pass, without regions."""
    return tuple(n for n, d in _REGISTRY.items() if d.post_hoc is None and not d.needs_regions
                 and n != "random")


def window_name(name: str, window) -> str:
    """A windowed detector's reported name: the window follows the statistic's first word
    ('var_x0 0:10', 'var_x0 0:10 max over regions')."""
    lo, hi = (int(v) for v in window)
    head, _, tail = name.partition(" ")
    return f"{head} {lo}:{hi}" + (f" {tail}" if tail else "")


def _window_var(key: str, quantity: str) -> Callable:
    def build(setup: Setup) -> dict:
        if quantity == "x0":
            windows, regions = setup.windows, setup.regions
        else:
            windows, regions = setup.tracked_windows or setup.windows[:1], None
        return {key: obs.window_variance(windows, quantity, regions=regions, clock=setup.clock)}
    return build


def _two_sided(observed, context: Context) -> np.ndarray:
    raw = np.log(np.maximum(np.asarray(observed["hal"].var[OFFICIAL], np.float64), 1e-30))
    ok = np.isfinite(raw) if context.finite is None else context.finite & np.isfinite(raw)
    return np.abs(raw - np.median(raw[ok]))


def _flipd(model: Model, x, key):
    return flipd(model.eps_fn, model.schedule, x, model.t0, key, model.probes)


register(Detector(
    "var_x0", "x0_hat variance over a window: the paper's trajectory variance (window 0 "
    "the official filter)", _window_var("hal", "x0"),
    lambda o, c: o["hal"].var[c.window], per_window=True, in_detection=True, label="x0 var"))
register(Detector(
    "var_x0 max over regions", "x0_hat variance at the official window, maximum over regions "
    "(images: per column)", _window_var("hal", "x0"),
    lambda o, c: o["hal"].var_regions[OFFICIAL].max(-1), needs_regions=True))
register(Detector(
    "var_xt", "x_t variance over the official window", _window_var("var_xt", "xt"),
    lambda o, c: o["var_xt"].var[OFFICIAL], in_detection=True, label="x_t var"))
register(Detector(
    "var_eps", "eps_hat variance over the official window", _window_var("var_eps", "eps"),
    lambda o, c: o["var_eps"].var[OFFICIAL], in_detection=True, label="eps var"))
register(Detector(
    "eps_norm_last", "|eps_hat| at the last reverse step",
    lambda setup: {"eps_norm_last": obs.FinalEpsNorm()}, lambda o, c: o["eps_norm_last"],
    in_detection=True, label="final eps norm"))
register(Detector(
    "var_x0_two_sided", "|log var - median log var| of the official x0_hat variance: flags "
    "both tails (SIMPLE SHAPES: duplicates high, empty images low)", _window_var("hal", "x0"),
    _two_sided, in_benchmark=False))
register(Detector(
    "curvature", "|trace - median| of the Hutchinson trace of d eps_hat / d x_t over the "
    "trace window (`curvature_score`)",
    lambda s: {"trace": obs.jacobian_trace(s.trace_window, s.probes, s.seed, clock=s.clock)},
    lambda o, c: curvature_score(o["trace"])))
register(Detector(
    "flipd", "FLIPD local intrinsic dimension of the final sample at t0 (post hoc, from the "
    "model)", post_hoc=_flipd, in_detection=True, label="FLIPD LID"))
register(Detector(
    "random", "a uniform random score: the floor every detector must beat",
    score=lambda o, c: c.rng.random(c.n), in_detection=True))


def describe() -> str:
    """A markdown table of the registered detectors (name, post hoc or not, description)."""
    rows = ["| detector | from | description |", "|---|---|---|"]
    rows += [f"| {d.name} | {'the model (post hoc)' if d.post_hoc else 'the sampling pass'} | "
             f"{d.description.replace('|', chr(92) + '|')} |" for d in _REGISTRY.values()]
    return "\n".join(rows) + "\n"


def model_slice(tree, m: int):
    """Model m of stacked observer outputs (leading model axis)."""
    return jax.tree.map(lambda a: np.asarray(a)[m], tree)


__all__ = ["Detector", "Setup", "Context", "Model", "register", "unregister", "names", "get",
           "observers", "own_observers", "score", "post_hoc_scores", "is_post_hoc", "detection_names",
           "filter_names", "window_name", "describe",
           "model_slice", "OFFICIAL"]
