"""loss=iwae through a real config and fit: the loss is -L_k, reported next to the ELBO terms (the bound itself
against the linear-Gaussian oracle: tests/unit/test_iwae.py)."""

import lightning as L
import pytest

from vae_lab.build import build_datamodule, build_module, build_trainer


def test_loss_iwae_config_trains_on_the_k_sample_bound(compose, tmp_path):
    cfg = compose("loss=iwae", "loss.num_samples=7", "logger=none", "callbacks=none", "trainer.max_steps=3",
                  "trainer.max_epochs=-1", "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false",
                  "trainer.enable_model_summary=false")
    cfg.paths.output_dir = str(tmp_path)
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.spec)
    assert module.num_samples == 7
    trainer = build_trainer(cfg)
    trainer.fit(module, datamodule=datamodule)
    val = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    # The loss is -L_7 (not the ELBO), and L_7 is reported next to the ELBO terms.
    assert val["val/loss"] == pytest.approx(-val["val/iwae_nats"], rel=1e-5)
    assert val["val/iwae_nats"] > val["val/elbo_nats"]
