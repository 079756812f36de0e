"""Training stability without a Trainer: a skipped update leaves weights and optimizer state bit-identical (each
optimizer kind), the host-side gradient norm, and the bad values of the guard and the EMA as one config error line
(the fits, the EMA's average and resume, the artifact: tests/integration/test_stability.py)."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from vae_lab.callbacks.ema import EMA
from vae_lab.callbacks.nonfinite import NonFiniteGuard
from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import ConfigError


QUIET = ["logger=none", "callbacks=none", "trainer.max_epochs=-1", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "print_config=false"]


def config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", *QUIET, *overrides])


def snapshot(optimizer) -> list[torch.Tensor]:
    """Every weight and every optimizer state tensor (moments and step counts), cloned (as the integration tier's)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return [t.detach().clone() for t in [*params, *state]]


@pytest.mark.parametrize("optimizer", [
    lambda p: torch.optim.Adam(p, lr=0.1), lambda p: torch.optim.Adam(p, lr=0.1, fused=True),
    lambda p: torch.optim.Adamax(p, lr=0.1), lambda p: torch.optim.AdamW(p, lr=0.1, foreach=True),
])
def test_a_skipped_update_leaves_weights_and_optimizer_state_unchanged(optimizer):
    class Trainer:  # as far as the guard looks
        world_size, global_step, log_every_n_steps, fast_dev_run = 1, 0, 1, False

    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = optimizer(params)
    Trainer.optimizers = [opt]
    logged = {}
    module = type("M", (), {"log": lambda self, name, value, **k: logged.__setitem__(name, value)})()
    guard = NonFiniteGuard(skip_grad_norm_above=1.0)

    def step(scale):
        for p in params:
            p.grad = torch.full_like(p, scale)
        guard.on_before_backward(Trainer, module, torch.tensor(1.0))
        guard.on_before_optimizer_step(Trainer, module, opt)
        opt.step()

    step(0.01)  # norm 0.0424 <= 1: taken (and gives the optimizer a state: moments, step count)
    assert guard.grad_skips == 0 and logged["train/grad_norm"] == pytest.approx(0.01 * 18 ** 0.5)
    before = snapshot(opt)
    step(1.0)  # norm 4.24 > 1: skipped
    assert guard.grad_skips == 1 and all(p.grad is None for p in params)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(opt)))
    assert logged["train/grad_skips"] == 1.0 and logged["train/nonfinite_steps"] == 0.0
    step(0.1)  # taken again
    assert not all(torch.equal(a, b) for a, b in zip(before, snapshot(opt)))
    assert guard.state_dict() == {"skipped": 0, "consecutive": 0, "grad_skips": 1}


def test_bad_values_are_one_config_error_line(tmp_path):
    from vae_lab.config import validate

    for override, message in [
        ("guard.skip_grad_norm_above=-1", "guard.skip_grad_norm_above=-1 is invalid: must be a number > 0 (or null)"),
        ("guard.skip_grad_norm_above=0", "guard.skip_grad_norm_above=0 is invalid: must be a number > 0 (or null)"),
        ("ema.decay=1.5", "ema.decay=1.5 is invalid: must be a number >= 0 and < 1 (or null)"),
        ("ema.decay=1", "ema.decay=1 is invalid: must be a number >= 0 and < 1 (or null)"),
        ("ema.evaluate=maybe", "ema.evaluate='maybe' is invalid: must be true or false"),
    ]:
        with pytest.raises(ConfigError) as err:
            validate(config(tmp_path, override))
        assert str(err.value) == message
    with pytest.raises(ConfigError, match=r"^ema.decay=1.5 is invalid"):
        EMA(1.5)
    with pytest.raises(ConfigError, match=r"^guard.skip_grad_norm_above=-1.0 is invalid"):
        NonFiniteGuard(skip_grad_norm_above=-1.0)
    validate(config(tmp_path, "schedule=adamax", "ema.decay=0.999", "guard.skip_grad_norm_above=400"))


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_the_host_norm_is_the_norm_of_all_gradients_and_sees_a_nonfinite_element(bad):
    from vae_lab.callbacks.nonfinite import _host_norm

    grads = [torch.randn(40, 30), torch.randn(30), torch.randn(7, 2, 3)]
    if bad is not None:
        grads[1][4] = bad
    loss, norm = _host_norm(torch.tensor(2.5), grads)
    expected = float(torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in grads])))
    assert loss == 2.5
    if bad is None:
        assert norm == pytest.approx(expected, rel=1e-6)
    else:
        assert not torch.isfinite(torch.tensor(norm))
