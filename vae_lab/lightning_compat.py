"""Every private Lightning name vae_lab relies on, in one place, and `check` that each is still there.

Why private names at all: the fast path they serve is measured. Steps per call with DirectStep gave 1.07-1.18x the
images/s of steps_per_call=1 on the MLP (docs/performance.md, column a/s), and DirectStep's hook-name shortcut is
4.6 -> 0.6 us a hook. A Lightning upgrade that renames one of them would not fail: a write would land on a dead
attribute (the loggers' x axis, the hook `self.log` credits) or a test would answer wrongly. `check` turns that
into one line at the start of a fit; tests/integration/test_lightning_compat.py checks each name's behaviour on a
live Trainer, tests/unit/test_lightning_compat_static.py that no other vae_lab file names them.

Nothing here imports Lightning at module level: the entry points import this module for the warning patterns.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vae_lab.errors import VaeLabError

# What the suite ran on (tests/unit/test_lightning_compat_static.py checks pyproject.toml's range and
# constraints.txt's pin against these). 2.6.2 and 2.6.3 were malicious uploads to PyPI.
SUPPORTED = ">=2.6.0,!=2.6.2,!=2.6.3,<=2.6.6"
RAN_ON = ("2.6.0", "2.6.1", "2.6.6")  # 2.5.6 fails: its Trainer.fit takes no weights_only
PIN = "2.6.6"

# Lightning's warnings vae_lab silences, each with the module that emits it (the test reads that module's source).
# VAEModule (vae_lab/lit_module.py): steps per call use the `dataloader_iter` flavour on purpose; covered by
# tests/integration/test_steps_per_call.py.
DATALOADER_ITER_WARNINGS = (
    (r"You are using the `dataloader_iter` step flavor", "lightning.pytorch.trainer.configuration_validator"),
    (r"Found `dataloader_iter` argument in the `training_step`", "lightning.pytorch.loops.utilities"),
)
# vae_lab/cli/__init__.py: torch's notice, raised from Lightning's own pytree use on every fit; users cannot act on it.
PYTREE_WARNINGS = ((r".*isinstance\(treespec, LeafSpec\).*", "torch.utils._pytree"),)

CURRENT_FX_NAME = "_current_fx_name"
"""LightningModule's name of the hook running now, read by `self.log`: DirectStep._call (vae_lab/direct_step.py)
sets it around the hooks it calls, in the module's __dict__ (a plain attribute)."""


def module_state(module) -> dict:
    """The dict holding `module._current_fx_name`: DirectStep binds it once per fit and writes the hook's name there,
    without nn.Module.__setattr__'s checks (4.6 us -> 0.6 us a hook)."""
    return vars(module)


def module_fabric(module):
    """`module._fabric`: not None when the module runs under Fabric; DirectStep.for_module keeps Lightning's route."""
    return module._fabric


def optim_step_progress(trainer):
    """The manual loop's optimizer-step progress (global_step under manual optimisation): DirectStep.step
    increments it as LightningOptimizer.step does."""
    return trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress


def add_batches_that_stepped(trainer, n: int) -> None:
    """`epoch_loop._batches_that_stepped += n` (the loggers' step, log_every_n_steps' count): VAEModule._training_call
    counts a call's optimizer steps, not the call."""
    trainer.fit_loop.epoch_loop._batches_that_stepped += n


def should_check_val(trainer) -> bool:
    """Lightning's own test, right after on_train_batch_end, of whether this step validates
    (`epoch_loop._should_check_val_fx(fit_loop._data_fetcher)`): Resumable._validation_pending."""
    loop = trainer.fit_loop
    return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))


def fit_loop_state(checkpoint: dict) -> dict:
    """`checkpoint["loops"]["fit_loop"]`, the loop counters the functions below rewrite (Resumable.on_load_checkpoint)."""
    return checkpoint["loops"]["fit_loop"]


def saved_inside_epoch(fit_state: dict) -> bool:
    """Whether the checkpoint was saved inside an epoch (epoch started, not processed): Resumable.on_load_checkpoint."""
    epoch = fit_state["epoch_progress"]["current"]
    return epoch["processed"] < epoch["started"]


def count_last_step(fit_state: dict) -> None:
    """The end-of-step `_batches_that_stepped += 1` a saved state lacks: Resumable.on_load_checkpoint."""
    fit_state["epoch_loop.state_dict"]["_batches_that_stepped"] += 1


def redo_validation(fit_state: dict) -> None:
    """Lightning's "restarted mid-evaluation" state: the step's hooks finished, this validation's progress at zero,
    so Lightning reruns it whole (Resumable.on_load_checkpoint)."""
    train = fit_state["epoch_loop.batch_progress"]
    for part in ("total", "current"):  # the step's hooks had finished: completed == processed
        train[part]["completed"] = train[part]["processed"]
    val = fit_state["epoch_loop.val_loop.batch_progress"]
    done = val["total"]["completed"]
    val["total"] = {"ready": done + 1, "started": done + 1, "processed": done, "completed": done}
    val["current"] = {"ready": 0, "started": 0, "processed": 0, "completed": 0}
    val["is_last_batch"] = False


