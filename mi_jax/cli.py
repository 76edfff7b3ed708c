"""absl wiring for the studies: typed flags from a config class, presets, one-line errors.

Each study (`mi_jax.studies.*`) declares its config class and presets (`mi_jax.config`); this
module turns the fields into typed absl flags, so every bad value ends the same way: one line
`error: --flag=value: what is wrong` on stderr, exit status 2, and nothing written to the work
directory (the config is checked before it is touched).
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

from absl import app, flags

from mi_jax import config
from mi_jax.validation import InputError

EXIT_BAD_INPUT = 2


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(":".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
                        for v in value)
    return str(value)


def preset_help(name: str, presets: dict | None) -> str:
    """' [quick: 6000; paper: 20000]': what each preset sets this flag to (for --help)."""
    if not presets:
        return ""
    parts = [f"{p}: {_shown(values[name])}" for p, values in presets.items() if name in values]
    return f" [{'; '.join(parts)}]" if parts else " [no preset sets it]"


class _OptionParser(flags.ArgumentParser):
    """absl parser for one `config.Option`: the flag is typed and checked when absl parses it."""

    def __init__(self, opt: config.Option):
        self.opt = opt

    def parse(self, argument):
        try:
            return config.parse(self.opt, argument)
        except InputError as e:  # absl prefixes 'flag --name=value: '
            raise ValueError(str(e).split(": ", 1)[-1]) from None

    def flag_type(self):
        return self.opt.kind


def define(config_cls, presets: dict | None = None, flag_values=None,
           preset_notes: dict | None = None) -> None:
    """Declare one typed absl flag per field of `config_cls` (plus --workdir and --overwrite) in
    `flag_values` (default: absl's global FLAGS). Unset flags take the chosen preset's value;
    with `presets`, each flag's --help line ends with what every preset sets; `preset_notes`
    ({preset: text}, a study's PRESET_NOTES) is added to --preset's help."""
    fv = flags.FLAGS if flag_values is None else flag_values
    # Registered as the running script's flags, so its --help lists them.
    module = sys.argv[0] if flag_values is None else None
    flags.DEFINE_string("workdir", None, "Output directory (config, metrics, arrays, figures).",
                        flag_values=fv, module_name=module)
    flags.DEFINE_bool("overwrite", False, "Reuse a workdir made with a different config.",
                      flag_values=fv, module_name=module)
    for opt in config.options_of(config_cls):
        text = opt.help + ("" if opt.name == "preset" else preset_help(opt.name, presets))
        if opt.name == "preset" and preset_notes:
            text += "".join(f" {name}: {note}" for name, note in preset_notes.items())
        unset_by_some = presets and any(opt.name not in p for p in presets.values())
        if opt.default not in (None, config._REQUIRED) and unset_by_some:
            text += f" (otherwise {_shown(opt.default)})"
        if opt.kind == "bool":
            flags.DEFINE_bool(opt.name, None, text, flag_values=fv, module_name=module)
        else:
            flags.DEFINE(_OptionParser(opt), opt.name, None, text, flag_values=fv,
                         module_name=module)


def resolve(config_cls, presets: dict, flag_values=None):
    """The config: the chosen preset, overridden by every flag given on the command line."""
    fv = flag_values or flags.FLAGS
    names = [o.name for o in config.options_of(config_cls)]
    given = {n: fv[n].value for n in names if n != "preset" and fv[n].present}
    return config.preset(config_cls, presets, fv["preset"].value or "quick", **given)


def flag_error(e: Exception, flag_values=None) -> str:
    """One line for a bad value: config errors name the field ('steps=0: ...'), shown as the
    flag ('--steps=0: ...')."""
    fv = flag_values or flags.FLAGS
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    name = text.split("=", 1)[0]
    if name.isidentifier() and name in fv:
        return f"--{text}"
    return text


def _absl_error(e: flags.Error) -> str:
    text = str(e).splitlines()[0]
    return text[len("flag "):] if text.startswith("flag --") else text


def check_args(study, argv) -> str | None:
    """What `experiments.<study>` would print for this command line before touching its work
    directory: the one-line error ('error: --flag=value: ...'), or None when the flags are good.
    In-process (fresh FlagValues), so flag validation is tested without starting a Python."""
    fv = flags.FlagValues()
    define(study.Config, study.PRESETS, fv)
    try:
        fv(list(argv))
    except flags.Error as e:
        return f"error: {_absl_error(e)}"
    try:
        study.validate(resolve(study.Config, study.PRESETS, fv))
    except InputError as e:
        return f"error: {flag_error(e, fv)}"
    return None


def _flags_parser(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {_absl_error(e)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def run_main(body: Callable[[], None], needs_workdir: Callable[[], bool] = lambda: True) -> None:
    """`app.run` with one-line errors for bad flags and bad values (exit status 2).
    needs_workdir: whether this command line needs --workdir (asked after parsing)."""

    def main(argv):
        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]!r}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        if not flags.FLAGS.workdir and needs_workdir():
            print("error: --workdir is required", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        try:
            from mi_jax.sharding import maybe_initialize_distributed

            maybe_initialize_distributed()
            body()
        except InputError as e:
            print(f"error: {flag_error(e)}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    # JAX reports at INFO that it found no TPU; absl would print that on every run.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    app.run(main, flags_parser=_flags_parser)


def run_study(study, workdir, overwrite: bool = False, cfg=None) -> dict:
    """Check the config, prepare the work directory, run the study (the body of an entry point).

    `study` is a module of `mi_jax.studies` (Config, PRESETS, validate, run); `validate` raises
    InputError for any bad combination before the work directory is touched.
    """
    from mi_jax import workdir as wd

    cfg = resolve(study.Config, study.PRESETS) if cfg is None else cfg
    study.validate(cfg)
    with wd.prepared(workdir, cfg, overwrite) as workdir:
        metrics = study.run(cfg, workdir)
    from mi_jax.sharding import is_writer

    if is_writer():
        print(f"wrote {workdir} (headline numbers: {workdir / wd.METRICS_FILE} -> headline)")
    return metrics


def main(study) -> None:
    """The whole entry point of `experiments.<study>`: typed flags from the study's config class
    and presets, then `run_study`."""
    define(study.Config, study.PRESETS, preset_notes=getattr(study, "PRESET_NOTES", None))
    run_main(lambda: run_study(study, flags.FLAGS.workdir, flags.FLAGS.overwrite))
