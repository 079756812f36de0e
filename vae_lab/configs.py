"""Where the Hydra configs live, and composing one of their groups outside a Hydra app.

In a checkout (or an editable install) the top-level `configs/` is used, so edits there take effect; an installed
wheel carries a copy inside the package (`vae_lab/configs/`, added at build time by setup.py).
"""

from pathlib import Path

from omegaconf import DictConfig

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent / "configs"
CONFIG_DIR = str(_CHECKOUT if (_PACKAGE.parent / "pyproject.toml").is_file() and _CHECKOUT.is_dir()
                 else _PACKAGE / "configs")


def compose_train(overrides: list[str]) -> DictConfig:
    """The training config composed with `overrides`, as `python train.py <overrides>` would (Hydra runtime keys
    such as hydra.runtime are not available: use the result's data, model and training groups)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a @hydra.main app: same config directory
        return compose(config_name="train", overrides=list(overrides))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))
