r"""Which modes lose mass: per-mode mass of the learned sampler against the exact score.

    python -m experiments.mode_mass --workdir=runs/mode_mass --models_from=runs/reproduce/gmm2d
    python -m experiments.mode_mass --workdir=runs/mode_mass_shift --models_from=runs/g2,runs/g2_shift

(`runs/g2_shift`: `python -m experiments.gmm2d --layout=square --grid_shift=1`, the grid moved so
that no mode sits on the input origin.) Every flag, its default and what each preset sets:
--help. The study: mi_jax/studies/mode_mass.py.
"""

from mi_jax import cli
from mi_jax.studies import mode_mass

if __name__ == "__main__":
    cli.main(mode_mass)
