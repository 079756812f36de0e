"""The private Lightning names vae_lab relies on, without a Trainer: no vae_lab file but vae_lab/lightning_compat.py
names one (and the scan finds each kind of access), the silenced warnings are still Lightning's messages, the
supported range is pyproject's, and user callbacks with per-call hooks are named once (each name on a live Trainer,
`check` on a rename: tests/integration/test_lightning_compat.py)."""

import io
import re
import tokenize
from pathlib import Path

import lightning as L
import pytest

from vae_lab import lightning_compat as compat
from vae_lab.call_hooks import per_call_hooks_note

ROOT = Path(__file__).resolve().parents[2]


RECEIVERS = {"trainer", "fit_loop", "epoch_loop", "val_loop", "loop", "pl_module", "module", "lightning_module",
             "strategy", "profiler", "precision_plugin"}


def private_uses(source: str) -> list[str]:
    """`line: name` for each private Lightning name in the code (comments left out): an attribute the seam lists, any
    `._name` on a Lightning object, and a string holding a listed name or checkpoint key."""
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE)]
    found = []
    for i, tok in enumerate(tokens):
        after_dot = i >= 2 and tokens[i - 1].string == "."
        if tok.type == tokenize.NAME and after_dot and tokens[i - 2].string != "lightning_compat" and (
                tok.string in compat.PRIVATE_ATTRIBUTES
                or (tok.string.startswith("_") and not tok.string.startswith("__")
                    and tokens[i - 2].string in RECEIVERS)):
            found.append(f"{tok.start[0]}: {tok.string}")
        elif tok.type == tokenize.STRING and any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", tok.string)
                                                 for n in (*compat.PRIVATE_ATTRIBUTES, *compat.CHECKPOINT_KEYS)):
            found.append(f"{tok.start[0]}: {tok.string}")
    return found


def test_no_other_vae_lab_file_names_a_private_lightning_name():
    """Every private Lightning access goes through vae_lab/lightning_compat.py (comments may name them)."""
    found = [f"{path.relative_to(ROOT)}:{use}" for path in sorted((ROOT / "vae_lab").rglob("*.py"))
             if path.name != "lightning_compat.py" for use in private_uses(path.read_text())]
    assert not found, "private Lightning names outside vae_lab/lightning_compat.py:\n" + "\n".join(found)


@pytest.mark.parametrize("line", [
    "x = trainer.fit_loop.epoch_loop._batches_that_stepped",
    "previous = module._current_fx_name",
    "object.__setattr__(module, '_current_fx_name', name)",
    "trainer.fit_loop._something_new()",
    'loops["epoch_loop.batch_progress"]["total"]',
    "progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress",
])
def test_the_scan_finds_each_kind_of_private_access(line):
    assert private_uses(line + "\n"), line
    assert not private_uses("# " + line + "\n")  # a comment may name it
    assert not private_uses("x = lightning_compat.optim_step_progress(trainer)\nself._direct = None\n")


def test_the_silenced_warnings_are_still_lightnings_messages():
    """Each warning filter matches a message the module it names still emits (else it is dead, and says so)."""
    import importlib
    import inspect

    for pattern, module in (*compat.DATALOADER_ITER_WARNINGS, *compat.PYTREE_WARNINGS):
        # the message as written in the source, the f-string's field as the step's name
        text = inspect.getsource(importlib.import_module(module)).replace("{step_fx_name}", "training_step")
        assert re.search(pattern, text), (pattern, module)


def test_the_supported_range_is_pyprojects_and_the_pin_is_in_it():
    from packaging.specifiers import SpecifierSet

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"lightning{compat.SUPPORTED}"' in pyproject
    pins = re.findall(r"^lightning==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert pins == [compat.PIN]
    spec = SpecifierSet(compat.SUPPORTED)
    assert compat.PIN in spec and all(v in spec for v in compat.RAN_ON)
    assert "2.6.2" not in spec and "2.6.3" not in spec
    assert L.__version__ in spec


def test_user_callbacks_with_per_call_hooks_are_named_once():
    from lightning.pytorch.callbacks import ModelCheckpoint

    from vae_lab.callbacks.nonfinite import NonFiniteGuard

    class EveryBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            pass

    class EveryStep(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            pass

    class MyCheckpoint(ModelCheckpoint):  # Lightning's on_train_batch_end, inherited: not the user's
        pass

    class MyGuard(NonFiniteGuard):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    callbacks = [ModelCheckpoint(), NonFiniteGuard(), EveryBatch(), EveryStep(), MyCheckpoint(), MyGuard()]
    note = per_call_hooks_note(callbacks, 8)
    assert note is not None and "\n" not in note
    assert note.startswith("EveryBatch.on_train_batch_end, MyGuard.on_train_batch_start run once per call of "
                           "schedule.steps_per_call=8 optimizer steps")
    assert "schedule.steps_per_call=1" in note and "on_before_optimizer_step" in note
    assert "NonFiniteGuard" not in note and "ModelCheckpoint" not in note
    assert per_call_hooks_note(callbacks, 1) is None
    assert per_call_hooks_note([c for c in callbacks if not isinstance(c, (EveryBatch, MyGuard))], 8) is None