# -- the check ------------------------------------------------------------------------------------------------------

FAST = "fast"  # DirectStep and steps per call (vae_lab/direct_step.py, VAEModule._training_call)
RESUME = "resume"  # Resumable (vae_lab/callbacks/resumable.py)


@dataclass(frozen=True)
class Relied:
    """One private name, the vae_lab code that relies on it, and a probe of it on a live trainer and module."""

    name: str
    used_by: str
    group: str
    probe: Callable[[Any, Any], bool]


def _has_method(obj: Any, name: str, params: int) -> bool:
    import inspect

    fn = getattr(obj, name, None)
    if not callable(fn):
        return False
    try:
        return len(inspect.signature(fn).parameters) == params
    except (TypeError, ValueError):
        return False


def _plain_attribute(obj: Any, name: str) -> bool:
    """In the instance's __dict__, no descriptor of that name on its class (so a write there is what a setattr does)."""
    return name in vars(obj) and not any(name in vars(k) for k in type(obj).__mro__)


def _fit_state_keys(trainer: Any, _module: Any) -> bool:
    state = trainer.fit_loop.state_dict()
    progress = ("total", "current")
    return (
        {"processed", "started"} <= set(state["epoch_progress"]["current"])
        and isinstance(state["epoch_loop.state_dict"]["_batches_that_stepped"], int)
        and all({"completed", "processed"} <= set(state["epoch_loop.batch_progress"][p]) for p in progress)
        and {"total", "current", "is_last_batch"} <= set(state["epoch_loop.val_loop.batch_progress"])
    )


REQUIRED: tuple[Relied, ...] = (
    Relied("LightningModule._current_fx_name", "DirectStep._call", FAST,
           lambda t, m: _plain_attribute(m, CURRENT_FX_NAME)),
    Relied("LightningModule._fabric", "DirectStep.for_module", FAST, lambda t, m: hasattr(m, "_fabric")),
    Relied("fit_loop.epoch_loop.manual_optimization.optim_step_progress", "DirectStep.step", FAST,
           lambda t, m: all(_has_method(optim_step_progress(t), f, 0)
                            for f in ("increment_ready", "increment_completed"))),
    Relied("fit_loop.epoch_loop._batches_that_stepped", "VAEModule._training_call", FAST,
           lambda t, m: isinstance(vars(t.fit_loop.epoch_loop).get("_batches_that_stepped"), int)),
    Relied("fit_loop.epoch_loop._should_check_val_fx", "Resumable._validation_pending", RESUME,
           lambda t, m: _has_method(t.fit_loop.epoch_loop, "_should_check_val_fx", 1)),
    Relied("fit_loop._data_fetcher", "Resumable._validation_pending", RESUME,
           lambda t, m: "_data_fetcher" in vars(t.fit_loop)),
    Relied("the fit loop's checkpoint state (epoch_progress, epoch_loop.batch_progress, "
           "epoch_loop.val_loop.batch_progress, epoch_loop.state_dict._batches_that_stepped)",
           "Resumable.on_load_checkpoint", RESUME, _fit_state_keys),
)

# The names above as vae_lab's code would spell them (attributes; checkpoint keys): no other file of the package
# may (tests/unit/test_lightning_compat_static.py scans vae_lab/ for them, and for any `._name` on a Lightning object).
PRIVATE_ATTRIBUTES = ("_current_fx_name", "_fabric", "manual_optimization", "optim_step_progress",
                      "_batches_that_stepped", "_should_check_val_fx", "_data_fetcher")
CHECKPOINT_KEYS = ("epoch_progress", "epoch_loop.batch_progress", "epoch_loop.val_loop.batch_progress",
                   "epoch_loop.state_dict", "_batches_that_stepped")


class LightningChangedError(VaeLabError):
    """A private Lightning name vae_lab relies on is gone or changed (a Lightning version outside SUPPORTED)."""


def check(trainer, group: str, off_switch: str | None = None) -> None:
    """Raise one line if a name of `group` is gone or changed on this trainer and its module; once per fit.

    Args:
        off_switch: the setting that takes the code relying on these names out of the run (named in the message).
    """
    import lightning

    module = trainer.lightning_module
    for relied in REQUIRED:
        if relied.group != group:
            continue
        try:
            ok = relied.probe(trainer, module)
        except Exception:  # a probe that cannot even run: the name's owner moved
            ok = False
        if not ok:
            fix = f"pin lightning=={PIN}" + (f" or set {off_switch}" if off_switch else "")
            what = "vae_lab's fast path supports" if group == FAST else "vae_lab's resumable runs support"
            raise LightningChangedError(
                f"Lightning {lightning.__version__} changed {relied.name} (used by {relied.used_by}): {what} "
                f"Lightning {SUPPORTED} (ran on {', '.join(RAN_ON)}); {fix}"
            )
