r"""Detecting hallucinations from the sampling trajectory: paper Fig. 7 and the 95 % / 96 % claim.

    python -m experiments.detection --workdir=runs/detection --preset=quick
    python -m experiments.detection --workdir=runs/det --models_from=runs/reproduce/gmm1d,runs/reproduce/gmm2d

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/detection.py.
"""

from mi_jax import cli
from mi_jax.studies import detection

if __name__ == "__main__":
    cli.main(detection)
