r"""The claims ledger of any directory of finished experiments (a main job, a GPU run).

    python -m experiments.ledger --workdir=runs/reproduce
    python -m experiments.ledger --results=docs/results.md   # the committed ledgers side by side

Reads `<workdir>/<experiment>/metrics.json` and `config.json` for every experiment present,
prints the ledger (Markdown) and writes `ledger.md` and `ledger.json` into the directory.
"""

from absl import flags

from mi_jax import cli
from mi_jax import ledger as _ledger

__doc__ += "\n" + _ledger.RULE + "\n"  # absl's --help prints this docstring

flags.DEFINE_string("workdir", None, "Directory holding finished experiments.")
flags.DEFINE_string("results", None, "Instead: write the ledgers of --columns side by side into "
                    "this Markdown file (docs/results.md).")
flags.DEFINE_list("columns", ["quick budget:results/quick", "paper budget:results/paper"],
                  "With --results: label:directory pairs, each directory holding a ledger.json.")


def main():
    if flags.FLAGS.results:
        print(_ledger.write_results(flags.FLAGS.results, flags.FLAGS.columns))
        return
    print(_ledger.write_ledger(flags.FLAGS.workdir))


if __name__ == "__main__":
    cli.run_main(main, needs_workdir=lambda: not flags.FLAGS.results)
