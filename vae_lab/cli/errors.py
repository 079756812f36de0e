"""Turn user errors into one line on stderr and a non-zero exit, instead of a stack trace."""

import functools
import sys
from typing import Callable

EXIT_USER_ERROR = 2


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
        print(f"error: {message}", file=sys.stderr, flush=True)
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
        finally:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)

    return wrapper
