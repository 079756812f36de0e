"""The private Lightning names vae_lab relies on (vae_lab/lightning_compat.py), on live Trainers: each exists and
behaves as relied on, and `check` fails in one line when one is renamed (that no other vae_lab file names them, the
warning filters, the supported range: tests/unit/test_lightning_compat_static.py)."""

import csv
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch.utils.data import DataLoader, TensorDataset

from vae_lab import lightning_compat as compat
from vae_lab.errors import VaeLabError

BATCHES = 4  # training batches per epoch


class Tiny(L.LightningModule):
    """A linear regression on 16 examples in batches of 4; `manual`: stepped by hand, counted through the seam."""

    def __init__(self, manual: bool = False):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss.detach(), on_step=True, on_epoch=False, batch_size=1)
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers().optimizer  # the torch optimizer, stepped as DirectStep.step steps it
        optimizer.zero_grad()
        loss.backward()
        progress = compat.optim_step_progress(self.trainer)
        progress.increment_ready()
        optimizer.step()
        progress.increment_completed()

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(4 * BATCHES, 2, generator=g), torch.randn(4 * BATCHES, 1,
                                                                                          generator=g)), batch_size=4)


def trainer(tmp_path: Path, callbacks=(), **kwargs) -> L.Trainer:
    options = dict(max_epochs=1, accelerator="cpu", devices=1, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False, logger=False, num_sanity_val_steps=0)
    return L.Trainer(default_root_dir=tmp_path, callbacks=list(callbacks), **{**options, **kwargs})


class Probe(L.Callback):
    """Runs `fn(trainer, module)` at a hook and keeps what it returns."""

    def __init__(self, hook: str, fn):
        self.seen: list = []
        setattr(self, hook, lambda trainer, module, *args: self.seen.append(fn(trainer, module)))


def test_every_relied_on_name_is_there_on_a_live_trainer(tmp_path):
    results = {}
    probe = Probe("on_train_start", lambda t, m: results.update(
        {r.name: r.probe(t, m) for r in compat.REQUIRED}))
    trainer(tmp_path, [probe], max_steps=1).fit(Tiny(), loader())
    assert results and all(results.values()), results
    assert len(results) == len(compat.REQUIRED)


def test_setting_the_current_hook_name_is_what_self_log_reads(tmp_path):
    """DirectStep writes the hook's name into the module's __dict__: self.log must accept a value in a hook that may
    log and refuse it in one that may not, by that name alone."""

    def log_as(hook):
        def fn(trainer, module):
            state = compat.module_state(module)
            previous, state[compat.CURRENT_FX_NAME] = state[compat.CURRENT_FX_NAME], hook
            try:
                module.log("probe", 1.0, on_step=True, on_epoch=False, batch_size=1)
                return "accepted"
            except MisconfigurationException:
                return "refused"
            finally:
                state[compat.CURRENT_FX_NAME] = previous
        return fn

    allowed, refused = Probe("on_train_batch_end", log_as("on_before_optimizer_step")), \
        Probe("on_train_batch_end", log_as("on_train_end"))
    module = Tiny()
    trainer(tmp_path, [allowed, refused], max_steps=1).fit(module, loader())
    assert allowed.seen == ["accepted"] and refused.seen == ["refused"]
    assert compat.module_fabric(module) is None  # under a Trainer: DirectStep may take over


def test_the_manual_loops_progress_is_the_global_step(tmp_path):
    """DirectStep.step counts an optimizer step there: global_step and max_steps follow it."""
    fit = trainer(tmp_path, max_steps=3, max_epochs=5)
    fit.fit(Tiny(manual=True), loader())
    assert fit.global_step == 3 and fit.fit_loop.epoch_loop.batch_idx + 1 == 3


def logged_steps(tmp_path: Path, add: int) -> list[int]:
    # added in the second step's on_train_batch_end: before Lightning writes that step's metrics, as
    # VAEModule._training_call adds before its call returns
    added = Probe("on_train_batch_end", lambda t, m: compat.add_batches_that_stepped(t, add) if t.global_step == 2
                  else None)
    fit = trainer(tmp_path, [added], max_steps=4, log_every_n_steps=1,
                  logger=CSVLogger(tmp_path, name=f"add{add}"))
    fit.fit(Tiny(), loader())
    with (Path(fit.logger.log_dir) / "metrics.csv").open() as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get("loss")]


def test_adding_to_batches_that_stepped_moves_the_loggers_step(tmp_path):
    """VAEModule._training_call adds a call's extra optimizer steps: the loggers' x axis moves by as much."""
    assert logged_steps(tmp_path, 0) == [0, 1, 2, 3]
    assert logged_steps(tmp_path, 5) == [0, 6, 7, 8]


def test_should_check_val_answers_as_lightnings_loop_does(tmp_path):
    """True after exactly the batches whose validation Lightning then runs (the epoch's last one here)."""
    validated: list[int] = []
    asked = Probe("on_train_batch_end", lambda t, m: compat.should_check_val(t))
    ran = Probe("on_validation_start", lambda t, m: validated.append(t.fit_loop.epoch_loop.batch_idx))
    fit = trainer(tmp_path, [asked, ran], max_epochs=2, limit_val_batches=1)
    fit.fit(Tiny(), loader(), loader())
    assert asked.seen == [False] * (BATCHES - 1) + [True] + [False] * (BATCHES - 1) + [True]
    assert validated == [BATCHES - 1, BATCHES - 1]


