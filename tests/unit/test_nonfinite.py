"""The non-finite guard: a poisoned step leaves weights and optimizer state bit-identical and is counted; a run
that keeps producing NaN stops with one line and a loadable last checkpoint."""

import math
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir

from vae_lab.build import build_datamodule, build_module, build_trainer
from vae_lab.callbacks.nonfinite import NonFiniteGuard
from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def snapshot(module: L.LightningModule, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every weight and every optimizer state tensor (Adam's moments and step), cloned."""
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return [t.detach().clone() for t in [*module.parameters(), *state]]


class Probe(L.Callback):
    """Records, per global step, whether the step left weights and optimizer state bit-identical."""

    def __init__(self):
        self.unchanged: dict[int, bool] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._before = snapshot(pl_module, trainer.optimizers[0])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = snapshot(pl_module, trainer.optimizers[0])
        same = len(after) == len(self._before) and all(torch.equal(a, b) for a, b in zip(self._before, after))
        self.unchanged[trainer.global_step] = same


def test_poisoned_steps_are_skipped_bit_exactly_and_counted(tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.output_dir={tmp_path}", "logger=none", "callbacks=none", "trainer.max_steps=12",
            "trainer.max_epochs=-1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "trainer.limit_val_batches=0", "schedule.steps_per_call=1",  # the probe looks at every step's weights
            "trainer.log_every_n_steps=4",  # train/nonfinite_steps is a step value: logged on the steps Lightning writes
        ])
    L.seed_everything(0, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg, datamodule.spec)
    guard, probe = NonFiniteGuard(max_consecutive=3, inject_nan_at_steps=[4, 7, 8]), Probe()
    trainer = build_trainer(cfg, extra_callbacks=[guard, probe])
    trainer.fit(module, datamodule=datamodule)

    assert trainer.global_step == 12  # skipped steps still count as steps
    # the batch served at global step s becomes step s + 1: steps 5, 8 and 9 are the poisoned ones
    assert {step for step, same in probe.unchanged.items() if same} == {5, 8, 9}
    assert guard.skipped == 3 and guard.consecutive == 0
    assert float(trainer.callback_metrics["train/nonfinite_steps"]) == 3.0
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_guard_checks_its_config():
    with pytest.raises(ConfigError, match="guard.max_consecutive=0"):
        NonFiniteGuard(max_consecutive=0)
    with pytest.raises(ConfigError, match="guard.inject_nan_at_steps"):
        NonFiniteGuard(inject_nan_at_steps=[-1])


def test_run_that_keeps_producing_nan_stops_with_one_line_and_a_loadable_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vae_lab.loading import model_from_checkpoint

    run_dir = tmp_path / "run"
    nan_steps = ",".join(str(s) for s in range(20, 60))
    proc = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", "trainer.max_steps=100", "trainer.max_epochs=-1",
         "callbacks=no_images", "callbacks.periodic_checkpoint.every_n_train_steps=10", "trainer.log_every_n_steps=1",
         f"guard.inject_nan_at_steps=[{nan_steps}]", "guard.max_consecutive=5", "trainer.enable_progress_bar=false",
         "print_config=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    # steps 21..25 are poisoned (the batch served at global step s becomes step s + 1): the 5th in a row stops
    assert line.startswith("error: training stopped at step 25: 5 steps in a row had a non-finite loss")
    assert "last finite step 20: train/loss=" in line
    for cause in ("schedule.lr", "model.likelihood_scale", "bf16-mixed"):
        assert cause in line

    last = run_dir / "checkpoints" / "last.ckpt"
    assert str(last) in line
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 20  # the periodic checkpoint before the streak, not overwritten since
    model = model_from_checkpoint(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (run_dir / "metrics.json").exists()

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    counts = {e.step: e.value for e in acc.Scalars("train/nonfinite_steps")}
    assert counts[19] == 0 and counts[20] == 1 and max(counts.values()) == 4  # the 5th raised before logging
    assert all(math.isfinite(e.value) for e in acc.Scalars("train/loss") if e.step < 20)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_nonfinite_gradient_element_is_found(bad):
    from vae_lab.callbacks.nonfinite import _all_finite, _host_sums

    grads = [torch.randn(40, 30), torch.randn(30)]
    loss, total = _host_sums(torch.tensor(2.5), grads)
    assert loss == 2.5 and total == pytest.approx(sum(float(g.double().sum()) for g in grads), rel=1e-5)
    assert math.isfinite(total) and _all_finite(grads)
    grads[0][17, 3] = bad
    assert not math.isfinite(_host_sums(torch.tensor(2.5), grads)[1])
    assert not _all_finite(grads)


def test_gradients_whose_sum_overflows_are_still_finite():
    """Finite gradients near float32's limit overflow the sum: the element-wise check must keep the step."""

    class Step:  # the optimizer and trainer, as far as the guard looks at them
        world_size = 1
        global_step = 0
        callback_metrics: dict = {}
        checkpoint_callbacks: list = []

    param = torch.nn.Parameter(torch.zeros(4))
    param.grad = torch.full((4,), 3e38)
    optimizer = torch.optim.SGD([param], lr=0.0)
    guard = NonFiniteGuard(max_consecutive=1)
    guard.on_before_backward(Step(), None, torch.tensor(1.0))
    logged = []
    module = type("M", (), {"log": lambda self, *a, **k: logged.append(a)})()
    guard.on_before_optimizer_step(Step(), module, optimizer)
    assert param.grad is not None and guard.skipped == 0
    param.grad[2] = float("nan")
    with pytest.raises(Exception, match="non-finite"):
        guard.on_before_optimizer_step(Step(), module, optimizer)  # max_consecutive=1: stops at once
    assert param.grad is None and guard.skipped == 1


def test_a_nonfinite_validation_example_is_counted_not_dropped_silently():
    """Evaluation sums count examples: a NaN example leaves the mean of the others intact and is counted apart."""
    import torch

    from vae_lab.lit_module import VAEModule
    from vae_lab.objectives import ObjectiveOutput

    module = VAEModule(model={"in_shape": [1, 4, 4], "latent_dim": 2, "net": {"hidden_dims": [4]}},
                       objective={"name": "elbo"}, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3})
    elbo = torch.tensor([-10.0, float("nan"), -30.0])
    terms = {"elbo": elbo, "distortion": -elbo, "rate": torch.zeros(3)}
    module.sums.add("val", ObjectiveOutput(torch.tensor(float("nan")), terms), 3)
    sums = module.sums.pop("val")  # [elbo, distortion, rate, loss * n, n finite, non-finite]
    assert sums[0].item() == -40.0 and sums[-2].item() == 2 and sums[-1].item() == 1
    module.sums.add("train", ObjectiveOutput(torch.tensor(float("nan")), terms), 3)
    finite = {"elbo": torch.tensor([-1.0, -2.0]), "distortion": torch.tensor([1.0, 2.0]), "rate": torch.zeros(2)}
    module.sums.add("train", ObjectiveOutput(torch.tensor(1.5), finite), 2)
    sums = module.sums.pop("train")  # training steps are reduced in groups (every 64 steps and when read)
    # a non-finite training batch is a skipped step: not counted; the finite one is, whole
    assert sums.tolist() == [-3.0, 3.0, 0.0, 1.5 * 2, 2.0, 3.0]


@pytest.mark.parametrize("sizes", ["equal", "varying"])  # one stacked reduction per group, or one per step
def test_training_sums_reduced_in_groups_equal_a_plain_sum_over_the_epoch(sizes):
    """150 steps (over two groups of 64 and a remainder), two of them non-finite: the epoch's row equals a float64
    sum of the finite batches, and the skipped batches' examples are counted apart."""
    import torch

    from vae_lab.epoch_sums import FLUSH_EVERY, EpochSums
    from vae_lab.objectives import ObjectiveOutput

    gen = torch.Generator().manual_seed(0)
    sums, rows = EpochSums(["elbo", "rate"]), []
    for step in range(150):
        size = 6 if sizes == "equal" else 5 + step % 3
        elbo, rate = -torch.rand(size, generator=gen) * 100, torch.rand(size, generator=gen)
        loss = torch.rand((), generator=gen)
        if step in (3, 2 * FLUSH_EVERY + 1):
            elbo[1] = float("nan") if step == 3 else float("-inf")
        sums.add("train", ObjectiveOutput(loss, {"elbo": elbo, "rate": rate}), size)
        rows.append((elbo.double(), rate.double(), float(loss), size))
    assert len(sums.pending) == 150 - 2 * FLUSH_EVERY  # two groups reduced on the way
    row = sums.pop("train").double()
    finite = [r for r in rows if torch.isfinite(r[0]).all()]
    skipped = [r for r in rows if not torch.isfinite(r[0]).all()]
    assert len(skipped) == 2
    expected = [sum(float(r[0].sum()) for r in finite), sum(float(r[1].sum()) for r in finite),
                sum(r[2] * r[3] for r in finite), sum(r[3] for r in finite), sum(r[3] for r in skipped)]
    assert row.tolist() == pytest.approx(expected, rel=1e-5)
    assert sums.pop("train") is None and not sums.pending
