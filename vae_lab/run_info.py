"""What produced a run: git commit, package versions, command line (saved with every run and artifact)."""

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("vae_lab", "torch", "torchvision", "lightning", "hydra-core", "omegaconf", "torchmetrics",
            "huggingface_hub", "safetensors")


def git_commit(cwd: Path | None = None) -> str | None:
    """The checked-out commit (with '-dirty' when there are local changes), or None outside a git checkout."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide the numbers."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_info() -> dict:
    return {"git_commit": git_commit(), "versions": versions(), "argv": sys.argv, "platform": platform.platform()}
