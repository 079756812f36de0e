"""What a number is, on trained runs (train() in-process): dequantised densities report a true bound on the 8-bit
data (Theis et al. 2016), default runs report a normalised log-likelihood and bits/dim, the seed experiment says its
number is not one. The maths and the statuses: tests/unit/test_likelihood_status.py."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

from binned import log_bin_mass_gaussian
from vae_lab.units import likelihood_status

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def compose_cfg(compose):
    def composed(out_dir, *overrides):
        return compose(f"paths.output_dir={out_dir}", "print_config=false", "logger=none", "callbacks=none",
                       "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", *overrides)

    return composed


def test_dequantised_bits_per_dim_of_a_trained_model_bound_its_binned_bits_per_dim(compose_cfg, tmp_path):
    """The reported bits/dim of a density on dequantised digits is >= that of the same model's bin masses."""
    from vae_lab.build import build_datamodule
    from vae_lab.cli.train import train
    from vae_lab.evaluation import evaluate
    from vae_lab.loading import load_model

    cfg = compose_cfg(tmp_path, "model.likelihood=gaussian_learned", "dataset.binarize=none",
                      "dataset.dequantize=uniform", "trainer.max_steps=150", "trainer.max_epochs=-1")
    metrics = train(cfg)
    assert metrics["log_likelihood"]["normalised"] and "val/bits_per_dim" in metrics["val"]
    model = load_model(str(tmp_path / metrics["best_checkpoint"])).model
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    y = torch.cat([x for x, _ in datamodule.val_dataloader()])  # (k + u)/256, the fixed evaluation noise
    num_dims = y[0].numel()
    status = likelihood_status("gaussian_learned", binary_data=False, dequantize="uniform")
    torch.manual_seed(0)
    reported = evaluate(model, [(y, torch.zeros(len(y), dtype=torch.long))], iwae_samples=32, status=status)

    torch.manual_seed(0)
    with torch.no_grad():
        q_z = model.encode(y)
        z = q_z.sample((32,))  # the draws evaluate made (same seed, one chunk)
        p_x = model.decode(z)
        kl = kl_divergence(q_z, model.prior()).double()
        density_elbo = (p_x.log_prob(y).double().mean(0) - kl).mean().item()
        level = torch.floor(y * 256).double().numpy()
        loc, scale = p_x.base_dist.loc.double().numpy(), p_x.base_dist.scale.double().numpy()
        binned = torch.from_numpy(log_bin_mass_gaussian(level, loc, scale)).sum((-3, -2, -1))  # (K, B)
        binned_elbo = (binned.mean(0) - kl).mean().item()
    to_bits = lambda elbo, width: -(elbo + num_dims * width) / (num_dims * math.log(2))  # noqa: E731
    dequantised_bits, binned_bits = to_bits(density_elbo, -math.log(256)), to_bits(binned_elbo, 0.0)
    assert reported["elbo_bits_per_dim"] == pytest.approx(dequantised_bits, rel=1e-5)
    print(f"\ndigits, gaussian_learned, 150 steps: dequantised {dequantised_bits:.4f} >= binned {binned_bits:.4f} "
          "bits/dim")
    assert dequantised_bits >= binned_bits
    val = metrics["val"]  # training's validation reports the same quantity (one z sample per example)
    assert val["val/bits_per_dim"] == pytest.approx(to_bits(val["val/elbo_nats"], -math.log(256)), rel=1e-5)


@pytest.mark.parametrize("dataset", ["digits", "image_folder", "array_file"])
def test_default_runs_report_a_normalised_log_likelihood_and_bits_per_dim(compose_cfg, tmp_path, dataset):
    from datasets_fixtures import write_array_file, write_image_folder

    from vae_lab.cli.train import train

    options = []
    if dataset == "image_folder":
        write_image_folder(tmp_path / "images", per_class=6, size=(8, 8))
        options = [f"dataset.options.path={tmp_path / 'images'}"]
    elif dataset == "array_file":
        x = np.random.default_rng(0).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
        options = [f"dataset.options.path={write_array_file(tmp_path / 'x.npz', x)}"]
    metrics = train(compose_cfg(tmp_path / "run", f"dataset={dataset}", *options, "trainer.fast_dev_run=2",
                                "schedule.batch_size=8"))
    assert metrics["log_likelihood"]["normalised"] is True
    assert "val/bits_per_dim" in metrics["val"]
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["log_likelihood"] == metrics["log_likelihood"]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    from datasets_fixtures import copy_mnist

    return copy_mnist(tmp_path_factory.mktemp("mnist"), "MNIST")


def test_seed_experiment_says_its_number_is_not_a_log_likelihood(compose, tmp_path, mnist_root, capsys):
    """The seed's grey-level BCE: console line, metrics.json, warning and TensorBoard all say so; no bits/dim."""
    import warnings

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vae_lab.cli.train import train

    run_dir = tmp_path / "run"
    cfg = compose("experiment=seed_mnist_mlp", f"paths.data_dir={mnist_root}", f"paths.output_dir={run_dir}",
                  "trainer.max_steps=3", "trainer.max_epochs=-1", "trainer.limit_val_batches=2",
                  "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "print_config=false",
                  "callbacks=none")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    out, err = capsys.readouterr()
    line = next(row for row in out.splitlines() if row.startswith("Final validation ELBO"))
    assert "not a normalised log-likelihood (bernoulli on grey levels is a cross-entropy" in line
    assert "bits/dim" not in line
    # the warning, once, with the fix: what a process shows of warnings is one per (text, place) (Python's default)
    shown = {(str(w.message), w.filename, w.lineno) for w in caught if "dataset.binarize=dynamic" in str(w.message)}
    assert len(shown) + err.count("dataset.binarize=dynamic") == 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["log_likelihood"]["normalised"] is False and "cross-entropy" in metrics["log_likelihood"]["note"]
    assert not [k for k in (*metrics["val"], *metrics["test"]) if "bits_per_dim" in k]
    assert "val/elbo_nats" in metrics["val"]
    tags = EventAccumulator(str(run_dir / "tensorboard")).Reload().Tags()["scalars"]
    assert "val/elbo_nats" in tags and not [t for t in tags if "bits_per_dim" in t]
