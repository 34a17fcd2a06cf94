"""Small I/O helpers shared by every module: atomic writes and safe checkpoint loading."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", **kw) -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync it and ``os.replace`` it into place.

    An exception leaves the previous ``path`` untouched and no partial file behind. A process
    killed while writing cannot remove its temporary file (``.NAME.HOST-PID.*.tmp``); the next write
    of the same ``path`` removes those whose writer, on this host, is no longer running.
    """
    if "r" in mode or "a" in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = _temp_prefix(path)
    _remove_dead_writers_temps(path, prefix)
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{socket.gethostname()}-"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _remove_dead_writers_temps(path: Path, prefix: str) -> None:
    """Remove temporaries of ``path`` left by killed writers on this host (POSIX only: elsewhere a
    process cannot be probed without side effects)."""
    if os.name != "posix":
        return
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_running(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def save_torch(obj: Any, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def load_torch(path: PathLike, map_location="cpu", mmap: bool = False) -> Any:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from pickles).

    ``mmap=True`` maps the tensors instead of reading them, for a caller that only looks at the
    plain entries (a run's step or config) of what may be a multi-gigabyte file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # corrupted or hostile file
        raise ValueError(f"cannot load checkpoint {path}: {e}") from e


def read_text(path: PathLike, encoding: str = "utf-8") -> str:
    """The text of ``path``; bytes that are not ``encoding`` give a ValueError naming the file and offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a {encoding} text file (byte 0x{data[e.start]:02x} at offset {e.start} "
                         f"cannot be decoded)") from None
