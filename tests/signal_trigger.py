"""A step-exact fault for CLI tests: `+callbacks.fault._target_=signal_trigger.SignalAt` sends a signal to the run
itself at one exact point (a training step's end, or the first batch of the validation at a step), once."""

import os
import signal

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn


class SignalAt(L.Callback):
    """Send `sig` (a name: SIGTERM, SIGKILL, ...) to this process at global step `step`, in `phase`.

    phase: `train` (after the step's optimizer update), `validation` (after the first batch of the in-fit
    validation at that step), `final` (at the start of the end-of-training validation).
    """

    def __init__(self, step: int, phase: str = "validation", sig: str = "SIGTERM"):
        self.step, self.phase, self.sig = int(step), phase, getattr(signal, sig)
        self._sent = False

    def _send(self) -> None:
        if not self._sent:
            self._sent = True
            os.kill(os.getpid(), self.sig)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.phase == "train" and trainer.global_step == self.step:
            self._send()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if (self.phase == "validation" and trainer.state.fn == TrainerFn.FITTING and batch_idx == 0
                and trainer.global_step == self.step):
            self._send()

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.phase == "final" and trainer.state.fn == TrainerFn.VALIDATING:
            self._send()
