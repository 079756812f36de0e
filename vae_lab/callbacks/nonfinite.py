"""Skip and count optimizer steps whose loss or gradients are not finite (and, as an option, whose gradient norm is
too large); stop after too many non-finite steps in a row."""

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from vae_lab.errors import ConfigError, VaeLabError


class NonFiniteError(VaeLabError):
    """Training produced non-finite losses or gradients for `guard.max_consecutive` steps in a row."""


def _host_sums(loss: torch.Tensor, tensors: list[torch.Tensor]) -> tuple[float, float]:
    """(loss, the sum of every element of `tensors`) as host floats: one float32 reduction per tensor, the sums added
    on the host in float64 (a sum of finite tensor sums never overflows there).

    Far cheaper than a max-|g| (inf-norm) reduction, which on a CPU cost as much as a small MLP's whole step. On a
    CPU each value is read as it is (fewer dispatches than stacking them first); on a GPU they are stacked and read
    with one sync per step, as AMP's GradScaler syncs.
    """
    values = [loss.float().reshape(()), *(t.sum(dtype=torch.float32) for t in tensors)]
    host = [v.item() for v in values] if loss.device.type == "cpu" else torch.stack(values).tolist()
    return host[0], sum(host[1:])


def _host_norm(loss: torch.Tensor, tensors: list[torch.Tensor]) -> tuple[float, float]:
    """(loss, the 2-norm of all of `tensors` as one vector) as host floats, read as _host_sums reads its sums.

    One fused `torch._foreach_norm` (a norm per tensor), combined on the host in float64: on the dev CPU as cheap as
    _host_sums' per-tensor sums (0.23 ms each on the MLP's 714k gradient values; torch's get_total_norm, which also
    stacks and reduces on the device, 0.38 ms), so the norm replaces the sums rather than adding to them. It is
    non-finite exactly when some element is, barring a per-tensor norm that overflows float32 (checked then).
    """
    norms = torch._foreach_norm(tensors) if tensors else []
    values = [loss.float().reshape(()), *norms]
    host = [v.item() for v in values] if loss.device.type == "cpu" else torch.stack(
        [v.float().to(loss.device) for v in values]).tolist()
    return host[0], math.sqrt(sum(n * n for n in host[1:]))


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def _first_optimizer(trainer: L.Trainer) -> torch.optim.Optimizer | None:
    optimizers = getattr(trainer, "optimizers", None)
    return optimizers[0] if optimizers else None


