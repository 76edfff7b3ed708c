"""mi_jax: mode interpolation (hallucination) in diffusion models, in JAX.

The documented contract (see README.md):
    GaussianMixture(means, stds, weights=None)  .sample(key, n)  .log_prob(x)
    linear_schedule(T, beta_start, beta_end)
    oracle_eps(mixture, schedule)               -> eps_fn(x_t, t) of the exact score
    sample(eps_fn, schedule, key, num, shape, window=(lo, hi), ...) -> SampleResult(.x, .hal)
    in_support(x, mixture, k)
"""

from mi_jax.data.mixtures import GaussianMixture, grid_2d, mixture_1d, stack
from mi_jax.data.support import hallucination_rate, in_support, pair_summary
from mi_jax.diffusion.oracle import oracle_eps, oracle_score, oracle_x0
from mi_jax.diffusion.schedule import (Schedule, cosine_schedule, linear_schedule, make_schedule,
                                       quadratic_schedule)
from mi_jax.nets import Network, make_mlp, make_unet
from mi_jax.sampling.ddpm import SampleResult, sample, sample_network
from mi_jax.validation import InputError

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture", "grid_2d", "mixture_1d", "stack", "hallucination_rate", "in_support",
    "pair_summary", "oracle_eps", "oracle_score", "oracle_x0", "Schedule", "cosine_schedule",
    "linear_schedule", "make_schedule", "quadratic_schedule", "Network", "make_mlp", "make_unet",
    "SampleResult", "sample", "sample_network", "InputError", "__version__",
]
