"""Work directories: atomic files, the config a directory belongs to, and provenance.

Every file is written to a temporary name in the same directory and renamed into place, so a
killed run never leaves a half-written file under a final name. `metrics.json` is written last:
a directory without it holds no finished result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mi_jax.validation import InputError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SITTINGS_FILE = "sittings.json"  # wall time of every sitting that ran a study in the directory


def _atomic_write(path: Path, data: bytes) -> None:
    from mi_jax.sharding import is_writer

    if not is_writer():  # several processes compute the same result; one writes it
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any):
    if dataclasses.is_dataclass(obj) and hasattr(obj, "to_dict"):  # a study config
        return _jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if np.isfinite(f) else None  # JSON has no NaN/inf; null says "undefined"
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path, obj) -> None:
    _atomic_write(Path(path), (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def write_text(path, text: str) -> None:
    _atomic_write(Path(path), text.encode())


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_npz(path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    _atomic_write(Path(path), buf.getvalue())


def save_figure(fig, path, dpi: int = 110) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    _atomic_write(Path(path), buf.getvalue())


# config.json, version 2: {"config_version": 2, "protocol": {...}, "execution": {...}}, every
# field written (null for an unset optional one). Version 1 (no version key): one flat dict,
# unset optional fields left out. Both are read; a directory belongs to a config when their
# protocols agree with defaults filled in (the execution settings may differ: a run resumes and
# a finished result is reused across chunk sizes).
CONFIG_VERSION = 2


def _parts(config) -> tuple[dict, dict]:
    """(protocol, execution) of a config object (see `mi_jax.config`) or a plain dict."""
    if hasattr(config, "protocol") and hasattr(config, "execution"):
        return _jsonable(config.protocol()), _jsonable(config.execution())
    return _jsonable(config), {}


def config_record(config) -> dict:
    """What config.json holds for `config` (version 2)."""
    protocol, execution = _parts(config)
    return {"config_version": CONFIG_VERSION, "protocol": protocol, "execution": execution}


def read_config(path) -> dict:
    """The config a directory's (or a file's) config.json holds, flat (protocol and execution
    settings in one dict), whatever its version."""
    path = Path(path)
    saved = read_json(path / CONFIG_FILE if path.is_dir() else path)
    if not isinstance(saved, dict):
        raise InputError(f"{path}: {CONFIG_FILE} is not a JSON object")
    version = saved.get("config_version", 1)
    if version == 1:
        return saved
    if version != CONFIG_VERSION:
        raise InputError(f"{path}: {CONFIG_FILE} of version {version!r}, this mi_jax reads 1 and "
                         f"{CONFIG_VERSION} (written by a newer mi_jax?)")
    if not all(isinstance(saved.get(part), dict) for part in ("protocol", "execution")):
        raise InputError(f"{path}: {CONFIG_FILE} of version {version} needs 'protocol' and "
                         "'execution' objects")
    return {**saved["protocol"], **saved["execution"]}


def protocol_differences(saved: dict, config) -> list:
    """The protocol fields in which a saved (flat) config differs from `config`, with defaults
    filled in on both sides (a field added since the directory was written, left at its
    default, is no difference; neither is an execution setting)."""
    new, _ = _parts(config)
    rebuild = getattr(type(config), "from_saved", None)
    if rebuild is None:
        old = _jsonable(saved)
    else:
        try:
            old, _ = _parts(rebuild(saved))
        except (TypeError, KeyError, ValueError) as e:  # InputError is a ValueError
            return [f"everything: not a {type(config).__name__} "
                    f"({type(e).__name__}: {str(e).splitlines()[0][:100]})"]
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def prepare(workdir, config, overwrite: bool = False) -> Path:
    """Create `workdir` for `config`; refuse one made with a different protocol unless
    `overwrite` (execution settings may differ). Writes config.json (version 2).

    With `overwrite`, finished results of the old config are removed first, so nothing stale can
    pass for a result of the new one. Returns the directory as a Path.
    """
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise InputError(f"--workdir={str(workdir)!r}: exists and is not a directory")
    cfg_path = workdir / CONFIG_FILE
    if cfg_path.exists():
        try:
            changed = protocol_differences(read_config(cfg_path), config)
        except (OSError, ValueError) as e:
            raise InputError(f"--workdir={str(workdir)!r}: unreadable {CONFIG_FILE} ({e})") from None
        if changed:
            if not overwrite:
                raise InputError(f"--workdir={str(workdir)!r}: holds results of a different config "
                                 f"(differs in {', '.join(changed[:5])}); pass --overwrite or use "
                                 "another workdir")
            for stale in workdir.iterdir():
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(cfg_path, config_record(config))
    return workdir


@contextlib.contextmanager
def prepared(workdir, config, overwrite: bool = False):
    """`prepare`, and if the body then refuses its input (InputError) before writing anything
    but the config, remove what `prepare` made: a refused run leaves no `config.json` behind
    to refuse the corrected rerun as "a different config"."""
    workdir = Path(workdir)
    existed = workdir.exists()
    had_config = (workdir / CONFIG_FILE).exists()
    out = prepare(workdir, config, overwrite)
    try:
        yield out
    except InputError:
        if not had_config and [p.name for p in workdir.iterdir()] == [CONFIG_FILE]:
            (workdir / CONFIG_FILE).unlink()
            if not existed:
                workdir.rmdir()
        raise


def finished(workdir, config) -> bool:
    """True if `workdir` holds a finished result (metrics written) of `config`'s protocol."""
    workdir = Path(workdir)
    try:
        return ((workdir / METRICS_FILE).exists()
                and not protocol_differences(read_config(workdir), config))
    except (OSError, ValueError):  # InputError is a ValueError
        return False


def record_sitting(workdir, seconds: float, finished: bool) -> None:
    """Append one sitting's wall time to `workdir`'s sittings.json: a study interrupted and
    resumed later is timed over all its sittings (`wall_seconds`)."""
    import datetime

    path = Path(workdir) / SITTINGS_FILE
    past = read_json(path) if path.exists() else []
    past.append({"seconds": round(float(seconds), 3), "finished": bool(finished),
                 "ended": datetime.datetime.now(datetime.timezone.utc).isoformat(
                     timespec="seconds"), "cpus": os.cpu_count()})
    write_json(path, past)


def wall_seconds(workdir) -> tuple[float, int] | None:
    """(total wall seconds, number of sittings) recorded in `workdir`, or None if none is."""
    path = Path(workdir) / SITTINGS_FILE
    if not path.exists():
        return None
    sittings = read_json(path)
    return float(sum(s["seconds"] for s in sittings)), len(sittings)


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, cwd=Path(__file__).resolve().parent)
        commit = out.stdout.strip()
        if out.returncode != 0 or not commit:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               cwd=Path(__file__).resolve().parent).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """Versions of the numerical stack, the backend, and the git commit."""
    import flax
    import jax
    import jaxlib
    import optax

    return {
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
        "optax": optax.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(),
        "git_commit": git_commit(),
    }


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far in MiB (Linux VmHWM), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None
