r"""The main job: every available paper figure at its CPU-sized (quick) preset, and one summary.

    python -m experiments.reproduce --workdir=runs/reproduce

Each experiment writes its own sub-directory; `summary.md` (figures embedded, the claims ledger
first) and `summary.json` (every headline number) are written last. An experiment whose
sub-directory already holds a finished result for the same config is not run again, so an
interrupted job resumes. The job itself: `mi_jax.studies.runner.main_job`.
"""

from absl import flags

from mi_jax import cli
from mi_jax.studies import registry, runner

flags.DEFINE_enum("preset", "quick", ["quick", "paper"], "Preset for every experiment.")
flags.DEFINE_string("only", None, "Comma-separated subset of: " + ", ".join(registry.MAIN_JOB))
flags.DEFINE_string("workdir", None, "Output directory (one sub-directory per experiment).")
flags.DEFINE_bool("overwrite", False, "Rerun experiments whose directory holds another config.")
FLAGS = flags.FLAGS


def main():
    names = runner.selected(FLAGS.only, registry.MAIN_JOB)
    print(runner.main_job(FLAGS.workdir, FLAGS.preset, names, FLAGS.overwrite))


if __name__ == "__main__":
    cli.run_main(main)
