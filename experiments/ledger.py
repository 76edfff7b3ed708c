r"""The claims ledger of any directory of finished experiments (a main job, a GPU run).

    python -m experiments.ledger --workdir=runs/reproduce

Reads `<workdir>/<experiment>/metrics.json` and `config.json` for every experiment present,
prints the ledger (Markdown) and writes `ledger.md` and `ledger.json` into the directory.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from mi_jax import cli, ledger
from mi_jax import workdir as wd


def main():
    root = Path(flags.FLAGS.workdir)
    if not root.is_dir():
        raise cli.InputError(f"--workdir={root}: is not a directory")
    rows = ledger.ledger_from_workdir(root)
    if all(r["verdict"] == ledger.NOT_MEASURED for r in rows):
        raise cli.InputError(f"--workdir={root}: holds no finished experiment ("
                             + ", ".join(ledger.EXPERIMENTS) + " sub-directories)")
    text = ledger.ledger_markdown(rows)
    wd.write_json(root / "ledger.json", {"ledger": rows, "rule": ledger.RULE})
    wd.write_text(root / "ledger.md", text)
    print(text)


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "Directory holding finished experiments.")
    flags.DEFINE_bool("overwrite", False, "Unused (ledger files are always rewritten).")
    cli.run_main(main)
