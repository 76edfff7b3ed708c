r"""Sampler and training ablations (paper appendix, Fig. 11).

    python -m experiments.ablations --workdir=runs/ablations --preset=quick
    python -m experiments.ablations --workdir=runs/abl --models_from=runs/reproduce/gmm1d,runs/reproduce/gmm2d

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/ablations.py.
"""

from mi_jax import cli
from mi_jax.studies import ablations

if __name__ == "__main__":
    cli.main(ablations)
