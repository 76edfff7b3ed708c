r"""Why it happens: the exact x0_hat and score jump between modes, the learned ones are smooth
(paper Fig. 4).

    python -m experiments.score_analysis --workdir=runs/score --preset=quick
    python -m experiments.score_analysis --workdir=runs/score --models_from=runs/reproduce/gmm1d,runs/reproduce/gmm2d

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/score_analysis.py.
"""

from mi_jax import cli
from mi_jax.studies import score_analysis

if __name__ == "__main__":
    cli.main(score_analysis)
