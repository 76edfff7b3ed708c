r"""2D 25-mode grids: paper Fig. 3 (square grid vs the rotated "diamond" grid).

    python -m experiments.gmm2d --workdir=runs/gmm2d --preset=quick
    python -m experiments.gmm2d --workdir=runs/gmm2d_paper --preset=paper    # GPU-sized

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/gmm2d.py.
"""

from mi_jax import cli
from mi_jax.studies import gmm2d

if __name__ == "__main__":
    cli.main(gmm2d)
