"""Slow tier: on dynamically binarised MNIST, with one short budget, the VampPrior's test IWAE bound beats N(0, I)."""

import pytest
import torch

from datasets_fixtures import copy_mnist
from vae_lab.build import build_datamodule
from vae_lab.cli.train import train
from vae_lab.evaluation import evaluate
from vae_lab.loading import load_model

STEPS = 1500  # ~2.8 epochs at batch 100 (experiment=mnist_likelihood); the test takes ~13 min on the 2 shared cores
# Measured on the 2-core machine (seed 42, IWAE-200 on the first 1000 test images): standard -128.67 +- 1.18,
# vamp -126.11 +- 1.27 nats, a margin of 2.56 nats (the same images: paired). We assert a third of it.
MIN_MARGIN_NATS = 0.85


def train_and_evaluate(compose, root, data, prior: str) -> dict:
    run_dir = root / prior
    cfg = compose(f"paths.output_dir={run_dir}", "experiment=mnist_likelihood", f"prior={prior}",
                  f"paths.data_dir={data}", f"trainer.max_steps={STEPS}", f"schedule.kl_warmup_steps={STEPS // 5}",
                  "callbacks=no_images", "logger=none", "print_config=false", "trainer.enable_progress_bar=false")
    train(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    torch.manual_seed(0)
    return evaluate(load_model(run_dir).model, datamodule.test_dataloader(), iwae_samples=200, max_examples=1000)


@pytest.mark.slow
def test_vampprior_beats_the_standard_prior_on_binarised_mnist(tmp_path, compose):
    data = copy_mnist(tmp_path / "data")
    standard = train_and_evaluate(compose, tmp_path, data, "standard_normal")
    vamp = train_and_evaluate(compose, tmp_path, data, "vamp")
    assert standard["rate_estimator"] == "analytic_kl" and vamp["rate_estimator"] == "monte_carlo"
    print(f"IWAE-200: standard {standard['iwae_nats']:.2f} ± {standard['iwae_stderr_nats']:.2f}, "
          f"vamp {vamp['iwae_nats']:.2f} ± {vamp['iwae_stderr_nats']:.2f} nats")
    assert vamp["iwae_nats"] > standard["iwae_nats"] + MIN_MARGIN_NATS
