r"""1D Gaussian mixtures: paper Fig. 2 and Appendix C (training-set size and mode separation).

    python -m experiments.gmm1d --workdir=runs/gmm1d --preset=quick
    python -m experiments.gmm1d --workdir=runs/gmm1d_paper --preset=paper      # GPU-sized

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/gmm1d.py.
"""

from mi_jax import cli
from mi_jax.studies import gmm1d

if __name__ == "__main__":
    cli.main(gmm1d)