def test_the_checkpoint_rewrites_read_and_write_lightnings_keys(tmp_path):
    fit = trainer(tmp_path, max_steps=2)
    fit.fit(Tiny(), loader())
    fit.save_checkpoint(tmp_path / "a.ckpt")
    checkpoint = torch.load(tmp_path / "a.ckpt", weights_only=True)
    state = compat.fit_loop_state(checkpoint)
    stepped = state["epoch_loop.state_dict"]["_batches_that_stepped"]
    compat.count_last_step(state)
    assert state["epoch_loop.state_dict"]["_batches_that_stepped"] == stepped + 1
    assert isinstance(compat.saved_inside_epoch(state), bool)
    compat.redo_validation(state)
    val = state["epoch_loop.val_loop.batch_progress"]
    assert val["total"]["started"] == val["total"]["completed"] + 1 and val["current"]["started"] == 0


@pytest.mark.parametrize("rename", ["class_method", "instance_attribute", "module_attribute"])
def test_a_renamed_name_fails_check_in_one_line(tmp_path, monkeypatch, rename):
    """What a Lightning upgrade that renames a relied-on name looks like, simulated with a monkeypatched rename."""
    errors: list[VaeLabError] = []

    def rename_then_check(trainer, module):
        if rename == "class_method":
            group = compat.RESUME
            monkeypatch.setattr(_TrainingEpochLoop, "_should_check_val_fn", _TrainingEpochLoop._should_check_val_fx,
                                raising=False)
            monkeypatch.delattr(_TrainingEpochLoop, "_should_check_val_fx")
        elif rename == "instance_attribute":
            group, loop = compat.FAST, trainer.fit_loop.epoch_loop
            monkeypatch.setattr(loop, "_batches_stepped", loop._batches_that_stepped, raising=False)
            monkeypatch.delattr(loop, "_batches_that_stepped")
        else:
            group = compat.FAST
            monkeypatch.delattr(module, "_current_fx_name")  # gone from the instance: Lightning 2.x+1 calls it _fx
            monkeypatch.setattr(module, "_fx", None, raising=False)
        try:
            compat.check(trainer, group, off_switch="schedule.steps_per_call=1" if group == compat.FAST else None)
        except VaeLabError as err:
            errors.append(err)
        monkeypatch.undo()  # let Lightning finish its own fit

    trainer(tmp_path, [Probe("on_train_start", rename_then_check)], max_steps=1).fit(Tiny(), loader())
    assert len(errors) == 1 and isinstance(errors[0], compat.LightningChangedError)
    message = str(errors[0])
    assert "\n" not in message
    assert re.match(rf"Lightning {re.escape(L.__version__)} changed \S+", message), message
    assert f"Lightning {compat.SUPPORTED}" in message and f"pin lightning=={compat.PIN}" in message
    name = {"class_method": "_should_check_val_fx", "instance_attribute": "_batches_that_stepped",
            "module_attribute": "_current_fx_name"}[rename]
    assert name in message
    assert message.endswith("or set schedule.steps_per_call=1") == (rename != "class_method")


def test_a_renamed_name_stops_a_vae_lab_fit_at_its_start(compose, tmp_path, monkeypatch):
    """The check runs where the fast path is chosen: a fit with steps_per_call > 1 stops before its first step.

    The rename is one Lightning itself would survive: `_current_fx_name` kept under another name behind a property.
    Lightning's own hooks and self.log go through the property; DirectStep's write into the module's __dict__ would
    be silently lost (self.log inside a hook would credit the wrong hook), so check refuses it."""
    from test_steps_per_call import fit

    renamed = property(lambda self: self.__dict__.get("_hook_name"),
                       lambda self, value: self.__dict__.__setitem__("_hook_name", value))
    monkeypatch.setattr(L.LightningModule, "_current_fx_name", renamed, raising=False)
    with pytest.raises(compat.LightningChangedError, match=r"changed LightningModule\._current_fx_name \(used by "
                       r"DirectStep\._call\): vae_lab's fast path supports .*or set schedule\.steps_per_call=1$"):
        fit(compose, tmp_path, 2, "trainer.max_steps=2")
    monkeypatch.undo()
    module, trainer = fit(compose, tmp_path, 2, "trainer.max_steps=2", name="unchanged")
    assert trainer.global_step == 2 and module._direct is not None


def test_a_user_callback_with_per_call_hooks_is_warned_about_at_fit_start(compose, tmp_path):
    from test_steps_per_call import fit

    class EveryBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            pass

    with pytest.warns(UserWarning, match=r"^EveryBatch\.on_train_batch_end run once per call of "
                                         r"schedule\.steps_per_call=2 .*on_before_optimizer_step"):
        fit(compose, tmp_path, 2, "trainer.max_steps=2", callbacks=(EveryBatch(),))
