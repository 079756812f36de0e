"""`python scripts/score.py model=<run> [key=value ...] [dataset.*=...] [out_data=<name> | out_data.path=...]`."""

import sys

import hydra
from omegaconf import DictConfig

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.data_args import split_data_overrides
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors

_DATA_OVERRIDES: list[str] = []
_OUT_OVERRIDES: list[str] = []


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="score")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    from vae_lab.ood.run import score_model

    score_model(cfg, _DATA_OVERRIDES, _OUT_OVERRIDES)


def main() -> None:
    from vae_lab.ood.run import split_out_data

    sys.argv, data = split_data_overrides(sys.argv)
    sys.argv, out = report_user_errors(split_out_data)(sys.argv)  # a bad out_data: one line, exit 2
    _DATA_OVERRIDES[:], _OUT_OVERRIDES[:] = data, out
    _main()
