"""Load a trained VAE from a run directory, a Lightning checkpoint, or an artifact directory.

Nothing here unpickles code: checkpoints are read with torch's weights_only loader, artifacts are JSON +
safetensors. The run's composed config comes back too, so tools can rebuild its data.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import CheckpointError
from vae_lab.model import VAE

MODEL_PREFIX = "model."  # VAEModule keeps the VAE at `self.model`


@dataclass
class LoadedModel:
    model: VAE  # in eval mode
    cfg: DictConfig | None  # the run's composed config (.hydra/config.yaml), when known
    source: Path  # the file the weights came from
    run_dir: Path | None  # where outputs should go by default


def _best_checkpoint(run_dir: Path) -> Path:
    """metrics.json's best checkpoint if it still exists, else checkpoints/last.ckpt."""
    import json

    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        best = json.loads(metrics.read_text()).get("best_checkpoint")
        if best and Path(best).is_file():
            return Path(best)
    ckpts = run_dir / "checkpoints"
    if (ckpts / "last.ckpt").is_file():
        return ckpts / "last.ckpt"
    found = sorted(ckpts.glob("*.ckpt")) if ckpts.is_dir() else []
    if not found:
        raise CheckpointError(f"no checkpoint in {ckpts} (expected last.ckpt or best-*.ckpt)")
    return found[-1]


def model_from_checkpoint(path: Path) -> VAE:
    """The VAE inside a VAEModule checkpoint, loaded with weights_only=True and strict key matching."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model_kwargs = ckpt["hyper_parameters"]["model"]
        state = {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a vae_lab checkpoint (missing {err})") from None
    except Exception as err:  # truncated file, foreign pickle, not a zip ...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    model = VAE(**model_kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not match its model config: {str(err).splitlines()[0]}") from None
    return model


def _run_config(run_dir: Path | None) -> DictConfig | None:
    if run_dir is not None and (run_dir / ".hydra" / "config.yaml").is_file():
        return OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    return None


def load_model(ref: str | Path, revision: str | None = None) -> LoadedModel:
    """`ref`: a run directory, a .ckpt file, an artifact directory (config.json + model.safetensors) or a Hub id.

    A Hub id's revision (branch, tag or commit) is pinned by `revision` or as 'owner/name@revision'.
    """
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix == ".ckpt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return LoadedModel(model_from_checkpoint(path).eval(), _run_config(run_dir), path, run_dir)
    if path.is_dir() and (path / "config.json").is_file():
        from vae_lab.hub import artifact_train_config, load_artifact

        model = load_artifact(path)
        cfg = _run_config(path) or artifact_train_config(path)
        return LoadedModel(model.eval(), cfg, path / "model.safetensors", path)
    if path.is_dir():
        ckpt = _best_checkpoint(path)
        return LoadedModel(model_from_checkpoint(ckpt).eval(), _run_config(path), ckpt, path)
    from vae_lab.hub import load_from_hub  # a Hub id such as "me/vae-mnist"

    return load_from_hub(str(ref), revision)
