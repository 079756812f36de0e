"""A saved YAML config read as data: an artifact's train_config.yaml and a run's .hydra/config.yaml, bounded, safe
YAML, and `${...}` kept literal where the reader says (never resolved: oc.env would read the environment)."""

import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vae_lab.artifact import TRAIN_CONFIG_NAME, artifact_root, read_bounded
from vae_lab.errors import CheckpointError

MAX_CONFIG_NODES = 100_000  # values in a train_config.yaml (YAML aliases could otherwise expand exponentially)
_INTERPOLATION = re.compile(r"(\\*)\$\{")  # `${`, and the backslashes before it
# `${name:...}`: a resolver call (oc.env reads the environment, hydra: and now: the reading process's state)
RESOLVER_CALL = re.compile(r"(\\*)\$\{(?=\s*[\w.\-]+\s*:)")


def _literal(value: Any, budget: list[int], pattern: re.Pattern = _INTERPOLATION) -> Any:
    """`value` (parsed YAML) with every string escaped so that OmegaConf reads it as its literal text: a `${...}`
    in a downloaded config never reaches a resolver (oc.env would read the environment: HF_TOKEN)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise CheckpointError(f"more than {MAX_CONFIG_NODES} values")
    if isinstance(value, str):  # OmegaConf's grammar: \${ is a literal ${, and \\ before it one literal backslash
        return pattern.sub(lambda m: m[1] * 2 + "\\${", value)
    if isinstance(value, dict):
        return {str(k): _literal(v, budget, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v, budget, pattern) for v in value]
    return value if value is None or isinstance(value, (bool, int, float)) else str(value)


def train_config(folder: Path) -> DictConfig | None:
    """The training config shipped in an artifact (train_config.yaml), as data: bounded, safe YAML, every
    `${...}` kept as literal text (never resolved), never instantiated. None if the artifact has none."""
    path = Path(folder) / TRAIN_CONFIG_NAME
    if not os.path.lexists(path):
        return None
    return yaml_data(path, artifact_root(Path(folder)))


def yaml_data(path: Path, root: Path, literal: re.Pattern = _INTERPOLATION) -> DictConfig:
    """A YAML mapping read as data: bounded, regular, inside `root`, safe YAML; the `${` that `literal` matches
    (every one by default) kept as literal text; one CheckpointError line for anything else."""
    import yaml
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    try:
        data = yaml.safe_load(read_bounded(path, root).decode("utf-8"))
        if not isinstance(data, dict):
            raise CheckpointError(f"expected a mapping, got {type(data).__name__}")
        return OmegaConf.create(_literal(data, [MAX_CONFIG_NODES], literal))
    except CheckpointError as err:
        raise CheckpointError(str(err) if str(err).startswith(str(path)) else f"{path}: {err}") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError, ValueError, OmegaConfBaseException) as err:
        raise CheckpointError(f"{path} is not valid YAML: {str(err).splitlines()[0][:200]}") from None
