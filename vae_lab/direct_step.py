"""Lightning's manual-optimisation route for one optimizer step, with its per-step dispatch resolved once per fit.

`LightningModule.manual_backward` + `LightningOptimizer.step` run, per step: the strategy's and the precision plugin's
pre/post-backward, six hook dispatches (`on_before_backward`, `on_after_backward`, `on_before_optimizer_step`, each on
every callback and on the module, each inside a profiler context), the optimizer wrapper's closure, and the manual
loop's progress counters: about 0.5-1 ms per step on the 2-core dev VM, as much as a trivial model's whole step in a
hand-written loop. Under steps per call that cost, not the call's, is what was left.

`DirectStep` takes the same step with the same hooks in the same order, but calls only the hooks a callback or the
module actually overrides, found once per fit, and steps the torch optimizer itself. It is used only where Lightning's
route does nothing else: one device (`SingleDeviceStrategy`), float32 or bf16-mixed precision (no loss scaler), no
profiler, the module's own `backward` not overridden. Everywhere else (DDP, fp16 loss scaling, a profiler, ...)
`DirectStep.for_module` returns None and the caller keeps Lightning's route: the numbers are the same either way
(tests/integration/test_steps_per_call.py checks weights, optimizer state and logs bit for bit).
"""

from contextlib import AbstractContextManager, nullcontext
from functools import partial
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy

from vae_lab import lightning_compat

HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
_NO_CONTEXT = nullcontext()
_FX = lightning_compat.CURRENT_FX_NAME  # bound once: the hot path does no lookup in the seam


class QuietProfiler(PassThroughProfiler):
    """Lightning's default profiler (profiles nothing), with a free context per profiled action.

    Lightning enters `profiler.profile(name)` around every hook it calls, on every callback, every step: the default
    profiler's context is a generator-based context manager that costs ~3 us a time on the dev CPU: with vae_lab's
    11 callbacks a hook dispatch took ~81 us (six per step with steps per call off), with this one ~48 us. It
    returns one reusable null context. train.py passes it when no `trainer.profiler` is set.
    """

    def profile(self, action_name: str) -> AbstractContextManager:
        return _NO_CONTEXT


def _overrides(obj: Any, base: type, name: str) -> bool:
    return getattr(type(obj), name, None) is not getattr(base, name)


def lightning_to_device(trainer: "L.Trainer", batch):
    """A batch pulled from `dataloader_iter` through what Lightning does to a batch it fetches itself."""
    return trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))


def _transfer_returns_device_batches(datamodule: "L.LightningDataModule") -> bool:
    """Whether the datamodule's transfer_batch_to_device returns a batch already on the device as it is: Lightning's
    own does, and so does vae_lab's."""
    from vae_lab.data.datamodule import VAEDataModule

    hook = type(datamodule).transfer_batch_to_device
    return hook is L.LightningDataModule.transfer_batch_to_device or hook is VAEDataModule.transfer_batch_to_device


class DirectStep:
    """backward(loss) and step(optimizer) for one module's fit: Lightning's manual route without its dispatch."""

    def __init__(self, trainer: "L.Trainer", module: "L.LightningModule"):
        self.module = module
        # name -> the hooks to call with the hook's own arguments, callbacks first then the module, as Lightning
        # orders them (a callback's hook also takes the trainer and the module)
        self.hooks: dict[str, list] = {}
        for name in HOOKS:
            self.hooks[name] = [partial(getattr(cb, name), trainer, module)
                                for cb in trainer.callbacks if _overrides(cb, L.Callback, name)]
            if _overrides(module, L.LightningModule, name):
                self.hooks[name].append(getattr(module, name))
        self.trainer = trainer
        # where self.log inside a hook reads the hook's name (lightning_compat.module_state)
        self.module_state = lightning_compat.module_state(module)
        self.device = trainer.strategy.root_device
        # A batch already on the device passes Lightning's transfer hooks unchanged unless a hook is overridden (the
        # datamodule's own transfer_batch_to_device returns such a batch as it is).
        datamodule = trainer.datamodule
        self.transfer_hooks = _overrides(module, L.LightningModule, "transfer_batch_to_device") or any(
            _overrides(obj, base, "on_after_batch_transfer")
            for obj, base in ((module, L.LightningModule), (datamodule, L.LightningDataModule)) if obj is not None
        ) or (datamodule is not None and not _transfer_returns_device_batches(datamodule))
        # the manual loop's progress: global_step under manual optimisation counts its completed optimizer steps
        self.progress = lightning_compat.optim_step_progress(trainer)

    @classmethod
    def for_module(cls, module: "L.LightningModule") -> "DirectStep | None":
        """A DirectStep where Lightning's route would do nothing more than it does, else None (keep that route)."""
        trainer = module.trainer
        plugin = trainer.precision_plugin
        plain = type(plugin) is Precision or (type(plugin) is MixedPrecision and plugin.scaler is None)
        if (
            type(trainer.strategy) is SingleDeviceStrategy
            and plain
            and isinstance(trainer.profiler, PassThroughProfiler)
            and not _overrides(module, L.LightningModule, "backward")
            and lightning_compat.module_fabric(module) is None
        ):
            return cls(trainer, module)
        return None

    def to_device(self, batch):
        """`strategy.batch_to_device(precision_plugin.convert_input(batch))`: both leave a batch of tensors already on
        the device as it is when no transfer hook is overridden (the plugins here convert nothing)."""
        if not self.transfer_hooks and all(isinstance(t, torch.Tensor) and t.device == self.device for t in batch):
            return batch
        return lightning_to_device(self.trainer, batch)

    def _call(self, name: str, *args) -> None:
        hooks = self.hooks[name]
        if not hooks:
            return
        state = self.module_state
        # What self.log inside a hook reads. A plain attribute: written into the module's __dict__, as
        # nn.Module.__setattr__ ends up writing it, without its checks for parameters, buffers and submodules (4.6 us
        # a time with them; read, set and reset here ~0.3 us, against 1.4 us with object.__setattr__, on the dev CPU).
        previous = state[_FX]
        state[_FX] = name
        for fn in hooks:
            fn(*args)
        state[_FX] = previous

    def backward(self, loss: torch.Tensor) -> None:
        """`module.manual_backward(loss)` on one device without a loss scaler."""
        self._call("on_before_backward", loss)
        loss.backward()
        self._call("on_after_backward")

    def step(self, optimizer: torch.optim.Optimizer, counted: bool = True) -> None:
        """`lightning_optimizer.step()` (counted: as Lightning counts the global step) or, not counted,
        `strategy.optimizer_step(optimizer)`: the hooks, then the torch optimizer's step."""
        if counted:
            self.progress.increment_ready()
        self._call("on_before_optimizer_step", optimizer)
        optimizer.step()
        if counted:
            self.progress.increment_completed()
