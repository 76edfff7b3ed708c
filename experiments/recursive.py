r"""Recursive retraining on own samples, with and without filtering (paper Fig. 8 and the
appendix's per-generation scatter plots).

    python -m experiments.recursive --workdir=runs/recursive --preset=quick   # 2D grid + digits
    python -m experiments.recursive --workdir=runs/recursive --datasets=gmm2d --seeds=0,1,2
    python -m experiments.recursive --workdir=runs/rec_mnist --datasets=digits --mnist_dir=PATH
    python -m experiments.recursive --workdir=runs/rec_shapes --datasets=shapes  # hours on 2 cores
    python -m experiments.recursive --workdir=runs/rec_pooled --datasets=shapes \
        --pool_from=runs/rec_shapes,runs/rec_shapes_s2   # seeds run apart, one table

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/recursive/.
"""

from mi_jax import cli
from mi_jax.studies import recursive

if __name__ == "__main__":
    cli.main(recursive)