class NonFiniteGuard(L.Callback):
    """A step whose loss or gradients hold NaN/inf leaves the weights and optimizer state untouched.

    The check is one sum over all gradients (finite exactly when every gradient is, barring overflow, which is then
    checked element-wise) and the loss, with one host sync per step, as AMP's GradScaler does. A bad step's
    gradients are dropped (`grad = None`), so `optimizer.step()` changes neither weights nor moments; the step
    still counts (global_step, LR schedule). `train/nonfinite_steps` logs the running total. After
    `max_consecutive` bad steps in a row training stops with a NonFiniteError naming the step, the last finite
    numbers and the usual causes; checkpoints already written stay as they were.

    Gradient skipping (Child 2021, VDVAE): with `skip_grad_norm_above` set, a finite step whose gradient 2-norm
    (all parameters of the model's optimizer as one vector, before clipping) exceeds it is skipped the same way and
    counted apart (`train/grad_skips`; `train/grad_norm` logged too). The norm then replaces the sum as the
    finiteness check: the same one host read. A skipped update is a choice, not a failure: it never stops the run.

    Args:
        max_consecutive: bad steps in a row that stop the run (fp16 loss scaling skips a few steps at its start).
        inject_nan_at_steps: testing aid: fill the batch of these global steps with NaN.
        skip_grad_norm_above: skip finite updates whose gradient norm is above this (None: never).
    """

    def __init__(self, max_consecutive: int = 20, inject_nan_at_steps: Sequence[int] = (),
                 skip_grad_norm_above: float | None = None):
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ConfigError(f"guard.max_consecutive={max_consecutive!r} is invalid: must be an integer >= 1")
        steps = list(inject_nan_at_steps or ())
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps):
            raise ConfigError(f"guard.inject_nan_at_steps={steps!r} is invalid: must be a list of integers >= 0")
        threshold = skip_grad_norm_above
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold) or threshold <= 0):
            raise ConfigError(f"guard.skip_grad_norm_above={threshold!r} is invalid: must be a number > 0 (or null)")
        self.skip_grad_norm_above = None if threshold is None else float(threshold)
        self.grad_skips = 0  # finite updates skipped for their gradient norm (carried across resumes)
        self.max_consecutive = max_consecutive
        self.inject_nan_at_steps = frozenset(steps)
        self.skipped = 0  # bad steps so far (carried across resumes)
        self.consecutive = 0  # bad steps in a row, up to the current one
        self.last_finite: tuple[int, float] | None = None  # (global step, loss) of the latest good step
        self._loss: torch.Tensor | None = None

    @property
    def state_key(self) -> str:
        return "NonFiniteGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive, "grad_skips": self.grad_skips}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict["skipped"])
        self.consecutive = int(state_dict["consecutive"])
        self.grad_skips = int(state_dict.get("grad_skips", 0))  # absent from checkpoints written before it existed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if getattr(pl_module, "steps_per_call", 1) == 1:  # otherwise a call's batches come through on_call_batch
            self.on_call_batch(trainer, pl_module, batch)

    def on_call_batch(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        """The batch of the optimizer step about to be taken (VAEModule calls it for each step of a call)."""
        if trainer.global_step in self.inject_nan_at_steps:
            batch[0].fill_(float("nan"))  # x: a fresh copy per batch (index_select), safe to poison in place

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        loss = self._loss if self._loss is not None else torch.zeros((), device=grads[0].device if grads else None)
        # the norm only for the model's optimizer (a FactorVAE discriminator's gradients are on another scale)
        by_norm = self.skip_grad_norm_above is not None and optimizer is _first_optimizer(trainer)
        loss_value, grad_value = (_host_norm if by_norm else _host_sums)(loss, grads)
        # A NaN or inf element makes the sum (the norm) non-finite, so a finite one proves every gradient finite. A
        # non-finite one may still be an overflow of finite values (|g| near 1e38): only then are the elements checked.
        grads_finite = math.isfinite(grad_value) or _all_finite(grads)
        # Under DDP the gradients are already all-reduced (the same on every rank) while the loss is per rank:
        # decide on the gradients alone there, so every rank skips the same steps.
        finite = grads_finite and (trainer.world_size > 1 or math.isfinite(loss_value))
        too_large = by_norm and finite and not grad_value <= self.skip_grad_norm_above  # an overflowed norm too
        if finite:
            self.consecutive = 0
            self.last_finite = (trainer.global_step + 1, loss_value)  # this step, counted from 1
        else:
            self.skipped += 1
            self.consecutive += 1
        if too_large:
            self.grad_skips += 1
        if too_large or not finite:
            for p in params:
                p.grad = None  # optimizer.step() skips parameters without a gradient: weights and moments stay
        every = getattr(trainer, "log_every_n_steps", 1)  # a step-only value reaches the loggers that often only
        if getattr(trainer, "fast_dev_run", False) or (every > 0 and (trainer.global_step + 1) % every == 0):
            pl_module.log("train/nonfinite_steps", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)
            if by_norm:  # the norm before any clipping, also of a skipped step
                pl_module.log("train/grad_norm", float(grad_value), on_step=True, on_epoch=False, batch_size=1)
                pl_module.log("train/grad_skips", float(self.grad_skips), on_step=True, on_epoch=False,
                              batch_size=1)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteError(self._message(trainer))

    def _message(self, trainer: L.Trainer) -> str:
        step = trainer.global_step + 1  # the step being taken (global_step counts the finished ones)
        if self.last_finite is not None:
            last = f"last finite step {self.last_finite[0]}: train/loss={self.last_finite[1]:.6g}"
        else:
            last = "no finite step in this process"
        val = trainer.callback_metrics.get("val/elbo_nats")
        if val is not None:
            last += f", last validation val/elbo_nats={float(val):.6g}"
        checkpoints = sorted({str(p) for cb in trainer.checkpoint_callbacks
                              for p in (getattr(cb, "last_model_path", ""), getattr(cb, "best_model_path", "")) if p})
        kept = f"checkpoints kept as they were: {', '.join(checkpoints)}" if checkpoints else "no checkpoint yet"
        return (
            f"training stopped at step {step}: {self.consecutive} steps in a row had a non-finite loss or gradients "
            f"(skipped, {self.skipped} in total); {last}; typical causes: a learning rate too high (schedule.lr), "
            f"a too small Gaussian likelihood scale (model.likelihood_scale, model.likelihood_min_scale), fp16 "
            f"overflow (use bf16-mixed or 32-true precision), NaN/inf in the data; {kept}"
        )
