"""Command-line entry points (Hydra)."""

from pathlib import Path

# configs/ sits at the project's top level, next to this package.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")
