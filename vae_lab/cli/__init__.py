"""Command-line entry points (Hydra)."""

import sys
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from vae_lab.configs import CONFIG_DIR  # noqa: F401 (the entry points' config_path)
from vae_lab.lightning_compat import PYTREE_WARNINGS


def invoked_as(script: str) -> str:
    """`script` (python train.py) as the user started it: an installed command by its own name (vae-lab-train)."""
    name = Path(sys.argv[0]).name
    return script if not name or name.endswith(".py") else name


if not OmegaConf.has_resolver("invoked_as"):  # the help texts' usage lines: ${invoked_as:python train.py}
    OmegaConf.register_new_resolver("invoked_as", invoked_as)

# Lightning 2.6 with torch 2.14 emits an internal deprecation notice on every fit; users cannot act on it.
for _pattern, _ in PYTREE_WARNINGS:
    warnings.filterwarnings("ignore", message=_pattern)
