"""The LightningModule: one shared step for train/val/test, optimizers, logging. Orchestration only."""

from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MeanMetric

from vae_lab.metrics import bits_per_dim
from vae_lab.model import VAE
from vae_lab.objectives import build_objective
from vae_lab.schedules import build_scheduler, kl_warmup_factor

STAGES = ("train", "val", "test")


class VAEModule(L.LightningModule):
    """Trains a VAE on an objective.

    Every init arg is a primitive (dicts of numbers and strings), so checkpoints load with weights_only=True.

    Args:
        model: init args of `VAE`.
        objective: `name` (elbo | iwae), `num_samples` (z samples per example) and the objective's coefficients.
        optimizer: a Hydra config with `_target_` (e.g. torch.optim.AdamW) and its arguments, minus `params`.
        scheduler: `name` in schedules.SCHEDULERS and its arguments, or None for a constant learning rate.
        kl_warmup_steps: linear KL warm-up length in optimizer steps (0: none).
        kl_warmup_epochs: the same in epochs (converted to steps at the start of training); used if > 0.
    """

    def __init__(
        self,
        model: dict,
        objective: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        kl_warmup_steps: int = 0,
        kl_warmup_epochs: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = VAE(**model)
        objective = dict(objective)
        self.num_samples = int(objective.pop("num_samples", 1))
        self.objective = build_objective(**objective)
        self.kl_warmup_steps = kl_warmup_steps
        self.terms = ["elbo", "distortion", "rate"] + (["iwae"] if objective["name"] == "iwae" else [])
        # sum + count states: exact means across batches of any size and across DDP ranks
        # keyed "<stage>_metrics": a ModuleDict key may not shadow nn.Module.train
        self.means = nn.ModuleDict(
            {f"{s}_metrics": nn.ModuleDict({t: MeanMetric() for t in self.terms + ["bits_per_dim"]}) for s in STAGES}
        )

    @property
    def kl_weight(self) -> float:
        return kl_warmup_factor(self.global_step, self.kl_warmup_steps)

    def on_fit_start(self) -> None:
        epochs = self.hparams.kl_warmup_epochs
        if epochs and epochs > 0:
            self.kl_warmup_steps = int(round(epochs * self.trainer.num_training_batches))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, y)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        y = y if self.model.conditional else None
        q_z = self.model.encode(x, y)
        z = q_z.rsample((self.num_samples,))  # (K, B, D)
        p_x = self.model.decode(z, y)  # batch shape (K, B)
        kl_weight = self.kl_weight
        out = self.objective(q_z, self.model.prior(), z, p_x, x, kl_weight=kl_weight)

        bound = out.terms.get("iwae", out.terms["elbo"])
        num_dims = x[0].numel()
        values = dict(out.terms, bits_per_dim=bits_per_dim(bound, num_dims, self.model.likelihood.discrete_targets))
        on_step = stage == "train"
        for name, value in values.items():
            metric = self.means[f"{stage}_metrics"][name]
            metric.update(value.detach())
            # the metric object is logged, so Lightning reduces sum/count at epoch end; no per-step host sync
            self.log(f"{stage}/{name}_nats" if name != "bits_per_dim" else f"{stage}/{name}", metric,
                     on_step=False, on_epoch=True, prog_bar=(name == "elbo" and stage == "val"))
        self.log(f"{stage}/loss", out.loss.detach(), on_step=on_step, on_epoch=not on_step, prog_bar=on_step,
                 batch_size=x.shape[0])
        if on_step:
            self.log("train/kl_weight", kl_weight, on_step=True, on_epoch=False)
        return out.loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer, params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = build_scheduler(optimizer, total_steps=int(self.trainer.estimated_stepping_batches),
                                    **self.hparams.scheduler)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
