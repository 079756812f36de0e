"""The non-finite guard in a real fit: a poisoned step leaves weights and optimizer state bit-identical and is
counted."""

import lightning as L
import torch

from vae_lab.build import build_datamodule, build_module, build_trainer
from vae_lab.callbacks.nonfinite import NonFiniteGuard


def snapshot(module: L.LightningModule, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every weight and every optimizer state tensor (Adam's moments and step), cloned."""
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return [t.detach().clone() for t in [*module.parameters(), *state]]


class Probe(L.Callback):
    """Records, per global step, whether the step left weights and optimizer state bit-identical."""

    def __init__(self):
        self.unchanged: dict[int, bool] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = snapshot(pl_module, trainer.optimizers[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = snapshot(pl_module, trainer.optimizers[0])
        same = len(after) == len(self._before) and all(torch.equal(a, b) for a, b in zip(self._before, after))
        self.unchanged[trainer.global_step] = same


def test_poisoned_steps_are_skipped_bit_exactly_and_counted(tmp_path, compose):
    """A poisoned step leaves weights and optimizer state bit-identical and is counted; the run goes on."""
    cfg = compose(f"paths.output_dir={tmp_path}", "logger=none", "callbacks=none", "trainer.max_steps=12",
                  "trainer.max_epochs=-1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                  "trainer.limit_val_batches=0", "schedule.steps_per_call=1",  # the probe looks at every step's weights
                  # train/nonfinite_steps is a step value: logged on the steps Lightning writes
                  "trainer.log_every_n_steps=4")
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.spec)
    guard, probe = NonFiniteGuard(max_consecutive=3, inject_nan_at_steps=[4, 7, 8]), Probe()
    trainer = build_trainer(cfg, extra_callbacks=[guard, probe])
    trainer.fit(module, datamodule=datamodule)

    assert trainer.global_step == 12  # skipped steps still count as steps
    # the batch served at global step s becomes step s + 1: steps 5, 8 and 9 are the poisoned ones
    assert {step for step, same in probe.unchanged.items() if same} == {5, 8, 9}
    assert guard.skipped == 3 and guard.consecutive == 0
    assert float(trainer.callback_metrics["train/nonfinite_steps"]) == 3.0
    assert all(torch.isfinite(p).all() for p in module.parameters())
