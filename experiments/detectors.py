r"""Detector benchmark: every hallucination detector scored the same way (beyond the paper).

    python -m experiments.detectors --workdir=runs/detectors --preset=quick
    python -m experiments.detectors --workdir=runs/det_all --models_from=runs/reproduce/gmm1d,runs/reproduce/gmm2d,runs/reproduce/shapes

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/detectors.py.
"""

from mi_jax import cli
from mi_jax.studies import detectors

if __name__ == "__main__":
    cli.main(detectors)
