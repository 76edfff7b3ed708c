r"""Repair instead of discard (beyond the paper): restart or mode guidance vs the variance filter.

    python -m experiments.repair --workdir=runs/repair --preset=quick
    python -m experiments.repair --workdir=runs/repair --models_from=runs/reproduce/gmm2d

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/repair.py.
"""

from mi_jax import cli
from mi_jax.studies import repair

if __name__ == "__main__":
    cli.main(repair)
