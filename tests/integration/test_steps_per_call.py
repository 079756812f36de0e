"""schedule.steps_per_call: N optimizer steps per Lightning call take exactly the steps of N = 1.

Bit-identical, not within a tolerance: the same batches, noise draws, hooks (non-finite guard, clipping) and LR /
KL schedules per optimizer step, so weights, optimizer state, global_step and every logged number agree exactly.
The digits data has 26 training batches per epoch at batch 64, not a multiple of 8: calls cross epoch ends.
(What the config refuses and what auto picks: tests/unit/test_steps_per_call_config.py.)
"""

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
STEPS = 60  # 2 epochs of 26 steps + 8: epoch-end validation twice; calls cut by epoch ends and log steps
RUN = [f"trainer.max_steps={STEPS}", "trainer.max_epochs=-1", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "print_config=false", "logger=csv", "callbacks=none",
       "trainer.log_every_n_steps=10"]


def fit(compose, tmp_path: Path, n: int, *overrides: str, callbacks: tuple = (),
        name: str | None = None) -> tuple[L.LightningModule, L.Trainer]:
    """The CLI's train() up to fit, keeping the module and trainer for inspection (`compose`: the integration tier's
    fixture)."""
    from vae_lab.build import build_datamodule, build_module, build_trainer, reliability_callbacks
    from vae_lab.config import validate

    out = tmp_path / (name or f"n{n}")
    cfg = compose(*RUN, f"schedule.steps_per_call={n}", *overrides)
    cfg.paths.output_dir = str(out)
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.spec)
    trainer = build_trainer(cfg, extra_callbacks=reliability_callbacks(cfg) + list(callbacks))
    trainer.fit(module, datamodule=datamodule)
    return module, trainer


def logged(trainer: L.Trainer) -> list[dict]:
    """Every row the CSV logger wrote: step metrics and epoch metrics, with their steps."""
    path = Path(trainer.logger.log_dir) / "metrics.csv"
    with path.open() as f:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def assert_same_training(a: tuple, b: tuple) -> None:
    (module_a, trainer_a), (module_b, trainer_b) = a, b
    assert trainer_a.global_step == trainer_b.global_step == STEPS
    assert trainer_a.current_epoch == trainer_b.current_epoch
    for (name, x), (_, y) in zip(module_a.state_dict().items(), module_b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    opt_a, opt_b = trainer_a.optimizers[0].state_dict(), trainer_b.optimizers[0].state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for key, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, opt_b["state"][key][name]), (key, name)
    rows_a, rows_b = logged(trainer_a), logged(trainer_b)
    assert any("train/elbo_nats" in row for row in rows_a) and any("val/elbo_nats" in row for row in rows_a)
    assert any("train/loss" in row for row in rows_a)
    assert rows_a == rows_b  # step and epoch metrics: the same values at the same steps


def test_eight_steps_per_call_train_exactly_as_one(compose, tmp_path):
    one, eight = fit(compose, tmp_path, 1), fit(compose, tmp_path, 8)
    assert one[0].automatic_optimization and not eight[0].automatic_optimization  # N = 1: Lightning's own loop
    assert_same_training(one, eight)
    steps = [int(r["step"]) for r in logged(eight[1]) if "train/loss" in r]
    assert steps == list(range(9, STEPS, 10))  # log_every_n_steps=10 counts optimizer steps, not calls


def test_clipping_kl_warmup_lr_schedule_and_a_nonfinite_step_are_per_optimizer_step(compose, tmp_path):
    extra = ["schedule=adamw_cosine_warmup", "schedule.gradient_clip_val=0.05", "schedule.kl_warmup_epochs=0",
             "schedule.kl_warmup_steps=30", "schedule.scheduler.warmup_steps=12", "schedule.batch_size=64",
             # step 27: mid-call in an epoch's first call (N = 8: steps 26..29, after the short call that ends epoch 0)
             "guard.inject_nan_at_steps=[5,27]"]
    one, eight = fit(compose, tmp_path, 1, *extra), fit(compose, tmp_path, 8, *extra)
    assert_same_training(one, eight)
    guard = next(cb for cb in eight[1].callbacks if cb.state_key == "NonFiniteGuard")
    assert guard.skipped == 2
    # N = 1: the Trainer clips; N = 8: the module clips (manual optimisation), at the same point of each step
    assert one[0].hparams.gradient_clip_val is None and eight[0].hparams.gradient_clip_val == 0.05


def test_factor_vae_takes_several_steps_per_call_exactly(compose, tmp_path):
    extra = ["loss=factor_vae", "loss.discriminator.hidden=32", "loss.discriminator.layers=2"]
    one, eight = fit(compose, tmp_path, 1, *extra), fit(compose, tmp_path, 8, *extra)
    assert_same_training(one, eight)
    disc_a, disc_b = one[1].optimizers[1].state_dict(), eight[1].optimizers[1].state_dict()
    for key, state in disc_a["state"].items():
        for name, value in state.items():
            assert torch.equal(value, disc_b["state"][key][name]), (key, name)


