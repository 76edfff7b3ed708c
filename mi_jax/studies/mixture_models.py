"""The trained models of a finished mixture study (a gmm1d or gmm2d work directory), loaded for
the analyses (detection, trajectories, score analysis, ablations, ...) without retraining.

Apart from `mixture_study` (which gmm1d and gmm2d are built on) so that neither imports the
other: this module reads both studies' configs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from mi_jax import checkpoint, config
from mi_jax.data import mixtures as mx
from mi_jax.diffusion.schedule import Schedule
from mi_jax.nets import make_mlp
from mi_jax.studies import gmm1d, gmm2d
from mi_jax.studies import mixture_study as ms
from mi_jax.sweeps import Config, Grid, init_grid
from mi_jax.validation import InputError, check
from mi_jax.workdir import CONFIG_FILE, METRICS_FILE, read_config


@dataclasses.dataclass
class TrainedModels:
    grid: Grid
    network: object
    params: object          # stacked (M, ...)
    schedule: Schedule
    config: object          # the source study's Config (see saved_study_config)
    source: str


def saved_study_config(saved: dict):
    """A finished mixture directory's `config.json` as its study's Config (gmm1d or gmm2d; else
    just the training recipe, `config.RecipeConfig`)."""
    for study in (gmm1d, gmm2d):
        try:
            return config.from_values(study.Config, saved)
        except InputError:
            continue
    return config.from_values(config.RecipeConfig, saved, ignore_unknown=True)


def load_models(workdir, compute_dtype: str | None = None) -> TrainedModels:
    """The trained models of a finished mixture experiment (gmm1d / gmm2d work directory).
    compute_dtype: the network's matmul precision (None: the run's own; the params are the same
    pytree either way)."""
    workdir = Path(workdir)
    for name in (CONFIG_FILE, METRICS_FILE, ms.MODELS_FILE, ms.TRAIN_CHECKPOINT):
        check((workdir / name).exists(), "models_from", str(workdir),
              f"holds no finished mixture experiment (missing {name})")
    cfg = saved_study_config(read_config(workdir))
    with np.load(workdir / ms.MODELS_FILE) as f:
        configs = []
        for c, name in enumerate(f["names"]):
            m = mx.GaussianMixture(f["means"][c], f["stds"][c], f["weights"][c], f["mask"][c])
            configs.append(Config(str(name), m, int(f["num_train"][c])))
        grid = Grid(configs, [int(s) for s in f["seeds"]])
    network = make_mlp(configs[0].mixture.dim, cfg.width, 3, cfg.tied,
                       num_timesteps=cfg.T, input_bias=cfg.input_bias,
                       compute_dtype=compute_dtype or cfg.compute_dtype)
    train_cfg = ms.train_config_from(cfg)
    state = checkpoint.load(workdir / ms.TRAIN_CHECKPOINT, init_grid(network, train_cfg, grid))
    return TrainedModels(grid, network, state.eval_params, ms.schedule_from_config(cfg), cfg,
                         str(workdir))
