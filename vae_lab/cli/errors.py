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

        from vae_lab.errors import VaeLabError

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
