"""Typed experiment configs: options as a schema, one frozen dataclass per study, presets as data.

A study declares its `Option`s (name, kind, help, bounds) once; `config_class` turns them into a
frozen, hashable dataclass whose fields are the options, and `from_values` builds one from a
preset plus overrides, checking every value by the same rules. The command line (`mi_jax.cli`)
only wires these options to absl flags, so a study run from Python and from the shell get the
same config, the same checks and the same `config.json`.

    >>> from mi_jax.studies import gmm1d
    >>> cfg = config.preset(gmm1d.Config, gmm1d.PRESETS, "quick", steps=100)
    >>> cfg.steps, cfg.modes
    (100, (1.0, 2.0, 3.0))

Errors name the field (`steps=0: must be >= 1`); the command line shows them as `--steps=0: ...`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from mi_jax.validation import InputError



class _Required:
    def __repr__(self):
        return "<required>"


from mi_jax.nets import COMPUTE_DTYPES  # the networks' matmul precisions

_REQUIRED = _Required()  # Option.default when every preset must set the field


@dataclasses.dataclass(frozen=True)
class Option:
    """One config field. kind: int | float | str | choice | bool | ints | floats | window | windows.

    `default` fills the field when no preset sets it (None: an optional field whose unset state
    means something of its own, e.g. "the dataset preset's value"); without one, every preset must
    set it. `execution`: the field says how the work is split (chunk sizes: memory, progress,
    which random draws a chunk gets), not what is measured; a work directory is reused and
    resumed across execution settings (`mi_jax.workdir`), and config.json keeps them apart.
    """

    name: str
    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    min_len: int = 1
    max_len: int | None = None
    default: Any = _REQUIRED
    execution: bool = False


_TYPES = {"int": int, "float": float, "str": str, "choice": str, "bool": bool,
          "ints": tuple[int, ...], "floats": tuple[float, ...], "window": tuple[int, int],
          "windows": tuple[tuple[int, int], ...]}


def _fail(opt: Option, raw, why: str):
    raise InputError(f"{opt.name}={raw!s}: {why}")


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
    """Parse and check one value: text from the command line, or a preset's / caller's value.

    Sequences come back as tuples, so configs are hashable. Raises InputError
    ('name=value: what is wrong', one line).
    """
    if raw is None and opt.default is None:
        return None
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
        out = []
        for item in (w.strip() for w in text.split(",")):
            lo_hi = item.split(":")
            if len(lo_hi) != 2:
                _fail(opt, raw, "must be a comma-separated list of lo:hi windows")
            lo, hi = (_number(opt, v, True, raw) for v in lo_hi)
            if lo >= hi:
                _fail(opt, raw, f"window {item} must have lo < hi")
            out.append((lo, hi))
        return tuple(out)
    if opt.kind in ("ints", "floats", "window"):
        parts = text.split(",")
        if any(not p.strip() for p in parts):
            _fail(opt, raw, "must be a comma-separated list with no empty items")
        values = tuple(_number(opt, p, opt.kind != "floats", raw) for p in parts)
        if opt.kind == "window":
            if len(values) != 2:
                _fail(opt, raw, "must be two integers lo,hi")
            if values[0] >= values[1]:
                _fail(opt, raw, "must have lo < hi")
            return values
        if len(values) < opt.min_len:
            _fail(opt, raw, f"must hold at least {opt.min_len} value(s)")
        if opt.max_len is not None and len(values) > opt.max_len:
            _fail(opt, raw, f"must hold at most {opt.max_len} value(s)")
        return values
    raise ValueError(f"unknown option kind {opt.kind}")


def options_of(cls) -> tuple:
    """The `Option`s of a config class, in field order."""
    return tuple(f.metadata["option"] for f in dataclasses.fields(cls))


def _jsonable(value):
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


def _to_dict(self) -> dict:
    """Every field, JSON-able (lists for sequences, None for an unset optional field)."""
    return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _part(self, execution: bool) -> dict:
    return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)
            if f.metadata["option"].execution == execution}


def _protocol(self) -> dict:
    """The fields that define what is measured (all but the execution settings)."""
    return _part(self, False)


def _execution(self) -> dict:
    """The execution settings (Option.execution): how the work is split, not what it measures."""
    return _part(self, True)


def _from_saved(cls, saved: Mapping):
    """A saved config (config.json, flat) as an instance, defaults filled in for fields it lacks."""
    return from_values(cls, saved)


def _replace(self, **changes):
    """A copy with `changes`, checked like any other value."""
    return from_values(type(self), {**_to_dict(self), **changes})


def config_class(name: str, options: Sequence[Option], doc: str = "") -> type:
    """A frozen, keyword-only dataclass with one typed field per option (see the module doc).

    Instances have `to_dict()` (every field), `protocol()` / `execution()` (the two parts that
    config.json keeps apart) and `replace(**changes)` (checked).
    """
    names = [o.name for o in options]
    if len(set(names)) != len(names):
        twice = sorted(n for n in names if names.count(n) > 1)
        raise ValueError(f"{name}: duplicate options {twice}")
    fields = []
    for opt in options:
        kwargs = {"metadata": {"option": opt}}
        if opt.default is not _REQUIRED:
            kwargs["default"] = opt.default
        typ = _TYPES[opt.kind] if opt.default is not None else _TYPES[opt.kind] | None
        fields.append((opt.name, typ, dataclasses.field(**kwargs)))
    cls = dataclasses.make_dataclass(name, fields, frozen=True, kw_only=True,
                                     namespace={"to_dict": _to_dict, "replace": _replace,
                                                "protocol": _protocol, "execution": _execution,
                                                "from_saved": classmethod(_from_saved)})
    cls.__doc__ = doc or f"Config of one study ({', '.join(names)})."
    return cls


def from_values(cls, values: Mapping, ignore_unknown: bool = False):
    """An instance of config class `cls` from raw values (parsed and checked); fields with a
    default may be absent. With `ignore_unknown`, keys that are not fields are skipped (reading
    another study's saved config)."""
    opts = {o.name: o for o in options_of(cls)}
    unknown = sorted(set(values) - set(opts))
    if unknown and not ignore_unknown:
        raise InputError(f"{unknown[0]}={values[unknown[0]]!s}: not an option of {cls.__name__} "
                         f"(have {', '.join(opts)})")
    parsed = {}
    for name, opt in opts.items():
        if name in values:
            parsed[name] = parse(opt, values[name])
        elif opt.default is _REQUIRED:
            raise InputError(f"{name}=<unset>: {cls.__name__} needs a value (no preset sets it)")
    return cls(**parsed)


def preset(cls, presets: Mapping[str, Mapping], name: str = "quick", **overrides):
    """The config of preset `name`, with `overrides` (checked like flags)."""
    if name not in presets:
        raise InputError(f"preset={name}: must be one of {', '.join(presets)}")
    values = {**presets[name], **overrides}
    if "preset" in {o.name for o in options_of(cls)}:
        values["preset"] = name
    return from_values(cls, values)


def pick(options: Sequence[Option], *names: str) -> tuple:
    """The options called `names` (in that order), to share a definition between studies."""
    by_name = {o.name: o for o in options}
    return tuple(by_name[n] for n in names)


# Execution settings shared by every study that samples or trains in chunks.
CHUNK_SIZE = Option("chunk_size", "int", "Samples per sampler call (bounds memory; an execution "
                    "setting: it changes which random draws each chunk gets, not their "
                    "distribution).", low=1, execution=True)
TRAIN_CHUNK = Option("train_chunk", "int", "Training steps per jitted call (progress and "
                     "checkpoint granularity; an execution setting: the result is the same).",
                     low=1, execution=True)

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
    CHUNK_SIZE,
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
    TRAIN_CHUNK,
    # The recipe options below came after the first work directories were written: their
    # defaults are the earlier (official) behaviour, so those directories still load.
    Option("focus_steps", "int", "Importance-weighted timesteps: draw a --focus_prob share of t "
           "from [0, focus_steps), weighting the loss so its expectation is unchanged (0: uniform "
           "t, official).", low=0, default=0),
    Option("focus_prob", "float", "Share of timesteps drawn from [0, --focus_steps).", low=0,
           high=1, default=0.5),
    Option("ema_decay", "float", "Sample with an exponential moving average of the weights "
           "(0: none, official).", low=0, high=0.9999, default=0.0),
    Option("curve_every", "int", "Every this many training steps, sample --curve_samples per model "
           "and record bridge/blur rates, mode width and AUROC (the convergence curve; 0: off; a "
           "multiple of --train_chunk).", low=0, default=0),
    Option("curve_samples", "int", "Samples per model at each convergence-curve point.", low=2,
           default=1000),
    Option("epochs", "int", "Official budget: each model stops after epochs x (its training set "
           "// --batch_size) steps, so larger sets train longer (0: every model runs --steps).",
           low=0, default=0),
    Option("batch_order", "choice", "random (i.i.d. rows) or in_order (the official fixed-order, "
           "unshuffled batches).", choices=("random", "in_order"), default="random"),
    Option("jacobian_weight", "float", "Weight of the second-order (Jacobian) denoising term added "
           "to the loss: the learned eps is fitted to jump between modes as the exact one does "
           "(0: the plain objective, official).", low=0, default=0.0),
    Option("jacobian_t_max", "int", "Apply the Jacobian term only at t < this (0: at every t).",
           low=0, default=0),
    Option("between_weight", "float", "Weight of the between-points term added to the loss: x0_hat "
           "at noised points between two training points regressed on the minibatch's "
           "closed-form denoiser (0: the plain objective, official).", low=0, default=0.0),
    Option("between_t_max", "int", "The between-points term's timesteps: t < this.", low=1,
           default=50),
    Option("input_bias", "bool", "Give the MLP's input layer a bias (the official one has none, "
           "which blinds it to |x| near x = 0: see mode_mass).", default=False),
    Option("compute_dtype", "choice", "Network matmul precision. bfloat16 = "
           "mixed precision: bf16 matmul operands, float32 accumulation, params and norms (MLP: "
           "the residual blocks' matmuls, opt-in for CPUs with AMX; UNet: convs and dense "
           "layers, for GPUs).", choices=COMPUTE_DTYPES, default="float32"),
)

# The mixture studies' training recipe: what a finished gmm1d/gmm2d directory needs to rebuild
# its models (`RecipeConfig.from_values(saved, ignore_unknown=True)`).
RECIPE = pick(COMMON, "seeds", "steps", "batch_size", "lr", "lr_schedule", "T", "beta_start",
              "beta_end", "width", "tied", "focus_steps", "focus_prob", "ema_decay", "epochs",
              "batch_order", "jacobian_weight", "jacobian_t_max", "between_weight",
              "between_t_max", "input_bias", "compute_dtype")
RecipeConfig = config_class("RecipeConfig", RECIPE, "The training recipe of a mixture study.")
