"""Slow tier: on a sprites subset at the same small budget, beta-TCVAE vs the vanilla VAE by MIG over seeds."""

import lightning as L
import numpy as np
import pytest

from vae_lab.build import build_datamodule, build_module, build_trainer
from vae_lab.disentanglement import disentanglement_scores

SEEDS = (0, 1)
# The docs/disentanglement.md table's data and budget (5760 sprites, 600 steps of 64)
BUDGET = ["dataset=sprites", "dataset.options.stride.orientation=8", "dataset.options.stride.pos_x=4",
          "dataset.options.stride.pos_y=4", "model.latent_dim=10", "model.net.hidden_dims=[256,64]",
          "schedule.lr=2e-3", "trainer.max_steps=600", "trainer.max_epochs=-1", "callbacks=none", "logger=none",
          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "print_config=false"]


def _mig(compose, tmp_path, loss: str, seed: int) -> float:
    cfg = compose(f"paths.output_dir={tmp_path}", f"loss={loss}", f"seed={seed}", *BUDGET)
    L.seed_everything(seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm.spec)
    build_trainer(cfg).fit(module, datamodule=dm)
    return disentanglement_scores(module.model, dm.factor_grid(), seed=0, num_train=5000, metrics=("mig",))["mig"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_beta_tcvae_vs_vanilla_mig_over_seeds(tmp_path, compose):
    migs = {loss: [_mig(compose, tmp_path / f"{loss}{s}", loss, s) for s in SEEDS] for loss in ("elbo", "beta_tcvae")}
    print({k: np.round(v, 3).tolist() for k, v in migs.items()})
    # Measured by the docs' runs at this budget (seeds 0 and 1, best checkpoints by val ELBO, MIG on 1000 points):
    # beta_tcvae 0.089 / 0.101, elbo 0.031 / 0.021. This test scores the last weights on 5000 points.
    assert np.mean(migs["beta_tcvae"]) > np.mean(migs["elbo"]), migs
