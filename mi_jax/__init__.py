"""mi_jax: mode interpolation (hallucination) in diffusion models, in JAX.

The public API (each symbol documented where it is defined; README "Library API" lists them):

    data:      GaussianMixture, mixture_1d, grid_2d, stack, in_support, hallucination_rate,
               classify (bridge / blur labels), pair_summary
    diffusion: Schedule, linear_schedule, cosine_schedule, quadratic_schedule, make_schedule,
               respace, strided_timesteps, dense_tail_timesteps, sampling_plan (full / strided /
               dense tail), q_sample, predict_x0, eps_loss,
               oracle_eps, oracle_score, oracle_x0 (the exact Gaussian-mixture score)
    nets:      Network, make_mlp, make_unet, take_model
    sampling:  sample, SampleResult, Single / Stacked (one model or a stack), DDPM, DDIM,
               observers (paper_observers, WindowVariance, RegionMeanVariance, PreemptiveFlag,
               Record, FinalEpsNorm, JacobianTrace, window_variance, region_mean_variance,
               preemptive_flag, record, jacobian_trace), reverse (one jittable chunk)
    training:  TrainConfig, TrainState, init_state, train, eps_loss
    sweeps:    Grid, Config, train_grid, sample_grid, train_models, sample_models, sample_oracle
    detection: auroc, roc_curve, removed_at_kept, kept_at_removed, detection_summary, flipd,
               curvature_score, fit_fused_detector / FusedDetector (a logistic fusion fitted on a
               held-out split)
    repair:    repair_flagged (restart flagged samples from a re-noised t')
    models:    load_models (a finished gmm1d / gmm2d work directory), save_checkpoint,
               load_checkpoint
"""

from mi_jax.checkpoint import load as load_checkpoint
from mi_jax.checkpoint import save as save_checkpoint
from mi_jax.data.mixtures import GaussianMixture, grid_2d, mixture_1d, stack
from mi_jax.data.support import classify, hallucination_rate, in_support, pair_summary
from mi_jax.detection.benchmark import FusedDetector, fit_fused_detector
from mi_jax.detection.detectors import curvature_score, flipd
from mi_jax.detection.metrics import (auroc, detection_summary, kept_at_removed, removed_at_kept,
                                      roc_curve)
from mi_jax.diffusion.forward import eps_loss, predict_x0, q_sample
from mi_jax.diffusion.oracle import oracle_eps, oracle_score, oracle_x0
from mi_jax.diffusion.schedule import (Schedule, cosine_schedule, dense_tail_timesteps,
                                       linear_schedule, make_schedule, quadratic_schedule, respace,
                                       sampling_plan, strided_timesteps)
from mi_jax.nets import Network, make_mlp, make_unet, take_model
from mi_jax.sampling.chain import reverse
from mi_jax.sampling.sampler import SampleResult, Single, Stacked, sample
from mi_jax.sampling.repair import repair_flagged
from mi_jax.sampling.observers import (FinalEpsNorm, JacobianTrace, PreemptiveFlag, Record,
                                       RegionMeanVariance, StepView, WindowVariance,
                                       jacobian_trace, paper_observers, preemptive_flag,
                                       record, region_mean_variance, window_variance)
from mi_jax.sampling.solvers import DDIM, DDPM
from mi_jax.sweeps import (Config, Grid, sample_grid, sample_models, sample_oracle, train_grid,
                           train_models)
from mi_jax.training.train import TrainConfig, TrainState, init_state, train
from mi_jax.validation import InputError

__version__ = "0.1.0"


def load_models(workdir, compute_dtype: str | None = None):
    """The trained models of a finished gmm1d / gmm2d work directory (grid, network, stacked
    params, schedule, config): `mi_jax.studies.mixture_models.load_models`."""
    from mi_jax.studies.mixture_models import load_models as load

    return load(workdir, compute_dtype)


__all__ = [
    "GaussianMixture", "grid_2d", "mixture_1d", "stack", "classify", "hallucination_rate",
    "in_support", "pair_summary", "curvature_score", "flipd", "auroc", "detection_summary",
    "kept_at_removed", "removed_at_kept", "roc_curve", "eps_loss", "predict_x0", "q_sample", "oracle_eps",
    "oracle_score", "oracle_x0", "Schedule", "cosine_schedule", "dense_tail_timesteps",
    "linear_schedule", "make_schedule", "quadratic_schedule", "respace", "sampling_plan", "strided_timesteps",
    "Network", "make_mlp", "make_unet", "take_model", "reverse", "SampleResult", "sample",
    "Single", "Stacked", "paper_observers", "FinalEpsNorm", "JacobianTrace", "PreemptiveFlag", "Record", "StepView",
    "WindowVariance", "RegionMeanVariance", "region_mean_variance", "jacobian_trace", "preemptive_flag", "record", "window_variance", "DDIM", "DDPM", "Config", "Grid",
    "sample_grid", "sample_models", "sample_oracle", "train_grid", "train_models", "TrainConfig", "TrainState", "init_state",
    "train", "InputError", "FusedDetector", "fit_fused_detector", "repair_flagged", "load_models",
    "save_checkpoint", "load_checkpoint", "__version__",
]
