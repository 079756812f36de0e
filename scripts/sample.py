"""Pictures of a trained VAE: `python scripts/sample.py model=<run dir | artifact dir | .ckpt | Hub id> [mode=...]`.

Modes: sample, reconstruct, interpolate, traverse, latent_scatter, manifold (vae_lab.sampling). Writes PNGs and
prints their paths; `--help` lists every key (configs/sample.yaml).
"""

import hydra
from omegaconf import DictConfig

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.errors import report_user_errors


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from vae_lab.sampling import run_sample

    run_sample(cfg)


if __name__ == "__main__":
    main()