@pytest.mark.slow  # three training runs (once through train.py: ~1 min alone, ~3 min on the shared machine)
def test_resume_midway_with_eight_steps_per_call_matches_the_uninterrupted_run(compose, tmp_path):
    """A run stopped at step 40 (mid-epoch: batch 14 of 26) and resumed ends where the uninterrupted one does (each
    part a train() as train.py runs it)."""
    from vae_lab.cli.train import train

    common = ["schedule.steps_per_call=8", "trainer.max_epochs=-1", "callbacks=no_images",
              "callbacks.periodic_checkpoint.every_n_train_steps=8", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", "print_config=false", "logger=csv"]
    full, cut = tmp_path / "full", tmp_path / "cut"

    def run(run_dir: Path, *extra: str) -> None:
        train(compose(f"paths.output_dir={run_dir}", *common, *extra))

    run(full, "trainer.max_steps=64")
    # The first part stops at step 40 (a checkpoint step, mid-epoch); the resumed run takes it to 64.
    run(cut, "trainer.max_steps=40")
    ckpt = torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 40 and ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batch"] == 14
    run(cut, f"resume={cut}", "trainer.max_steps=64")
    a = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(cut / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 64
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    for key, state in a["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer_states"][0]["state"][key][name]), (key, name)


class StepHooks(L.Callback):
    """Records the per-step hooks of Lightning's manual route as they are called: loss, optimizer, the step count,
    and a value logged from one (what `self.log` inside a hook does must not change with the route)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls.append(("before_backward", trainer.global_step, loss.item(), pl_module._current_fx_name))

    def on_after_backward(self, trainer, pl_module):
        grads = sum(float(p.grad.sum()) for p in pl_module.parameters() if p.grad is not None)
        self.calls.append(("after_backward", trainer.global_step, grads, pl_module._current_fx_name))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        assert isinstance(optimizer, torch.optim.Adam)  # the torch optimizer, as Lightning passes it
        self.calls.append(("before_optimizer_step", trainer.global_step, None, pl_module._current_fx_name))
        if (trainer.global_step + 1) % trainer.log_every_n_steps == 0:
            pl_module.log("train/hook_value", float(trainer.global_step), on_step=True, on_epoch=False, batch_size=1)


def test_the_direct_step_takes_lightnings_manual_route_exactly(compose, tmp_path, monkeypatch):
    """Steps per call use DirectStep (Lightning's manual route resolved once per fit) where it applies; with it
    switched off, Lightning's own manual_backward / optimizer.step give the same hooks, weights, state and logs."""
    import vae_lab.lit_module as lit_module

    direct_hooks, route_hooks = StepHooks(), StepHooks()
    direct = fit(compose, tmp_path, 8, "schedule.gradient_clip_val=0.05", callbacks=(direct_hooks,), name="direct")
    assert direct[0]._direct is not None  # the plain case (one CPU, float32, no profiler) takes the direct route
    monkeypatch.setattr(lit_module.DirectStep, "for_module", classmethod(lambda cls, module: None))
    route = fit(compose, tmp_path, 8, "schedule.gradient_clip_val=0.05", callbacks=(route_hooks,), name="route")
    assert route[0]._direct is None
    assert_same_training(direct, route)
    assert len(direct_hooks.calls) == 3 * STEPS and direct_hooks.calls == route_hooks.calls
    assert any("train/hook_value" in row for row in logged(direct[1]))


def test_the_direct_step_is_not_taken_where_lightning_does_more(compose, tmp_path):
    """A profiler (or DDP, fp16 loss scaling, an overridden backward) keeps Lightning's route."""
    module, trainer = fit(compose, tmp_path, 8, "+trainer.profiler=simple", "trainer.max_steps=8")
    assert module._direct is None and trainer.global_step == 8


def test_train_py_profiles_nothing_at_no_cost_unless_a_profiler_is_set(compose, tmp_path):
    """The default profiler is QuietProfiler (Lightning's pass-through, one reusable null context per action);
    `trainer.profiler` set by the user is Lightning's as asked, and it profiles."""
    from lightning.pytorch.profilers import SimpleProfiler

    from vae_lab.direct_step import QuietProfiler

    module, trainer = fit(compose, tmp_path, 8, "trainer.max_steps=8", name="quiet")
    assert type(trainer.profiler) is QuietProfiler and module._direct is not None
    with trainer.profiler.profile("a") as first, trainer.profiler.profile("a") as nested:  # re-entrant
        assert first is None and nested is None
    assert trainer.profiler.profile("a") is trainer.profiler.profile("b")  # nothing made per call
    module, trainer = fit(compose, tmp_path, 8, "+trainer.profiler=simple", "trainer.max_steps=8", name="simple")
    assert isinstance(trainer.profiler, SimpleProfiler)
    assert any("training_step" in action for action in trainer.profiler.recorded_durations)
