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


def check_key(key, name: str = "key", stacked: bool = False):
    """One typed PRNG key (`jax.random.key(seed)`), or with `stacked` a (M,) array of them;
    refuses a Python int, raw uint32 key data (`jax.random.PRNGKey`) and a key array of the
    wrong rank, each of which would otherwise fail deep inside JAX or fold silently."""
    is_key = isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not is_key:
        hint = ("raw uint32 key data: wrap it with jax.random.wrap_key_data"
                if hasattr(key, "dtype") else f"got {type(key).__name__}")
        check(False, name, getattr(key, "shape", key),
              f"must be a typed PRNG key from jax.random.key(seed) ({hint})")
    want = 1 if stacked else 0
    check(key.ndim == want, name, f"key array of shape {tuple(key.shape)}",
          "must be a (M,) array of keys, one per model" if stacked else
          "must be one key (shape ()); split it, or vmap over a stack of keys")
    return key


def check_timesteps(t, num_steps: int, name: str = "t") -> None:
    """Integer timesteps inside [0, num_steps), checked when concrete (a traced t is the
    caller's to keep in range: JAX's gather would clamp it silently)."""
    if not is_concrete(t) or (isinstance(t, jax.Array) and not t.is_fully_addressable):
        return
    import numpy as np

    arr = np.asarray(t)
    check(np.issubdtype(arr.dtype, np.integer), name, arr.dtype, "must be integer timesteps")
    if arr.size:
        check(bool(arr.min() >= 0 and arr.max() < num_steps), name,
              (int(arr.min()), int(arr.max())), f"must lie in [0, T={num_steps})")


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
