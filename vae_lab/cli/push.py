"""`python scripts/push_to_hub.py <run dir> repo_id=me/vae [key=value ...]`: upload a run's artifact to the Hub."""

import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.errors import hydra_errors_in_one_line, report_user_errors


def positional_run_dir(argv: list[str]) -> list[str]:
    """argv with a bare first argument (a path, no '=') turned into a quoted Hydra override `run_dir='...'`."""
    if len(argv) > 1 and "=" not in argv[1] and not argv[1].startswith("-"):
        value = argv[1] if re.fullmatch(r"[\w./~+-]+", argv[1]) else "'" + re.sub(r"(['\\])", r"\\\1", argv[1]) + "'"
        return [argv[0], f"run_dir={value}", *argv[2:]]
    return argv


@hydra_errors_in_one_line
@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="push_to_hub")
@report_user_errors
def _main(cfg: DictConfig) -> None:
    from vae_lab.publish import push_run

    info = push_run(Path(cfg.run_dir).expanduser(), cfg.repo_id, private=cfg.private, revision=cfg.revision,
                    commit_message=cfg.commit_message, push_logs=cfg.push_logs)
    print(f"Pushed to the Hub: {info.commit_url}")


def main() -> None:
    sys.argv = positional_run_dir(sys.argv)
    _main()
