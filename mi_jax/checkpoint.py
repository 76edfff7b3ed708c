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
    """Host copies (keys as their data); gathered across processes (see sharding.to_host)."""
    from mi_jax.sharding import to_host

    return to_host(jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree))


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


class ChunkStore:
    """Finished sampler chunks on disk (`chunk_000012.npz`, atomic), so an interrupted sampling run
    resumes at its first missing chunk. Chunk c is a pure function of (key, c), so a resumed run
    returns exactly what an uninterrupted one would.

    `signature` (a JSON-able dict: sizes, windows, sampler options) is written once as
    `signature.json`; a store made by a different sampling call is refused instead of mixed in,
    and one that differs only in its chunk size (`REDRAWN`) is emptied and refilled.
    """

    SIGNATURE = "signature.json"
    # Signature fields that only re-chunk the same call (an execution setting): a store made with
    # another value is emptied and refilled, not refused.
    REDRAWN = ("chunk_size",)

    def __init__(self, directory, signature: dict):
        from mi_jax.workdir import _jsonable, read_json, write_json

        self.directory = Path(directory)
        sig_path = self.directory / self.SIGNATURE
        signature = _jsonable(signature)
        if sig_path.exists():
            try:
                old = read_json(sig_path)
            except (OSError, ValueError) as e:
                raise InputError(f"resume_dir={str(self.directory)!r}: unreadable {self.SIGNATURE} "
                                 f"({e})") from None
            if old != signature:
                changed = sorted(k for k in set(old) | set(signature) if old.get(k) != signature.get(k))
                if not set(changed) <= set(self.REDRAWN):
                    raise InputError(f"resume_dir={str(self.directory)!r}: holds chunks of a "
                                     f"different sampling call (differs in {', '.join(changed)})")
                # The same call, chunked otherwise: its chunks are other random draws, which must
                # not be mixed with these. Start the store over.
                from mi_jax.sharding import is_writer

                if is_writer():
                    for stale in self.directory.glob("chunk_*.npz"):
                        stale.unlink()
                write_json(sig_path, signature)
        else:
            write_json(sig_path, signature)

    def path(self, chunk: int) -> Path:
        return self.directory / f"chunk_{chunk:06d}.npz"

    def load(self, chunk: int) -> dict | None:
        """The stored outputs of `chunk`, or None if it was never finished."""
        path = self.path(chunk)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                return {name: f[name] for name in f.files}
        except Exception as e:  # zipfile and numpy raise assorted types for bad files
            raise InputError(f"checkpoint={str(path)!r}: unreadable or corrupted sampler chunk "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None

    def save(self, chunk: int, outputs: dict) -> None:
        from mi_jax.workdir import write_npz

        write_npz(self.path(chunk), **outputs)
