r"""The claims ledger of any directory of finished experiments (a main job, a GPU run).

    python -m experiments.ledger --workdir=runs/reproduce

Reads `<workdir>/<experiment>/metrics.json` and `config.json` for every experiment present,
prints the ledger (Markdown) and writes `ledger.md` and `ledger.json` into the directory.
"""

from absl import flags

from mi_jax import cli
from mi_jax import ledger as _ledger
from mi_jax.studies import runner

__doc__ += "\n" + _ledger.RULE + "\n"  # absl's --help prints this docstring

flags.DEFINE_string("workdir", None, "Directory holding finished experiments.")


def main():
    print(runner.write_ledger(flags.FLAGS.workdir))


if __name__ == "__main__":
    cli.run_main(main)
