"""The recursion study's settings: its flags and presets, and one typed config per dataset.

A dataset's config (`Gmm2dConfig`, `DigitsConfig`, `ShapesConfig`) is resolved from its preset
(`DATASET_PRESETS`) and the per-dataset flags that were given (`dataset_config`). Its saved form
(`to_dict`, the dataset sub-directory's config.json) leaves out what was not set (None), so the
work directories of earlier versions, whose configs were dicts, are still recognised as finished.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from mi_jax import config
from mi_jax import recursive as rec
from mi_jax.detection import registry
from mi_jax.diffusion import schedule as sched
from mi_jax.training import train as tr
from mi_jax.validation import InputError, check_training_and_sampling

DATASETS = ("gmm2d", "shapes", "digits")

OPTIONS = (
    config.Option("preset", "choice", "quick (CPU) or paper (official 2D protocol).",
                  choices=("quick", "paper")),
    config.Option("datasets", "str", "Comma-separated subset of: " + ", ".join(DATASETS)),
    config.Option("filters", "str", "Comma-separated filters: none, random, variance, restart "
                  "(repair what variance would drop: re-noise to --restart_t, resample), "
                  "detector:<name> (a registered detector: "
                  + "|".join(registry.filter_names()) + ")."),
    config.Option("restart_t", "int", "The restart filter's re-noising timestep t' (unset: "
                  f"{rec.RecursionConfig.restart_t}).", low=1, default=None),
    config.Option("real_fraction", "float", "Share of each later generation's training set that is "
                  "real data (0 = the paper's protocol).", low=0, high=0.99),
    config.Option("accumulate", "bool", "Train on real + every generation's kept samples so far."),
    # Per-dataset settings: no value here means the dataset's own preset.
    config.Option("generations", "int", "Generations (0 = trained on real data).", low=1, high=50),
    config.Option("seeds", "ints", "Seeds (each filter x seed is one chain of models).", low=0,
                  high=2**31 - 1),
    config.Option("steps", "int", "Training steps per generation.", low=1),
    config.Option("batch_size", "int", "Training batch size.", low=1),
    config.Option("lr", "float", "Adam learning rate.", low=0, low_open=True),
    config.Option("lr_schedule", "choice", "constant (official) or cosine decay to 0 over --steps "
                  "(unset: cosine, except gmm2d's paper preset).", choices=("constant", "cosine")),
    config.Option("width", "int", "gmm2d: the MLP's width (unset: the dataset's preset).",
                  low=2),
    config.Option("focus_steps", "int", "Importance-weighted timesteps: a share --focus_prob of t "
                  "from [0, focus_steps) (the same objective; unset or 0: uniform t, official).",
                  low=0),
    config.Option("focus_prob", "float", "With --focus_steps: the share of t drawn from [0, "
                  "focus_steps) (unset: 0.5).", low=0, high=1),
    config.Option("batch_order", "choice", "random (i.i.d. rows) or in_order (the official "
                  "fixed-order batches: generation 0's data in the official round-robin mode "
                  "order, later generations' in the order the filter keeps them -- the variance "
                  "filter's by ascending variance; unset: random, except gmm2d's paper preset).",
                  choices=("random", "in_order")),
    config.Option("num_train", "int", "Training-set size of every generation.", low=10),
    config.Option("num_candidates", "int", "Samples drawn per generation, the filter keeps "
                  "num_train of them.", low=10),
    config.TRAIN_CHUNK,
    config.CHUNK_SIZE,
    config.Option("sampling_steps", "int", "Reverse steps (strided if below T).", low=2),
    config.Option("hal_window", "window", "Trajectory-variance window lo,hi: training-schedule "
                  "timesteps with --hal_clock=train, reverse-step indices with index.", low=0),
    config.Option("hal_clock", "choice", "How --hal_window is counted: train (timesteps of the "
                  "training schedule, whatever the sampler) or index (the last reverse steps).",
                  choices=("train", "index")),
    config.Option("dense_steps", "int", "Sample every training timestep below this one, and "
                  "--sampling_steps strided ones above it (0: strided throughout).", low=0),
    config.Option("resolution", "int", "Image side for shapes (divides 64) and digits (rendered: "
                  "divides 64; MNIST: divides 28).", low=4, high=64),
    config.Option("digits_source", "choice", "digits: mnist (real handwritten MNIST: the 5 000 "
                  "digits of the `mnist` extra, or the IDX files of --mnist_dir) or rendered "
                  "(digits typeset from matplotlib's fonts: NOT MNIST).",
                  choices=("mnist", "rendered")),
    config.Option("mnist_dir", "str", "Folder with MNIST's train-images/-labels IDX files (the "
                  "full 60 000; default: the 5 000 of the `mnist` extra)."),
    config.Option("grid_size", "int", "Side of the gmm2d square grid (quick preset: 3; 5: the "
                  "official 25 modes).", low=2, high=10),
    config.Option("between_weight", "float", "Train every generation with the between-points term "
                  f"of experiments.smoothness at this weight (t < {tr.DEFAULT_BETWEEN_T_MAX}; unset: the "
                  "plain objective).",
                  low=0),
    config.Option("input_bias", "bool", "gmm2d: give the MLP's input layer a bias (unset: none, as "
                  "the official network; see experiments.mode_mass)."),
    config.Option("pool_from", "str", "Comma-separated work directories of finished runs of this "
                  "study with the same settings but other seeds (or filters): train nothing, pool "
                  "their curves per filter over every seed into this workdir's table and Fig. 8.",
                  default=None),
)
DATASET_OPTIONS = ("generations", "seeds", "steps", "batch_size", "lr", "lr_schedule",
                   "batch_order", "width", "focus_steps", "focus_prob", "num_train",
                   "num_candidates", "train_chunk",
                   "chunk_size", "sampling_steps", "hal_window", "hal_clock", "dense_steps",
                   "resolution", "digits_source", "mnist_dir", "grid_size", "between_weight",
                   "input_bias")
# Unset per-dataset options mean "the dataset's own preset" (DATASET_PRESETS).
OPTIONS = tuple(dataclasses.replace(o, default=None) if o.name in DATASET_OPTIONS else o
                for o in OPTIONS)
Config = config.config_class("RecursiveConfig", OPTIONS)
# Digits' side when --resolution is not given: MNIST's 28 x 28 pooled 2 x 2 on the CPU preset
# (sides divide 28); rendered digits are drawn at 64 x 64 and pooled (sides divide 64).
DIGITS_RESOLUTION = {"mnist": {"quick": 14, "paper": 28}, "rendered": {"quick": 16, "paper": 32}}
MNIST_HELD_OUT = 1000  # real digits kept out of training: classifier test, Frechet reference
NOT_MNIST = "NOT MNIST"  # ends the source of rendered digits, which the MNIST row refuses
PRESETS = {
    # SIMPLE SHAPES is not in the quick default: a UNet that draws clean shapes needs ~1 500 steps
    # (~25 min per model with sampling on 2 cores), i.e. hours for the study: --datasets=shapes.
    "quick": dict(datasets="gmm2d,digits", filters="none,random,variance",
                  real_fraction=0.0, accumulate=False),
    "paper": dict(datasets="gmm2d,digits,shapes", filters="none,random,variance",
                  real_fraction=0.0, accumulate=False),
}

# Per-dataset presets. gmm2d/paper is the official protocol (25-mode grid, 100 000 samples,
# 102 500 candidates, keep 100 000; batch 10 000 in the data's order, constant lr; 100 000
# steps; tests/test_paper_presets.py reads it against run.sh). Everything else is [ASSUMED]
# (the paper gives no Shapes/MNIST protocol); quick presets are sized for a 2-core CPU.
DATASET_PRESETS = {
    "quick": {
        # The first 300 of the official 1 000 betas (0.001 -> 0.2): alpha_bar(299) = 8e-5, so the
        # chain starts from noise as before, and no step is spent on the 700 steps of pure noise
        # (3x faster convergence measured: BUILD_NOTES.md).
        "gmm2d": dict(grid_size=3, width=64, T=300, beta_start=1e-3,
                      beta_end=1e-3 + 299 * 0.199 / 999, steps=5000, batch_size=512, lr=2e-3,
                      num_train=5000, num_candidates=5500, train_chunk=1000, chunk_size=5500,
                      sampling_steps=300, hal_window=[0, 10], k=4.0, generations=5, seeds=[0, 1]),
        # Real MNIST (the 5 000 digits of the `mnist` extra) at 14 x 14 with the shapes UNet's
        # layout at two levels; 2 000 of them train generation 0, the other 3 000 are the
        # Frechet reference and the classifier's test set. Sampled like shapes (50 strided
        # steps, then t = 9..0 one by one: the official window). ~5 min per model on 2 cores.
        "digits": dict(digits_source="mnist", base=16, mults=[1, 2], T=1000, beta_start=1e-4,
                       beta_end=0.02, steps=2000, batch_size=64, lr=1e-3, num_train=2000,
                       num_candidates=2200, train_chunk=1, chunk_size=1100, sampling_steps=50,
                       dense_steps=10, hal_window=[0, 10], hal_clock="train",
                       classifier_steps=2000, generations=3, seeds=[0, 1]),
        # The UNet of experiments.shapes' quick preset, 1 500 steps on 1 000 images (17.9 %
        # hallucinated at generation 0); a base-8 UNet at lr 2e-3 diverged at sampling
        # (BUILD_NOTES.md). The official window (t = 9..0) sampled step by step after 50 strided
        # steps (issue 15). ~7 min per model on 2 cores, training and sampling.
        "shapes": dict(resolution=32, base=16, mults=[1, 2, 2], T=1000, beta_start=1e-4,
                       beta_end=0.02, steps=1500, batch_size=32, lr=1e-3, num_train=1000,
                       num_candidates=1100, train_chunk=1, chunk_size=550, sampling_steps=50,
                       dense_steps=10, hal_window=[0, 10], hal_clock="train", generations=3,
                       seeds=[0, 1]),
    },
    "paper": {
        # Candidates sampled in 5 chunks: on a CPU one chunk of 102 500 per model takes ~50 min
        # for 9 models, and a chunk is the unit of progress and of resuming an interrupted pass.
        "gmm2d": dict(grid_size=5, width=128, T=1000, beta_start=1e-3, beta_end=0.2,
                      steps=100_000, batch_size=10_000, lr=1e-3, lr_schedule="constant",
                      batch_order="in_order", num_train=100_000,
                      num_candidates=102_500, train_chunk=2000, chunk_size=20_500,
                      sampling_steps=1000, hal_window=[0, 10], k=4.0, generations=5,
                      seeds=[0, 1, 2, 3, 4]),
        "digits": dict(digits_source="mnist", base=32, mults=[1, 2, 2], T=1000,
                       beta_start=1e-4, beta_end=0.02, steps=20_000, batch_size=128, lr=2e-4,
                       num_train=4000, num_candidates=4100, train_chunk=1000, chunk_size=1025,
                       sampling_steps=1000, hal_window=[0, 10], hal_clock="train",
                       classifier_steps=5000, generations=5, seeds=[0, 1, 2]),
        "shapes": dict(resolution=64, base=64, mults=[1, 2, 2, 2], T=1000, beta_start=1e-4,
                       beta_end=0.02, steps=50_000, batch_size=128, lr=2e-4, num_train=5000,
                       num_candidates=5125, train_chunk=1000, chunk_size=1025,
                       sampling_steps=1000, hal_window=[0, 10], generations=5, seeds=[0, 1, 2]),
    },
}




@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """One dataset's resolved settings (the per-dataset flags are documented in OPTIONS). A
    field left None does not apply to this dataset (another dataset's flag) or, for restart_t,
    was not set."""

    dataset: str
    preset: str
    filters: str
    real_fraction: float
    accumulate: bool
    generations: int
    seeds: tuple
    T: int
    beta_start: float
    beta_end: float
    steps: int
    batch_size: int
    lr: float
    num_train: int
    num_candidates: int
    train_chunk: int
    chunk_size: int
    sampling_steps: int
    hal_window: tuple
    restart_t: int | None = None        # unset: rec.RecursionConfig's (restart filter only)
    lr_schedule: str = "cosine"
    batch_order: str = "random"
    focus_steps: int = 0                # uniform t
    focus_prob: float = 0.5
    between_weight: float = 0.0         # the plain objective
    hal_clock: str = "index"
    dense_steps: int = 0                # strided throughout
    # Other datasets' flags: a flag applies to every selected dataset and is kept in its saved
    # config (as before), whether or not the dataset uses it.
    width: int | None = None
    resolution: int | None = None
    grid_size: int | None = None
    input_bias: bool | None = None
    mnist_dir: str | None = None
    digits_source: str | None = None

    # The per-generation metric of the dataset's Fig. 8 panel and ledger row.
    headline_metric: ClassVar[str] = "hallucination_rate"

    def __post_init__(self):
        for name in ("seeds", "hal_window", "mults"):
            if getattr(self, name, None) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))

    # How the work is split, not what is measured (see mi_jax.workdir).
    EXECUTION: ClassVar[tuple] = ("train_chunk", "chunk_size")

    def to_dict(self) -> dict:
        """Every field (None: not applicable or unset)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def protocol(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in self.EXECUTION}

    def execution(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k in self.EXECUTION}

    @staticmethod
    def from_dict(saved: dict) -> "DatasetConfig":
        """A saved dataset config (config.json, flat; any version) as its typed config, defaults
        filled in for fields it lacks."""
        return DATASET_CONFIGS[saved["dataset"]](**saved)

    @classmethod
    def from_saved(cls, saved: dict) -> "DatasetConfig":
        return DatasetConfig.from_dict(saved)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gmm2dConfig(DatasetConfig):
    """The 2D grid of Gaussians (toy MLP)."""

    grid_size: int
    width: int
    k: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class DigitsConfig(DatasetConfig):
    """Real MNIST (digits_source mnist: the `mnist` extra's 5 000, or mnist_dir's IDX files) or
    rendered digits, modelled by a UNet of base channels and level multipliers mults, judged
    by a classifier trained for classifier_steps."""

    digits_source: str
    resolution: int
    base: int
    mults: tuple
    classifier_steps: int

    headline_metric: ClassVar[str] = "frechet"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShapesConfig(DatasetConfig):
    """SIMPLE SHAPES (UNet of base channels and level multipliers mults)."""

    resolution: int
    base: int
    mults: tuple


DATASET_CONFIGS = {"gmm2d": Gmm2dConfig, "digits": DigitsConfig, "shapes": ShapesConfig}


def names(text: str, flag: str, allowed=None) -> list:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise InputError(f"{flag}={text}: must be a non-empty list of distinct names")
    for n in names:
        if allowed is not None and n not in allowed:
            raise InputError(f"{flag}={text}: unknown {n!r} (have {', '.join(allowed)})")
    return names


def dataset_config(cfg: Config, name: str) -> DatasetConfig:
    """One dataset's resolved config: its preset, then every per-dataset flag that was given."""
    values = dict(DATASET_PRESETS[cfg.preset][name])
    values.update({k: getattr(cfg, k) for k in DATASET_OPTIONS if getattr(cfg, k) is not None})
    if name == "digits" and cfg.resolution is None:
        values["resolution"] = DIGITS_RESOLUTION[values["digits_source"]][cfg.preset]
    values.update({k: getattr(cfg, k) for k in ("preset", "filters", "real_fraction",
                                                "accumulate", "restart_t")})
    return DATASET_CONFIGS[name](dataset=name, **values)


def recursion_config(d: DatasetConfig) -> rec.RecursionConfig:
    return rec.RecursionConfig(d.generations, d.num_train, d.num_candidates,
                               tuple(names(d.filters, "filters")), float(d.real_fraction),
                               bool(d.accumulate),
                               int(rec.RecursionConfig.restart_t if d.restart_t is None
                                   else d.restart_t))


def sampling_timesteps(d: DatasetConfig):
    """Training timesteps the sampler visits (None: all T)."""
    return sched.plan_timesteps(d.T, d.sampling_steps, d.dense_steps)


def check_sampler(d: DatasetConfig) -> None:
    """The sampling plan and the variance window fit the schedule (one-line InputError)."""
    name = d.dataset
    clock, dense, (lo, hi) = d.hal_clock, d.dense_steps, d.hal_window
    if dense and dense + d.sampling_steps > d.T:
        raise InputError(f"dense_steps={dense}: with sampling_steps={d.sampling_steps} must "
                         f"be at most T={d.T} steps ({name})")
    if clock == "index":
        check_training_and_sampling(d.batch_size, d.num_train, d.sampling_steps + dense, d.T,
                                    d.hal_window, name)
        return
    check_training_and_sampling(d.batch_size, d.num_train, d.sampling_steps, d.T, (0, 1), name)
    visited = sampling_timesteps(d)
    visited = np.arange(d.T) if visited is None else visited
    if hi > d.T or not np.any((visited >= lo) & (visited < hi)):
        raise InputError(f"hal_window={lo},{hi}: must hold a training timestep the sampler "
                         f"visits, inside [0, T={d.T}) ({name})")


def check_dataset(cfg: Config, d: DatasetConfig) -> None:
    """Every cross-field check of one dataset's resolved config (one-line InputError)."""
    name = d.dataset
    if len(set(d.seeds)) != len(d.seeds):
        raise InputError(f"seeds={','.join(map(str, d.seeds))}: must be distinct")
    rcfg = recursion_config(d)  # InputError "name=value: why" names the field
    if d.num_candidates < rcfg.num_keep:
        raise InputError(f"num_candidates={d.num_candidates}: must be >= the "
                         f"{rcfg.num_keep} samples each filter keeps ({name})")
    check_sampler(d)
    if cfg.restart_t is not None and "restart" not in rcfg.filters:
        raise InputError(f"restart_t={cfg.restart_t}: only the restart filter uses it "
                         f"(filters={d.filters})")
    rec.check_restart(rcfg, d.T, d.hal_window, sampling_timesteps(d) is not None)
    if name == "shapes" and 64 % d.resolution:
        raise InputError(f"resolution={d.resolution}: must divide 64 (shapes)")
    if name == "digits":
        check_digits(d)


def check_digits(d: DatasetConfig) -> None:
    """The digits' source exists and fits the resolution, training-set size and UNet."""
    from mi_jax.data import digits as dg

    if d.digits_source == "rendered":
        if d.mnist_dir:
            raise InputError(f"mnist_dir={d.mnist_dir}: only with --digits_source=mnist")
        if 64 % d.resolution:
            raise InputError(f"resolution={d.resolution}: must divide 64 (rendered digits)")
        if d.num_train > 100_000:
            raise InputError(f"num_train={d.num_train}: at most 100000 rendered digits")
    else:
        if 28 % d.resolution:
            raise InputError(f"resolution={d.resolution}: must divide 28 for MNIST")
        if d.mnist_dir:
            dg.load_mnist(d.mnist_dir, 28, limit=1)  # InputError "mnist_dir=...: why"
        else:
            dg.packaged_mnist_path()  # InputError: how to install the `mnist` extra
            available = dg.PACKAGED_MNIST_SIZE - MNIST_HELD_OUT
            if d.num_train > available:
                raise InputError(f"num_train={d.num_train}: at most {available} of the "
                                 f"{dg.PACKAGED_MNIST_SIZE} packaged MNIST digits ("
                                 f"{MNIST_HELD_OUT} are held out; --mnist_dir for more)")
    levels = 2 ** (len(d.mults) - 1)
    if d.resolution % levels:
        raise InputError(f"resolution={d.resolution}: the UNet's {len(d.mults)} levels halve "
                         f"it {len(d.mults) - 1} times, so it must divide by {levels}")
