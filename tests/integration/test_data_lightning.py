"""The in-memory batch iterable inside a real Lightning Trainer: fit takes it, each epoch a new order, and its state
(epoch, seed, batch) is stored in the checkpoint as primitives (the loaders alone: tests/unit/test_data.py)."""

import lightning as L
import torch

from vae_lab.data import VAEDataModule


def test_lightning_fit_accepts_in_memory_batches(tmp_path):
    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(64, 1)
            self.first_labels = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            if batch_idx == 0:
                self.first_labels.append(y[:8].tolist())
            return self.layer(x.flatten(1)).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", self.layer(batch[0].flatten(1)).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    probe = Probe()
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, default_root_dir=tmp_path,
    )
    trainer.fit(probe, datamodule=VAEDataModule("digits", data_dir="unused", batch_size=256))
    assert trainer.num_training_batches == 7 and len(probe.first_labels) == 2
    assert probe.first_labels[0] != probe.first_labels[1]  # a new order each epoch
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)  # only primitives were stored
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 2, "seed": 42, "batch": 0}]

