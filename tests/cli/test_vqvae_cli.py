"""VQ-VAE bad input through train.py: one line, exit 2, nothing written (both stages in-process:
tests/integration/test_vqvae_training.py)."""

import pytest

import driver

SMALL = ["architecture=vqvae", "model.net.channels=[8,16]", "model.net.residual_hidden=8", "model.code_dim=4",
         "model.codebook_size=16"]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"]
BAD = [  # (name, overrides, the error line's fragment)
    ("codebook_size", ["model.codebook_size=1"], "error: model.codebook_size=1 is invalid: must be an integer >= 2"),
    ("grid", ["model.net.channels=[4,4,4,4,4]"], "the code grid does not fit"),
    ("prior_of_vae", ["prior_of={vae}"], "holds a VAE, not a VQ-VAE"),
]


@pytest.mark.slow
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path):
    """Every case through train.py's entry point, in one interpreter (driver.run_many)."""
    from vae_lab.model import VAE
    from vae_lab.publish import save_artifact

    save_artifact(tmp_path / "vae", VAE(in_shape=[1, 8, 8], latent_dim=2, net={"hidden_dims": [8]}))
    cases = [(name, [f"hydra.run.dir={tmp_path / name}", *SMALL, *[o.format(vae=tmp_path / "vae") for o in overrides],
                     *QUIET]) for name, overrides, _ in BAD]
    results = driver.run_many("train", cases, out=tmp_path / "results.json")
    for name, _, message in BAD:
        driver.one_error_line(results[name], message)
        run_dir = tmp_path / name
        if "grid" in message:  # found once the data's shape is known: only a start's leftovers (.hydra/, train.log)
            assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()
        else:  # refused at start (vae_lab.config.validate), before Hydra writes the run directory
            assert not run_dir.exists() or not any(p.is_file() for p in run_dir.rglob("*")), name
