r"""Trajectories of x0_hat for hallucinated and in-support samples (paper Fig. 6).

    python -m experiments.trajectories --workdir=runs/trajectories --preset=quick
    python -m experiments.trajectories --workdir=runs/traj --models_from=runs/reproduce/gmm1d,runs/reproduce/gmm2d

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/trajectories.py.
"""

from mi_jax import cli
from mi_jax.studies import trajectories

if __name__ == "__main__":
    cli.main(trajectories)
