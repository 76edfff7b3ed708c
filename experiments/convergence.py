r"""Training recipes for the official 25-mode grids on a CPU budget: an A/B with convergence curves.

    python -m experiments.convergence --workdir=runs/convergence
    python -m experiments.convergence --workdir=runs/conv_ab --recipes=official_cpu,focus,ema,focus_ema

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/convergence.py.
"""

from mi_jax import cli
from mi_jax.studies import convergence

if __name__ == "__main__":
    cli.main(convergence)
