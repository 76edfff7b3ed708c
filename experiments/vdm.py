r"""VDMs with T training and T' sampling steps on the 25-mode grid (paper App. Fig. 11).

    python -m experiments.vdm --workdir=runs/vdm --preset=quick

Every flag, its default and what each preset sets: --help. The study: mi_jax/studies/vdm.py.
"""

from mi_jax import cli
from mi_jax.studies import vdm

if __name__ == "__main__":
    cli.main(vdm)
