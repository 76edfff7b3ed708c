r"""SIMPLE SHAPES: an image DDPM (small UNet) hallucinates shape combinations it never saw
(paper Figs. 1, 5, 7 and the appendix bottleneck embedding).

    python -m experiments.shapes --workdir=runs/shapes --preset=quick     # 2-core CPU, ~25 min
    python -m experiments.shapes --workdir=runs/shapes_paper --preset=paper  # GPU-sized
    python -m experiments.shapes --workdir=runs/mine --images_dir=path/to/pngs --resolution=32

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/shapes.py.
"""

from mi_jax import cli
from mi_jax.studies import shapes

if __name__ == "__main__":
    cli.main(shapes)
