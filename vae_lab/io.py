"""Small file helpers: atomic writes (write to a temp file, then rename) so a crash never truncates a good file."""

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vae_lab.errors import VaeLabError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(VaeLabError):
    """The device (or quota) ran out of space while a file was written; the previous file is untouched."""


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode(path: Path) -> int:
    """The replaced file's permissions, or what open() would give a new file under the current umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temp file beside `path`, then rename it over `path`: readers see old or new, never half.

    Out of disk space (or quota): the temp file is removed, `path` keeps its previous content, and a
    DiskFullError says so in one line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _mode(path))  # mkstemp makes 0600 files; keep the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            kept = f"the previous {path.name} is intact" if path.exists() else f"nothing was written to {path}"
            raise DiskFullError(f"no space left on the device while writing {path}: {kept}; free some space") from err
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: readers see the old file or the new one, never a partial one."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON with sorted keys and an indent, written atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` streamed into a temp file and renamed over `path` (no second copy in memory)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
