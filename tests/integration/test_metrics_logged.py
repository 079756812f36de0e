"""Training logs SSIM and PSNR for validation and test: the numbers of posterior-mean reconstructions of the whole
split (the metrics themselves against hand computations: tests/unit/test_metrics.py)."""

import pytest
import torch

from vae_lab.metrics import ssim_per_image


def test_training_logs_ssim_and_psnr_for_validation_and_test(compose, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vae_lab.build import build_datamodule
    from vae_lab.cli.train import train
    from vae_lab.loading import load_model

    cfg = compose("print_config=false", "trainer.max_steps=14", "trainer.max_epochs=-1",
                  "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "schedule.batch_size=256")
    cfg.paths.output_dir = str(tmp_path)
    metrics = train(cfg)
    val = metrics["val"]
    assert {"val/ssim", "val/psnr_db"} <= set(val)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"val/ssim", "val/psnr_db"} <= set(events.Tags()["scalars"])

    # The logged numbers are those of posterior-mean reconstructions of the whole split, exactly.
    datamodule = build_datamodule(cfg)
    model = load_model(str(tmp_path / metrics["best_checkpoint"])).model
    x = torch.cat([x for x, _ in datamodule.val_dataloader()])
    recon = model.reconstruct(x)
    assert val["val/ssim"] == pytest.approx(ssim_per_image(recon, x).mean().item(), rel=1e-4)
    psnr = (10 * torch.log10(1 / ((recon - x) ** 2).mean((1, 2, 3)))).mean()
    assert val["val/psnr_db"] == pytest.approx(psnr.item(), rel=1e-4)

    import lightning as L

    from vae_lab.lit_module import VAEModule

    module = VAEModule.load_from_checkpoint(tmp_path / metrics["best_checkpoint"], weights_only=True)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    test = trainer.test(module, dataloaders=datamodule.val_dataloader(), verbose=False)[0]
    assert test["test/ssim"] == pytest.approx(val["val/ssim"], rel=1e-5)
    assert test["test/psnr_db"] == pytest.approx(val["val/psnr_db"], rel=1e-5)
