"""Signals after training: SIGTERM or Ctrl-C in the final phases stop the run with one line and 128 + the signal.

During training a signal is the Resumable callback's (a last.ckpt of the current step). After it, each phase is
either atomic or redone on resume: every file is written atomically (vae_lab.io, the artifact's swap), so a signal
stops the run at once and `resume=<run dir>` redoes what follows training (final validation and test, pictures,
metrics.json, artifact); a signal during the push leaves the complete artifact and prints the push command.

Test hook: VAE_LAB_SIGNAL_AT=<phase>:<SIGNAL> (e.g. validation:SIGTERM) makes the run send itself that signal when
it enters that phase (PHASES lists the names), the way a scheduler's signal would land there.
"""

import os
import signal
import threading
from typing import Any

import lightning as L

from vae_lab.startup import exit_interrupted

SIGNAL_AT_ENV = "VAE_LAB_SIGNAL_AT"
PHASES = {  # name -> what the line calls it
    "pictures": "the end-of-training pictures",
    "validation": "the final validation",
    "test": "the final test",
    "disentanglement": "the disentanglement scores",
    "metrics": "writing metrics.json",
    "artifact": "writing the artifact",
    "push": "the push to the Hub",
}


class Interrupted(BaseException):
    """A signal stopped the run after training (BaseException: no picture's or push's `except Exception` swallows
    it); `code` is the shell's 128 + the signal number."""

    def __init__(self, signum: int, phase: str):
        self.signum, self.phase = int(signum), phase
        self.code = 128 + self.signum
        super().__init__(f"interrupted by {signal.Signals(self.signum).name} during {PHASES.get(phase, phase)}")


class Phases(L.Callback):
    """Tracks the phase of the end of a run and turns SIGTERM / SIGINT after training into Interrupted.

    Before training SIGTERM ends the process as by default, and SIGINT prints one line and exits 130
    (vae_lab.startup). During fit the signals are Lightning's and the Resumable callback's (a stop during
    training saves last.ckpt); one that lands at the end of fit, while the pictures are drawn, skips the remaining
    pictures (they check `trainer.received_sigterm`), lets Lightning save the final last.ckpt, and is recorded
    here (`received`). From the final validation on, either signal raises Interrupted at once.
    """

    def __init__(self):
        self.mode = "default"  # default | training | finishing
        self.phase: str | None = None
        self.received: int | None = None  # the first signal seen during fit

    def install(self) -> None:
        """This process's SIGTERM and SIGINT handlers (main thread only: Python allows no other)."""
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(signum) != self._handle:
                    signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.mode == "finishing":
            raise Interrupted(signum, self.phase or "the end of the run")
        if self.mode == "training" and signum == signal.SIGTERM:
            self.received = self.received or signum  # Lightning's handler, which called this one, stops training
            return
        if signum == signal.SIGINT and self.mode == "default":
            exit_interrupted(signum)  # start-up: one line, exit 130 (a KeyboardInterrupt inside fit's set-up is lost)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C during training: abort now
        signal.signal(signum, signal.SIG_DFL)  # not started yet: end the process as if no handler were set
        os.kill(os.getpid(), signum)

    def enter(self, phase: str) -> None:
        """Mark the start of `phase` (a key of PHASES); from now on a signal raises Interrupted."""
        self.mode, self.phase = "finishing", phase
        self.install()  # Lightning and Resumable put theirs back when fit ends
        wanted, _, name = os.environ.get(SIGNAL_AT_ENV, "").partition(":")
        if wanted == phase:
            os.kill(os.getpid(), getattr(signal, name or "SIGTERM"))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.mode, self.received = "training", None
        if threading.current_thread() is threading.main_thread():
            resumable = signal.getsignal(signal.SIGINT)  # the Resumable callback's (installed at on_fit_start)

            def record_sigint(signum: int, frame: Any) -> None:
                self.received = self.received or signum
                if callable(resumable):
                    resumable(signum, frame)

            signal.signal(signal.SIGINT, record_sigint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.phase = "pictures"
        wanted, _, name = os.environ.get(SIGNAL_AT_ENV, "").partition(":")
        if wanted == "pictures":
            os.kill(os.getpid(), getattr(signal, name or "SIGTERM"))
