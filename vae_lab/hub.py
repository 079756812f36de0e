"""Model artifacts (config.json + model.safetensors + README.md) and the Hugging Face Hub.

Minimal loading for now; saving, pushing and strict validation are built on top of this.
"""

from pathlib import Path

from vae_lab.errors import CheckpointError
from vae_lab.model import VAE


def load_artifact(path: Path) -> VAE:
    """A VAE from a local artifact directory, strict about missing or unexpected weights."""
    try:
        return VAE.from_pretrained(str(path), strict=True)
    except Exception as err:
        raise CheckpointError(f"cannot load artifact {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def load_from_hub(repo_id: str, revision: str | None = None):
    raise CheckpointError(f"{repo_id!r} is neither a run directory, a .ckpt file nor an artifact directory")
