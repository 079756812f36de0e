"""Resumable runs: RNG state inside every checkpoint, atomic checkpoint files, a last.ckpt on SIGTERM/SIGINT.

Together with Lightning's own checkpoint state (weights, optimizer, scheduler, loop counters, ModelCheckpoint
bookkeeping) and the in-memory batches' position in their epoch, a run resumed from a checkpoint takes exactly
the steps the uninterrupted run would have taken from that point.
"""

import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vae_lab import lightning_compat
from vae_lab.errors import CheckpointError
from vae_lab.io import DiskFullError, atomic_torch_save

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temp file, fsync'ed, then renamed: a crash or a full disk keeps the previous one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):  # remote filesystems: Lightning's own writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            atomic_torch_save(checkpoint, path)
        except DiskFullError as err:
            run_dir = Path(path).resolve().parent.parent
            raise CheckpointError(f"{err}; training stopped, continue later with resume={run_dir}") from None


def rng_state() -> dict[str, Any]:
    """Every global random stream training draws from, as tensors and plain Python values (weights_only-safe)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `rng_state` (a missing stream, e.g. CUDA in a CPU checkpoint, is left as it is)."""
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    """random.setstate wants tuples where a round trip may have produced lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def rebase_checkpoint_paths(checkpoint: dict[str, Any], callbacks: list) -> None:
    """Point the ModelCheckpoint state of a checkpoint written in another directory at this run's directory.

    A run copied or moved (`cp -a X Y`) and resumed at Y holds X's absolute paths: Lightning then drops its
    best-k bookkeeping but keeps `best_model_path`, so the final metrics and artifact would come from X's
    checkpoint, which may belong to a new run by now. Each path under the old `dirpath` moves to the new one.
    """
    states = checkpoint.get("callbacks") or {}
    for callback in callbacks:
        state = states.get(getattr(callback, "state_key", None))
        old, new = (state or {}).get("dirpath"), getattr(callback, "dirpath", None)
        if not (isinstance(old, str) and new and old != new):
            continue
        move = lambda p: str(Path(new) / Path(p).relative_to(old)) if (  # noqa: E731
            isinstance(p, str) and p and Path(p).is_relative_to(old)) else p
        for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if key in state:
                state[key] = move(state[key])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
        state["dirpath"] = new


class Resumable(L.Callback):
    """Makes a run resumable: RNG state in checkpoints, atomic checkpoint writes, a checkpoint on SIGTERM/SIGINT.

    On SIGTERM (Lightning's handler, which also serves SLURM) or a first Ctrl-C the run finishes the current
    step, saves `<checkpoint_dir>/last.ckpt` and exits with 128 + the signal number; a second Ctrl-C aborts at
    once. The checkpoint is taken after the step (the point Lightning's step checkpoints use) unless a
    checkpoint of that step is already on disk, or, when the signal lands during validation, where Lightning
    raised its SIGTERMException (that validation is then redone on resume).
    """

    def __init__(self, checkpoint_dir: str | Path):
        self.checkpoint_dir = Path(checkpoint_dir)
        self._signal: int | None = None  # the signal that asked the run to stop
        self._saved_step: int | None = None  # global step of the checkpoint written for that request
        self._previous_sigint: Any = None
        self._trainer: L.Trainer | None = None
        self._phase = "idle"  # batch_end: after a step's update, before its validation; validating: inside it
        self._redo_step: int | None = None  # global step of a restored checkpoint whose validation is redone
        self._max_steps: int | None = None  # trainer's max_steps while a final-step validation is redone

    @property
    def state_key(self) -> str:
        return "Resumable"

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(), "pending_validation": self._validation_pending()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Called while Lightning restores a checkpoint, before the first resumed step draws any noise.
        set_rng_state(state_dict["rng"])

    def _validation_pending(self) -> bool:
        """Whether a checkpoint taken now precedes the end of a validation due at this step (it must be redone)."""
        if self._phase == "validating":
            return True
        trainer = self._trainer
        if self._phase != "batch_end" or trainer is None:
            return False
        # Lightning's own test, the one it applies right after on_train_batch_end (where step checkpoints are taken)
        return lightning_compat.should_check_val(trainer)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # A checkpoint taken after step G's update but before G's validation ended (a step checkpoint, or a signal
        # inside that validation): Lightning would skip that validation on resume (it assumes it ran), so the
        # published metrics and best checkpoint would miss it. Rewrite the loop counters to Lightning's
        # "restarted mid-evaluation" state, with the validation's progress at zero: it is redone whole.
        rebase_checkpoint_paths(checkpoint, trainer.checkpoint_callbacks)
        loops = lightning_compat.fit_loop_state(checkpoint)
        if not (checkpoint.get("callbacks", {}).get(self.state_key) or {}).get("pending_validation"):
            if trainer.max_steps != -1 and checkpoint["global_step"] >= trainer.max_steps \
                    and lightning_compat.saved_inside_epoch(loops):
                # Saved inside the epoch loop (a step or validation end), before Lightning's end-of-step
                # `_batches_that_stepped += 1`, which a resumed loop replays but a finished run (fit skipped) never
                # reaches: the final validation would be logged at the last validation's step again.
                lightning_compat.count_last_step(loops)
            return
        lightning_compat.redo_validation(loops)
        self._redo_step = int(checkpoint["global_step"])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # the private Lightning names used here, checked once per fit
            lightning_compat.check(trainer, lightning_compat.RESUME)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # leave special strategies' IO alone
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signal, self._saved_step, self._trainer = None, None, trainer
        loop = trainer.fit_loop.epoch_loop
        if self._redo_step is not None and loop.max_steps != -1 and self._redo_step >= loop.max_steps:
            # max_steps reached: Lightning would not enter the loop; one more allowed step lets it run the redone
            # validation (advance returns before training), and on_validation_end restores the limit
            self._max_steps, loop.max_steps = loop.max_steps, self._redo_step + 1
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._phase = "idle"

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._phase = "validating"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # runs before ModelCheckpoint's (Lightning orders checkpoint callbacks last): its save sees no pending work
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._phase, self._redo_step = "idle", None
            if self._max_steps is not None:
                trainer.fit_loop.epoch_loop.max_steps, self._max_steps = self._max_steps, None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._signal = signum
        signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)  # 2nd Ctrl-C: abort now
        print("\nInterrupted: saving a checkpoint after this step (Ctrl-C again to abort at once)",
              file=sys.stderr, flush=True)
        # Lightning's SIGTERM handler raises SIGTERMException at the next safe point (synchronised across ranks).
        handler = signal.getsignal(signal.SIGTERM)
        if callable(handler):
            handler(signal.SIGTERM, frame)

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        return self._signal is not None or trainer.received_sigterm

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._phase = "batch_end"
        # One process: save right after the step. Under DDP the ranks agree on stopping only at Lightning's
        # broadcast, so the checkpoint (a collective call) waits for on_exception.
        if trainer.world_size == 1 and self._stop_requested(trainer) and self._saved_step is None:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        signum = self._signal or signal.SIGTERM
        if trainer.state.fn == TrainerFn.FITTING and self._saved_step is None:
            if self._last_on_disk() == trainer.global_step:  # ModelCheckpoint already saved this step: keep it
                self._saved_step = trainer.global_step
            else:
                self._save(trainer)
        exception.code = 128 + int(signum)  # the shell's convention for "killed by this signal", not success
        if trainer.is_global_zero:
            name = signal.Signals(signum).name
            print(f"stopped by {name} at step {self._saved_step}: saved {self.checkpoint_dir / LAST}; continue with "
                  f"python train.py <same overrides> resume={self.checkpoint_dir.parent}", file=sys.stderr, flush=True)

    def _last_on_disk(self) -> int | None:
        """The global step of the last.ckpt on disk (tensors memory-mapped, not read), if any."""
        try:
            return int(torch.load(self.checkpoint_dir / LAST, map_location="cpu", weights_only=True,
                                  mmap=True)["global_step"])
        except Exception:
            return None

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.checkpoint_dir / LAST, weights_only=False)  # the full training state
        self._saved_step = trainer.global_step
