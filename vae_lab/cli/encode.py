"""`python scripts/encode.py model=<run> [split=test] [out=codes.npz] [dataset.*=...]`: posterior codes as .npz."""

import sys

import hydra
from omegaconf import DictConfig

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.data_args import split_data_overrides
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors

_DATA_OVERRIDES: list[str] = []


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="encode")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    from vae_lab.export import encode_model

    encode_model(cfg, _DATA_OVERRIDES)


def main() -> None:
    sys.argv, data = split_data_overrides(sys.argv)
    _DATA_OVERRIDES[:] = data
    _main()
