"""Turn user errors into one line on stderr and a non-zero exit, instead of a stack trace."""

import errno
import functools
import sys
from typing import Callable

EXIT_USER_ERROR = 2
# Errors of the machine, not of vae_lab: a full disk, a path that cannot be written. One line, exit 2.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST,
                      errno.ENOTDIR, errno.EISDIR}


def printable(text: str) -> str:
    """`text` with control and format characters escaped as repr does (\\n, \\x1b, \\u202e): a file name shown in
    a message cannot start a forged `error:` line, move the cursor or reverse the text."""
    import unicodedata

    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)


def environment_message(err: BaseException) -> str | None:
    """One line for an error caused by the machine: the first vae_lab error in the chain of `err` (a full disk while
    saving a checkpoint, even when TensorBoard's flush failed after it and replaced it), else a full disk or an
    unwritable path anywhere in the chain (Hydra's own writes, TensorBoard's files); None for anything else."""
    from vae_lab.errors import VaeLabError
    from vae_lab.io import describe_no_space, no_space_error

    chain, seen, cur = [], set(), err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for cause in reversed(chain):  # the earliest: what went wrong first
        if isinstance(cause, VaeLabError):
            return str(cause)
    full = no_space_error(err)
    if full is not None:
        return f"{describe_no_space(full)}; free some space (checkpoints already written are intact)"
    for cause in reversed(chain):
        if isinstance(cause, OSError) and cause.errno in ENVIRONMENT_ERRNOS:
            return f"{cause.strerror or cause}: {cause.filename}" if cause.filename else str(cause.strerror or cause)
    return None


def one_line_thread_errors() -> None:
    """A background thread (TensorBoard's event writer) that dies of a full disk prints one warning line, not a
    traceback; the main thread then stops with its own one-line error. Other thread errors keep Python's report."""
    import threading

    default = threading.excepthook

    def hook(args) -> None:
        message = environment_message(args.exc_value) if isinstance(args.exc_value, Exception) else None
        if message is None:
            return default(args)
        name = args.thread.name if args.thread is not None else "a background thread"
        print(printable(f"warning: background thread {name} stopped: {message}"), file=sys.stderr, flush=True)

    if not getattr(threading.excepthook, "one_line", False):  # once per process
        hook.one_line = True
        threading.excepthook = hook


def report_user_errors(fn: Callable) -> Callable:
    """Run `fn`; a VaeLabError or a missing/unknown config value exits with one `error: ...` line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

        from vae_lab import log_redaction
        from vae_lab.errors import VaeLabError

        log_redaction.install()  # after Hydra configured logging: no handler ever prints a token
        try:
            return fn(*args, **kwargs)
        except VaeLabError as err:
            message = str(err)
        except MissingMandatoryValue as err:
            message = f"{err.full_key} is required: set it on the command line ({err.full_key}=...)"
        except (ConfigKeyError, ConfigAttributeError) as err:
            message = f"unknown config key {err.full_key!r}: check the spelling (python train.py --cfg job lists all keys)"
        except Exception as err:
            message = environment_message(err)
            if message is None:
                raise
        print(f"error: {printable(message)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)

    return wrapper


def _hydra_message(err: BaseException) -> str:
    """One line for an error Hydra raises while composing the config (before the app runs)."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    first = lambda e: (str(e).strip().splitlines() or [type(e).__name__])[0].strip()  # noqa: E731
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and "/" in err.missing_cfg_file:
        group, option = err.missing_cfg_file.rsplit("/", 1)
        choices = ", ".join(sorted(err.options or [])) or "none"
        return f"{group}={option} is not a valid choice; valid choices: {choices}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override {err.override!r}: {first(err)} (syntax: key=value, group=option)"
    cause = err.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and cause.full_key:
        return f"unknown config key {cause.full_key!r}: check the spelling (python train.py --cfg job lists all keys)"
    return first(err) + (f": {first(cause)}" if cause is not None else "")


def hydra_errors_in_one_line(entry: Callable) -> Callable:
    """Wrap a `@hydra.main` entry point: Hydra's own errors (unknown key or option, bad override syntax) print one
    `error: ...` line and exit 2 too, instead of Hydra's multi-line report. HYDRA_FULL_ERROR=1 keeps Hydra's way."""

    @functools.wraps(entry)
    def wrapper(*args, **kwargs):
        import os

        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            return entry(*args, **kwargs)
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing them
        try:
            return entry(*args, **kwargs)
        except (HydraException, OmegaConfBaseException) as err:
            message = _hydra_message(err)
        except Exception as err:  # Hydra's own writes (.hydra/*.yaml, the log file) on a full or read-only disk
            message = environment_message(err)
            if message is None:
                raise
        finally:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        print(f"error: {printable(message)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)

    return wrapper
