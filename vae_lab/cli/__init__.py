"""Command-line entry points (Hydra)."""

from pathlib import Path

# configs/ sits at the project's top level, next to this package.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")

import warnings  # noqa: E402

# Lightning 2.6 with torch 2.14 emits an internal deprecation notice on every fit; users cannot act on it.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
