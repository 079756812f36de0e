"""Conditional VAE: trained end to end through the LightningModule, its samples follow the requested class (a
conditional model on unlabelled data, one error line from train.py: tests/cli/test_bad_input.py)."""

import lightning as L
import pytest
import torch

from vae_lab.build import build_datamodule, build_module, build_trainer


def fit(compose, tmp_path, *overrides):
    """A VAEModule fitted on the bundled digits with `overrides` (no logger, no checkpoints)."""
    cfg = compose("print_config=false", "model.conditional=true", "logger=none", "callbacks=none",
                  "trainer.max_epochs=-1", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
                  "trainer.enable_model_summary=false", *overrides)
    cfg.paths.output_dir = str(tmp_path)
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.spec)
    build_trainer(cfg).fit(module, datamodule=datamodule)
    return module.model.eval(), datamodule


def test_samples_conditioned_on_a_class_are_classified_as_that_class(compose, tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    # latent_dim=2 cannot hold the digit's identity next to its style: the decoder must read the label.
    model, _ = fit(compose, tmp_path, "model.latent_dim=2", "schedule.lr=3e-3", "trainer.max_steps=300")
    digits = load_digits()
    classifier = LogisticRegression(max_iter=2000).fit(digits.images.reshape(len(digits.images), -1) / 16.0,
                                                        digits.target)  # ~100% train accuracy on real digits
    torch.manual_seed(1)
    y = torch.arange(10).repeat_interleave(40)  # 40 samples of each class
    predicted = classifier.predict(model.sample(len(y), y).reshape(len(y), -1).numpy())
    accuracy = (predicted == y.numpy()).mean()
    assert accuracy > 0.8, accuracy  # chance is 0.1
    per_class = [(predicted[y.numpy() == c] == c).mean() for c in range(10)]
    assert min(per_class) > 0.5, per_class  # every class, not a few easy ones

    # The same codes decoded with another label become that label's digit.
    torch.manual_seed(1)
    shifted = classifier.predict(model.sample(len(y), (y + 1) % 10).reshape(len(y), -1).numpy())
    assert (shifted == ((y + 1) % 10).numpy()).mean() > 0.8


@pytest.mark.parametrize("architecture", ["mlp", "conv", "conv_deep", "resnet"])
def test_every_architecture_trains_conditionally_and_samples_a_class(compose, tmp_path, architecture):
    model, datamodule = fit(compose, tmp_path, f"architecture={architecture}", "trainer.max_steps=2", "schedule.batch_size=16")
    assert model.conditional and model.num_classes == datamodule.spec.num_classes == 10
    torch.manual_seed(0)
    z = model.prior().sample((3,))
    with torch.no_grad():
        as_zero = model.decode(z, torch.zeros(3, dtype=torch.long)).mean
        as_seven = model.decode(z, torch.full((3,), 7)).mean
    assert as_zero.shape == (3, *datamodule.spec.shape)
    assert not torch.allclose(as_zero, as_seven)  # the label reaches the decoder
    x, y = next(iter(datamodule.val_dataloader()))
    assert not torch.allclose(model.encode(x, y).mean, model.encode(x, (y + 1) % 10).mean)  # and the encoder
    assert model.sample(4, torch.tensor([0, 1, 2, 3])).shape == (4, *datamodule.spec.shape)
