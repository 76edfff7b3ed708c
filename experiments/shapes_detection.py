r"""SIMPLE SHAPES: trajectory variance as a detector, per kind of hallucination, region and window.

    python -m experiments.shapes_detection --workdir=runs/shapes_det \

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/shapes_detection.py.
"""

from mi_jax import cli
from mi_jax.studies import shapes_detection

if __name__ == "__main__":
    cli.main(shapes_detection)
