"""Declarative flags for the experiment entry points: presets, overrides, one-line errors.

Each experiment lists its `Option`s and presets. Flags are parsed from text by one set of rules,
so every bad value ends the same way: one line `error: --flag=value: what is wrong` on stderr,
exit status 2, and nothing written to the work directory (validation happens before it is touched).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from typing import Callable

from absl import app, flags

from mi_jax.validation import InputError

EXIT_BAD_INPUT = 2


@dataclasses.dataclass(frozen=True)
class Option:
    """A flag. kind: int | float | str | choice | bool | ints | floats | window | windows."""

    name: str
    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    min_len: int = 1
    max_len: int | None = None


def _fail(opt: Option, raw, why: str):
    raise InputError(f"--{opt.name}={raw!s}: {why}")


def _number(opt: Option, text: str, as_int: bool, raw):
    text = str(text).strip()
    try:
        value = int(text) if as_int else float(text)
    except ValueError:
        _fail(opt, raw, f"{text!r} is not {'an integer' if as_int else 'a number'}")
    if not as_int and not math.isfinite(value):
        _fail(opt, raw, "must be finite")
    if opt.low is not None and (value <= opt.low if opt.low_open else value < opt.low):
        _fail(opt, raw, f"must be {'>' if opt.low_open else '>='} {opt.low:g}")
    if opt.high is not None and value > opt.high:
        _fail(opt, raw, f"must be <= {opt.high:g}")
    return value


def parse(opt: Option, raw):
    """Parse and check one flag's value (text from the command line, or a preset's value)."""
    if opt.kind == "bool":
        if isinstance(raw, bool):
            return raw
        _fail(opt, raw, "must be true or false")
    if opt.kind == "windows" and isinstance(raw, (list, tuple)) and \
            all(isinstance(v, (list, tuple)) for v in raw):
        text = ",".join(":".join(str(b) for b in v) for v in raw)
    elif isinstance(raw, (list, tuple)):
        text = ",".join(str(v) for v in raw)
    else:
        text = str(raw)
    if opt.kind in ("int", "float"):
        return _number(opt, text, opt.kind == "int", raw)
    if opt.kind == "str":
        if not text.strip():
            _fail(opt, raw, "must not be empty")
        return text
    if opt.kind == "choice":
        if text not in opt.choices:
            _fail(opt, raw, f"must be one of {', '.join(opt.choices)}")
        return text
    if opt.kind == "windows":
        items = [w.strip() for w in text.split(",")]
        out = []
        for item in items:
            lo_hi = item.split(":")
            if len(lo_hi) != 2:
                _fail(opt, raw, "must be a comma-separated list of lo:hi windows")
            lo, hi = (_number(opt, v, True, raw) for v in lo_hi)
            if lo >= hi:
                _fail(opt, raw, f"window {item} must have lo < hi")
            out.append((lo, hi))
        return out
    if opt.kind in ("ints", "floats", "window"):
        parts = text.split(",")
        if any(not p.strip() for p in parts):
            _fail(opt, raw, "must be a comma-separated list with no empty items")
        values = [_number(opt, p, opt.kind != "floats", raw) for p in parts]
        if opt.kind == "window":
            if len(values) != 2:
                _fail(opt, raw, "must be two integers lo,hi")
            if values[0] >= values[1]:
                _fail(opt, raw, "must have lo < hi")
            return tuple(values)
        if len(values) < opt.min_len:
            _fail(opt, raw, f"must hold at least {opt.min_len} value(s)")
        if opt.max_len is not None and len(values) > opt.max_len:
            _fail(opt, raw, f"must hold at most {opt.max_len} value(s)")
        return values
    raise ValueError(f"unknown option kind {opt.kind}")


COMMON = (
    Option("preset", "choice", "Settings to start from: quick (CPU) or paper (official).",
           choices=("quick", "paper")),
    Option("seeds", "ints", "Comma-separated seeds; each is one model per configuration.", low=0,
           high=2**31 - 1),
    Option("steps", "int", "Training steps per model.", low=1),
    Option("batch_size", "int", "Training batch size.", low=1),
    Option("lr", "float", "Adam learning rate.", low=0, low_open=True),
    Option("lr_schedule", "choice", "constant (official) or cosine decay to 0 over --steps.",
           choices=("constant", "cosine")),
    Option("num_samples", "int", "Samples drawn per model.", low=1),
    Option("chunk_size", "int", "Samples per sampler call (bounds memory).", low=1),
    Option("hal_window", "window", "Trajectory-variance window lo,hi (timesteps [lo, hi); t=0 is "
           "the last reverse step).", low=0),
    Option("T", "int", "Diffusion steps.", low=2),
    Option("beta_start", "float", "First beta of the linear schedule.", low=0, low_open=True,
           high=0.999),
    Option("beta_end", "float", "Last beta of the linear schedule.", low=0, low_open=True,
           high=0.999),
    Option("width", "int", "Hidden width of the MLP.", low=2),
    Option("tied", "bool", "Tie the residual blocks' weights, as the official code does."),
    Option("k", "float", "In-support radius in mode standard deviations.", low=0, low_open=True),
    Option("train_chunk", "int", "Training steps per jitted call (progress granularity).", low=1),
    Option("focus_steps", "int", "Importance-weighted timesteps: draw a --focus_prob share of t "
           "from [0, focus_steps), weighting the loss so its expectation is unchanged (0: uniform "
           "t, official).", low=0),
    Option("focus_prob", "float", "Share of timesteps drawn from [0, --focus_steps).", low=0,
           high=1),
    Option("ema_decay", "float", "Sample with an exponential moving average of the weights "
           "(0: none, official).", low=0, high=0.9999),
    Option("curve_every", "int", "Every this many training steps, sample --curve_samples per model "
           "and record bridge/blur rates, mode width and AUROC (the convergence curve; 0: off; a "
           "multiple of --train_chunk).", low=0),
    Option("curve_samples", "int", "Samples per model at each convergence-curve point.", low=2),
    Option("epochs", "int", "Official budget: each model stops after epochs x (its training set "
           "// --batch_size) steps, so larger sets train longer (0: every model runs --steps).",
           low=0),
    Option("batch_order", "choice", "random (i.i.d. rows) or in_order (the official fixed-order, "
           "unshuffled batches).", choices=("random", "in_order")),
)


def check_training_and_sampling(cfg: dict, num_train: int, context: str = "") -> None:
    """Cross-flag checks shared by the image and recursion experiments: batch <= training set,
    strided sampling steps <= T, and the variance window inside the sampling steps."""
    where = f" ({context})" if context else ""
    if cfg["batch_size"] > num_train:
        raise InputError(f"--batch_size={cfg['batch_size']}: exceeds --num_train={num_train}{where}")
    if cfg["sampling_steps"] > cfg["T"]:
        raise InputError(f"--sampling_steps={cfg['sampling_steps']}: must be <= T={cfg['T']}"
                         f"{where}")
    lo, hi = cfg["hal_window"]
    if hi > cfg["sampling_steps"]:
        raise InputError(f"--hal_window={lo},{hi}: must lie inside the {cfg['sampling_steps']} "
                         f"sampling steps{where}")


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


def define(options, presets: dict | None = None, flag_values=None) -> None:
    """Declare absl flags for `options` (plus --workdir and --overwrite) in `flag_values`
    (default: absl's global FLAGS). Values default to the chosen preset's; with `presets`, each
    flag's --help line ends with what every preset sets."""
    fv = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string("workdir", None, "Output directory (config, metrics, arrays, figures).",
                        flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Reuse a workdir made with a different config.",
                      flag_values=fv)
    for opt in options:
        text = opt.help + ("" if opt.name == "preset" else preset_help(opt.name, presets))
        if opt.kind == "bool":
            flags.DEFINE_bool(opt.name, None, text, flag_values=fv)
        else:
            flags.DEFINE_string(opt.name, None, text, flag_values=fv)


def check_args(options, presets: dict, check: Callable[[dict], None], argv) -> str | None:
    """What an entry point would print for this command line before touching its work
    directory: the one-line error ('error: --flag=value: ...'), or None when the flags are good.
    In-process (fresh FlagValues), so flag validation is tested without starting a Python."""
    fv = flags.FlagValues()
    define(options, presets, fv)
    try:
        fv(list(argv))
    except flags.Error as e:
        return f"error: {str(e).splitlines()[0]}"
    try:
        check(resolve(options, presets, fv))
    except InputError as e:
        return f"error: {e}"
    return None


def resolve(options, presets: dict, argv_flags=None) -> dict:
    """The config: the chosen preset, overridden by every flag given on the command line."""
    fv = argv_flags or flags.FLAGS
    by_name = {o.name: o for o in options}
    preset_opt = by_name["preset"]
    preset = parse(preset_opt, fv["preset"].value or "quick")
    config = {"preset": preset}
    for name, value in presets[preset].items():
        config[name] = parse(by_name[name], value)
    for opt in options:
        if opt.name != "preset" and fv[opt.name].present:
            config[opt.name] = parse(opt, fv[opt.name].value)
    return config


def preset_config(options, presets: dict, preset: str) -> dict:
    """A preset's config with no command-line overrides (for drivers that run several experiments)."""
    by_name = {o.name: o for o in options}
    return {"preset": preset, **{n: parse(by_name[n], v) for n, v in presets[preset].items()}}


def _flags_parser(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def run_main(body: Callable[[], None]) -> None:
    """`app.run` with one-line errors for bad flags and bad values (exit status 2)."""

    def main(argv):
        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]!r}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        if not flags.FLAGS.workdir:
            print("error: --workdir is required", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        try:
            from mi_jax.sharding import maybe_initialize_distributed

            maybe_initialize_distributed()
            body()
        except InputError as e:  # flag errors name the flag (--x=...), others their argument
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

    # JAX reports at INFO that it found no TPU; absl would print that on every run.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    app.run(main, flags_parser=_flags_parser)


def experiment_main(options, presets: dict, check: Callable[[dict], None],
                    run: Callable[..., dict]) -> None:
    """The body of an experiment's absl main: resolve flags, check them, prepare the workdir, run.

    `check(cfg)` must raise InputError for any bad combination before the workdir is touched.
    """
    from mi_jax import workdir as wd

    cfg = resolve(options, presets)
    check(cfg)
    workdir = wd.prepare(flags.FLAGS.workdir, cfg, flags.FLAGS.overwrite)
    run(cfg, workdir)
    print(f"wrote {workdir} (headline numbers: {workdir / wd.METRICS_FILE} -> headline)")
