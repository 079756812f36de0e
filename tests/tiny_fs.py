"""A tiny real filesystem for one subprocess: a tmpfs mounted in a private user + mount namespace (`unshare -rm`).

Unprivileged where the kernel allows user namespaces; the mount vanishes with the subprocess, so the script copies
out what the test inspects. `available()` says whether this machine can do it (else tests fall back or skip).
"""

import functools
import shlex
import shutil
import subprocess
import tempfile


@functools.cache
def available() -> bool:
    """Whether `unshare -rm` can mount a tmpfs here."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                               capture_output=True, timeout=30)
    return probe.returncode == 0


def in_tmpfs(mount_point, options: str, script: str) -> list[str]:
    """argv that runs the shell `script` with a fresh tmpfs (mount `options`, e.g. size=3m or ro) at mount_point."""
    mount = f"mount -t tmpfs -o {shlex.quote(options)} tmpfs {shlex.quote(str(mount_point))}"
    return ["unshare", "-rm", "sh", "-c", f"{mount} && {script}"]
