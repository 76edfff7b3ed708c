"""Input checks shared by the library and the experiment entry points.

Every check raises `InputError` with a one-line message that names the argument and its value,
so a command-line tool can print it as is and exit non-zero.
"""

from __future__ import annotations

import math

import jax


class InputError(ValueError):
    """A bad argument or flag; the message is one line: `name=value: what is wrong`."""


def _short(value, limit: int = 80) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check(condition, name: str, value, requirement: str) -> None:
    """Raise `InputError('name=value: requirement')` unless `condition` holds."""
    if not condition:
        raise InputError(f"{name}={_short(value)}: {requirement}")


def is_concrete(x) -> bool:
    """True when `x` is not a tracer (so it can be inspected on the host)."""
    return not isinstance(x, jax.core.Tracer)


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer within [low, high] (either bound optional); bools are refused."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok and hasattr(value, "__index__") and not isinstance(value, bool):
        try:
            value = value.__index__()
            ok = True
        except TypeError:
            ok = False
    check(ok, name, value, "must be an integer")
    if low is not None:
        check(value >= low, name, value, f"must be >= {low}")
    if high is not None:
        check(value <= high, name, value, f"must be <= {high}")
    return int(value)


def check_float(value, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """A finite float within the bounds (`low_open` makes the lower bound strict)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        check(False, name, value, "must be a number")
    check(not isinstance(value, bool), name, value, "must be a number")
    check(math.isfinite(f), name, value, "must be finite")
    if low is not None:
        if low_open:
            check(f > low, name, value, f"must be > {low}")
        else:
            check(f >= low, name, value, f"must be >= {low}")
    if high is not None:
        check(f <= high, name, value, f"must be <= {high}")
    return f


def check_window(window, num_steps: int, name: str = "window") -> tuple[int, int]:
    """A half-open timestep window [lo, hi) inside [0, num_steps), lo < hi."""
    try:
        lo, hi = window
    except (TypeError, ValueError):
        check(False, name, window, "must be a pair (lo, hi)")
    lo = check_int(lo, f"{name}[0]")
    hi = check_int(hi, f"{name}[1]")
    check(0 <= lo < hi <= num_steps, name, (lo, hi), f"must satisfy 0 <= lo < hi <= T={num_steps}")
    return lo, hi


def check_training_and_sampling(batch_size: int, num_train: int, sampling_steps: int, T: int,
                                hal_window, context: str = "") -> None:
    """Cross-field checks shared by the image and recursion studies: batch <= training set,
    strided sampling steps <= T, and the variance window inside the sampling steps."""
    where = f" ({context})" if context else ""
    check(batch_size <= num_train, "batch_size", batch_size, f"exceeds num_train={num_train}{where}")
    check(sampling_steps <= T, "sampling_steps", sampling_steps, f"must be <= T={T}{where}")
    lo, hi = hal_window
    if hi > sampling_steps:
        raise InputError(f"hal_window={lo},{hi}: must lie inside the {sampling_steps} sampling "
                         f"steps{where}")
