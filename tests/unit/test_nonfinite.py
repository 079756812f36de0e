"""The non-finite guard's pieces: its config check, the gradient checks, and the sums that count non-finite examples
apart. A poisoned step in a real fit: tests/integration/test_nonfinite_training.py; a run that keeps producing NaN,
through the CLI: tests/cli/test_bad_input.py."""

import math

import pytest
import torch

from vae_lab.callbacks.nonfinite import NonFiniteGuard
from vae_lab.errors import ConfigError


def test_guard_checks_its_config():
    with pytest.raises(ConfigError, match="guard.max_consecutive=0"):
        NonFiniteGuard(max_consecutive=0)
    with pytest.raises(ConfigError, match="guard.inject_nan_at_steps"):
        NonFiniteGuard(inject_nan_at_steps=[-1])


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
