"""`python scripts/sample.py model=<run dir | artifact dir | .ckpt | Hub id> [mode=...] [key=value ...] [dataset.*=...]`.

Modes: sample, reconstruct, interpolate, traverse, latent_scatter, manifold (vae_lab.sampling). Writes PNGs and
prints their paths; `--help` lists every key (configs/sample.yaml).
"""

import sys

import hydra
from omegaconf import DictConfig

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.data_args import split_data_overrides
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors

_DATA_OVERRIDES: list[str] = []


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    from vae_lab.sampling import run_sample

    run_sample(cfg, _DATA_OVERRIDES)


def main() -> None:
    from vae_lab.startup import check_memory_limit

    check_memory_limit()  # before torch is imported: under a small ulimit -v it dies without a Python error
    sys.argv, data = split_data_overrides(sys.argv)
    _DATA_OVERRIDES[:] = data
    _main()
