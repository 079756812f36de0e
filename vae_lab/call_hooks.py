"""Steps per call (`schedule.steps_per_call` > 1): which callback hooks run once per call, not once per step.

One Lightning training step then takes several optimizer steps (VAEModule._training_call): `on_before_backward`,
`on_after_backward` and `on_before_optimizer_step` still run at every optimizer step, `on_train_batch_start/end`
once per call with its last batch. vae_lab's and Lightning's callbacks know it; a user's is warned at fit start.
"""

import lightning as L

PER_CALL_HOOKS = ("on_train_batch_start", "on_train_batch_end")
_KNOWING = ("vae_lab.", "lightning.", "pytorch_lightning.")  # modules whose callbacks are written for steps per call


def _user_override(callback: L.Callback, hook: str) -> bool:
    """Whether the class that defines `hook` for this callback is a user's (not L.Callback's no-op, not vae_lab's or
    Lightning's, e.g. a user's subclass of ModelCheckpoint that leaves the hook alone)."""
    owner = next(k for k in type(callback).__mro__ if hook in vars(k))
    return owner is not L.Callback and not owner.__module__.startswith(_KNOWING)


def per_call_hooks_note(callbacks: list, steps_per_call: int) -> str | None:
    """One line naming the user callbacks (neither vae_lab's nor Lightning's) whose on_train_batch_start/end run once
    per call of several optimizer steps, not once per step, and the fix; None when there are none."""
    if steps_per_call <= 1:
        return None
    hooks = [f"{type(cb).__name__}.{hook}" for cb in callbacks for hook in PER_CALL_HOOKS if _user_override(cb, hook)]
    if not hooks:
        return None
    return (f"{', '.join(hooks)} run once per call of schedule.steps_per_call={steps_per_call} optimizer steps, "
            "not at every step: set schedule.steps_per_call=1, or do per-step work in on_before_optimizer_step "
            "(which runs at every step)")
