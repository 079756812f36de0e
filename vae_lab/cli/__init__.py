"""Command-line entry points (Hydra)."""

import warnings

from vae_lab.configs import CONFIG_DIR  # noqa: F401 (the entry points' config_path)
from vae_lab.lightning_compat import PYTREE_WARNINGS

# Lightning 2.6 with torch 2.14 emits an internal deprecation notice on every fit; users cannot act on it.
for _pattern, _ in PYTREE_WARNINGS:
    warnings.filterwarnings("ignore", message=_pattern)
