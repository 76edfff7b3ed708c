"""Checkpoints of pytrees (training states) in flax's msgpack format: data only, no code on load.

Typed PRNG keys are stored as their raw key data and re-wrapped on load. Loading restores into the
structure of a `target` pytree (a freshly initialised state), so a file from another model or a
different sweep fails with a one-line error naming the file instead of loading silently.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from flax import serialization

from mi_jax.validation import InputError
from mi_jax.workdir import _atomic_write


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_storable(tree):
    return jax.tree.map(lambda x: np.asarray(jax.random.key_data(x) if _is_key(x) else x), tree)


def save(path, tree) -> None:
    """Write `tree` atomically to `path`."""
    data = serialization.msgpack_serialize(serialization.to_state_dict(_to_storable(tree)))
    _atomic_write(Path(path), data)


def load(path, target):
    """Read `path` into the structure, shapes and dtypes of `target`; InputError if it does not fit."""
    path = Path(path)
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
        stored = serialization.from_state_dict(_to_storable(target), raw)
    except Exception as e:  # msgpack and flax raise assorted types for bad files
        raise InputError(f"checkpoint={str(path)!r}: unreadable, corrupted or not a checkpoint of "
                         f"this model ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    leaves_t, tree_t = jax.tree.flatten(target)
    leaves_s = jax.tree.leaves(stored)
    if len(leaves_s) != len(leaves_t):
        raise InputError(f"checkpoint={str(path)!r}: holds {len(leaves_s)} arrays, expected "
                         f"{len(leaves_t)}")
    restored = []
    for t, s in zip(leaves_t, leaves_s):
        s = np.asarray(s)
        if _is_key(t):
            if s.shape != jax.random.key_data(t).shape:
                raise InputError(f"checkpoint={str(path)!r}: key of shape {s.shape}, expected "
                                 f"{jax.random.key_data(t).shape}")
            restored.append(jax.random.wrap_key_data(s, impl=jax.random.key_impl(t)))
            continue
        if s.shape != t.shape or s.dtype != t.dtype:
            raise InputError(f"checkpoint={str(path)!r}: array {s.shape} {s.dtype} where the model "
                             f"has {t.shape} {t.dtype}")
        restored.append(jax.numpy.asarray(s))
    return jax.tree.unflatten(tree_t, restored)
