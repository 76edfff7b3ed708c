r"""The 1D and 2D paper presets at the official training budget, one resumable model at a time.

    python -m experiments.paper_budget --workdir=results/paper                 # run / resume all
    python -m experiments.paper_budget --workdir=results/paper --units=gmm2d_square --status
    python -m experiments.paper_budget --workdir=results/paper --assemble=gmm1d,gmm2d
    python -m experiments.ledger --workdir=results/paper

Each unit is one (mixture, seed) model of `experiments.gmm1d --preset=paper` or
`experiments.gmm2d --preset=paper`, in `<workdir>/units/<name>`; an interrupted run resumes where
its last checkpoint left it. --assemble stacks a study's finished units into `<workdir>/<study>`
and samples and scores them there as one grid, exactly as the study's own `--preset=paper` run;
the ledger then reads `<workdir>`. The study: mi_jax/studies/paper_budget.py.
"""

from absl import flags

from mi_jax import cli
from mi_jax.studies import paper_budget as pb
from mi_jax.validation import InputError

flags.DEFINE_string("workdir", None, "Directory of the units (results/paper is the committed one).")
flags.DEFINE_string("units", None, "Comma-separated unit names or prefixes (default: all), in "
                    "the order of --status.")
flags.DEFINE_bool("status", False, "Print each unit's state and exit.")
flags.DEFINE_list("assemble", None, "Studies (gmm1d, gmm2d) whose finished units to stack into "
                  "<workdir>/<study>, sample and score (instead of training units).")
FLAGS = flags.FLAGS


def main():
    if FLAGS.assemble:
        for study in FLAGS.assemble:
            if study not in pb.STUDIES:
                raise InputError(f"assemble={','.join(FLAGS.assemble)}: {study!r} is not one of "
                                 f"{', '.join(pb.STUDIES)}")
        for study in FLAGS.assemble:
            pb.run_assembled(FLAGS.workdir, study)
        return
    chosen = pb.select(FLAGS.units, pb.units())
    if FLAGS.status:
        for u in chosen:
            print(f"{u.name:32s} {pb.status(FLAGS.workdir, u)}")
        return
    pb.run_units(FLAGS.workdir, chosen)


if __name__ == "__main__":
    cli.run_main(main)
