"""`python scripts/disentanglement_table.py RUN_DIR... [num_train=N] [num_test=M] [metrics=[mig,dci]]`."""

import sys

import hydra
from omegaconf import DictConfig

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors


def positional_runs(argv: list[str]) -> list[str]:
    """argv with its bare path arguments (a shell glob's expansion) gathered into the override `runs=['<a>','<b>']`
    (Hydra takes key=value only); unchanged when there are none."""
    keep = [arg for arg in argv[1:] if "=" in arg or arg.startswith("-")]
    paths = [arg for arg in argv[1:] if arg not in keep]
    if not paths:
        return list(argv)
    quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
    return [argv[0], *keep, f"runs=[{quoted}]"]


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="disentanglement_table")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    from vae_lab.disentanglement.table import disentanglement_table

    print(disentanglement_table(cfg))


def main() -> None:
    sys.argv = positional_runs(sys.argv)
    _main()
