r"""Time to quality: the training compute a CPU recipe needs to reach the paper-budget models'
bridge rate and AUROC (issue 38, item 6). The study: mi_jax/studies/time_to_quality.py.

    python -m experiments.time_to_quality --reference=results/paper --curves=runs/convergence \
        --workdir=runs/time_to_quality

Writes `table.md`, `metrics.json` and `time_to_quality.png` into --workdir.
"""

from absl import flags

from mi_jax import cli
from mi_jax.studies import time_to_quality as ttq

flags.DEFINE_string("workdir", None, "Output directory.")
flags.DEFINE_string("reference", "results/paper", "Directory of the paper-budget units.")
flags.DEFINE_string("curves", None, "A finished experiments.convergence work directory.")
FLAGS = flags.FLAGS


def main():
    if not FLAGS.curves:
        from mi_jax.validation import InputError

        raise InputError("curves=<unset>: name a finished experiments.convergence directory")
    ttq.run(FLAGS.reference, FLAGS.curves, FLAGS.workdir)


if __name__ == "__main__":
    cli.run_main(main)
