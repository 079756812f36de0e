"""The prior and posterior groups through real configs: every option trains (fast_dev_run) with every
architecture, and a short run draws its pictures (the values as the model's init args:
tests/unit/test_latent_options_args.py)."""

import json

import pytest

from vae_lab.cli.train import train

QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
         "schedule.batch_size=8"]
SMALL_VAMP = ["prior=vamp", "prior.num_components=5"]
# two runs per architecture cover every new option: mog with iaf, vamp with the gaussian posterior
OPTION_SETS = {"mog_iaf": ["prior=mog", "prior.num_components=3", "posterior=iaf", "posterior.num_steps=2",
                           "posterior.hidden_dim=16"],
               "vamp": SMALL_VAMP}


def compose_cfg(compose, tmp_path, *overrides):
    cfg = compose(*QUIET, *overrides)
    cfg.paths.output_dir = str(tmp_path)
    return cfg


@pytest.mark.parametrize("options", OPTION_SETS, ids=list(OPTION_SETS))
@pytest.mark.parametrize("architecture", ["mlp", "conv", "conv_deep", "resnet"])
def test_fast_dev_run_every_option_with_every_architecture(compose, tmp_path, architecture, options):
    cfg = compose_cfg(compose, tmp_path, f"architecture={architecture}", "trainer.fast_dev_run=1", "logger=none",
                      *OPTION_SETS[options])
    val = train(cfg)["val"]
    assert val["val/elbo_nats"] == pytest.approx(-(val["val/distortion_nats"] + val["val/rate_nats"]), rel=1e-5)


def test_short_run_with_vampprior_and_iaf_draws_pictures_and_writes_an_artifact(compose, tmp_path):
    cfg = compose_cfg(compose, tmp_path, *SMALL_VAMP, "posterior=iaf", "posterior.num_steps=2", "trainer.max_steps=6",
                      "trainer.max_epochs=-1", "trainer.val_check_interval=3",
                      "callbacks.image_grids.every_n_epochs=1")
    metrics = train(cfg)
    images = {p.name for p in (tmp_path / "images").iterdir()}
    assert {"latent_scatter.png", "latent_traversals.png"} <= images
    assert "kl_per_dim.png" not in images  # KL per dimension is undefined for a mixture prior: omitted
    assert any(name.startswith("samples_epoch") for name in images)
    config = json.loads((tmp_path / "artifact" / "config.json").read_text())
    assert config["prior"] == "vamp" and config["posterior"] == "iaf" and config["prior_components"] == 5
    assert metrics["global_step"] == 6
