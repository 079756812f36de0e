"""Small file helpers: atomic writes (write to a temp file, then rename) so a crash never truncates a good file."""

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vae_lab.errors import ConfigError, VaeLabError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # device or quota full; file over the size limit (ulimit -f)


class DiskFullError(VaeLabError):
    """The device (or quota) ran out of space while a file was written; the previous file is untouched."""


def no_space_error(err: BaseException | None) -> OSError | None:
    """The out-of-space OSError (ENOSPC, EDQUOT, EFBIG) in `err` or its causes/contexts, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            return err
        err = err.__cause__ or err.__context__
    return None


def describe_no_space(err: OSError, path: str | os.PathLike | None = None) -> str:
    """'no space left on the device while writing <path>' (or the file-size limit, for EFBIG)."""
    where = path or err.filename
    what = ("the file size limit was reached (ulimit -f, or the filesystem's largest file)" if err.errno == errno.EFBIG
            else "no space left on the device")
    return f"{what} while writing {where}" if where else what


class _RecordingWriter:
    """A file object that remembers the OSError of a failed write: torch.save reports a full disk as a RuntimeError
    ('PytorchStreamWriter failed writing file ...', 'unexpected pos ...') without the errno."""

    def __init__(self, file: IO[bytes]):
        self._file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def check_writable_dir(path: str | os.PathLike, key: str) -> None:
    """ConfigError unless `path` is a directory this process can write into, or one it can create (checked before
    anything is written: a path that is a file, or on a read-only filesystem, is one line at start)."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is below {existing}, a file"
        raise ConfigError(f"{key}={path} is invalid: it {what}, not a directory")
    # access(2) also answers EROFS for root on a read-only mount (root passes permission bits, not a ro mount)
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "it is" if existing == path else f"{existing} is"
        raise ConfigError(f"{key}={path} is invalid: {where} not writable (read-only filesystem or permissions)")


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


def _temp_prefix(path: Path) -> str:
    """`.<name>.pid<PID>.`: a temp file names its writer, so a later write can tell a dead writer's from a live one's."""
    return f".{path.name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: another user's live process
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temp files beside `path` whose writer died mid-write (SIGKILL, power loss); returns them.

    A live writer's temp file (its PID still runs, this process included) is left alone.
    """
    prefix, removed = _temp_prefix(path), []
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return removed
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            (path.parent / name).unlink(missing_ok=True)
            removed.append(path.parent / name)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(f)` on a temp file beside `path`, then rename it over `path`: readers see old or new, never half.

    Out of disk space (or quota): the temp file is removed, `path` keeps its previous content, and a
    DiskFullError says so in one line. Temp files of an earlier writer of `path` that died are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp, recorder = None, None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp")
        os.fchmod(fd, _mode(path))  # mkstemp makes 0600 files; keep the usual permissions
        with os.fdopen(fd, "wb") as f:
            recorder = _RecordingWriter(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        full = no_space_error(err) or (recorder.error if recorder is not None and isinstance(err, Exception) and
                                       no_space_error(recorder.error) else None)
        if full is not None:
            kept = f"the previous {path.name} is intact" if path.exists() else f"nothing was written to {path}"
            fix = "raise the limit" if full.errno == errno.EFBIG else "free some space"
            raise DiskFullError(f"{describe_no_space(full, path)}: {kept}; {fix}") from err
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
