r"""Mitigation in training (beyond the paper): the plain objective vs added loss terms (the
second-order Jacobian term, the between-points term) on the 25-mode grids.

    python -m experiments.smoothness --workdir=runs/smoothness --preset=quick

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/smoothness.py.
"""

from mi_jax import cli
from mi_jax.studies import smoothness

if __name__ == "__main__":
    cli.main(smoothness)
