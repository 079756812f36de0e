"""Ctrl-C during start-up (imports, config, run directory, data, model): one line and exit 130, at any moment.

Before training nothing is worth saving: no checkpoint exists yet, and every file a start writes is either atomic or
set aside by the next start in that directory (vae_lab.run_dir.set_aside_leftovers). Python's default handler
instead raises KeyboardInterrupt wherever the signal lands: a traceback, or, inside Lightning's fit set-up (which
catches it), nothing at all, and the run went on to exit 0. This module imports nothing heavy, so an entry point
can install it before its own imports.
"""

import os
import signal
import sys
import threading

LINE = ("interrupted by SIGINT (Ctrl-C) during start-up, before training: no checkpoint was written; start the run "
        "again (what this start wrote is set aside by the next start in its directory)")


def exit_interrupted(signum: int = signal.SIGINT, frame=None) -> None:
    """Print the one line and end the process now with 128 + the signal (no handler or `except` can swallow it)."""
    try:
        sys.stderr.write(f"{LINE}\n")
        sys.stderr.flush()
    finally:
        os._exit(128 + int(signum))


def exit_on_ctrl_c() -> None:
    """SIGINT ends the process with the one line until training installs its own handler (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, exit_interrupted)


# Address space the CUDA build of torch maps at `import torch` alone: it dies (std::bad_alloc, no Python error) under
# `ulimit -v 3G` and imports under 4G on the dev machine; 5 GiB leaves room for the data and the model.
MIN_ADDRESS_SPACE = 5 << 30


def check_memory_limit() -> None:
    """Exit 2 with one line when the address-space limit (ulimit -v) is too small for torch to even import."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < MIN_ADDRESS_SPACE:
        sys.stderr.write(f"error: the address-space limit (ulimit -v) is {soft / 2**30:.1f} GiB, too little memory "
                         f"for torch to load (its libraries map over 3 GiB at import): vae_lab needs at least "
                         f"{MIN_ADDRESS_SPACE >> 30} GiB; raise it (ulimit -v {MIN_ADDRESS_SPACE >> 10} or unlimited)\n")
        sys.stderr.flush()
        sys.exit(2)
