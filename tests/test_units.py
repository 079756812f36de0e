"""What a number is: which runs report a normalised log-likelihood (and bits/dim), and that dequantised densities
report a true bound on the 8-bit data (Theis et al. 2016), from the maths up to the CLI."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from scipy.special import log_ndtr
from torch.distributions import kl_divergence

from vae_lab.cli import CONFIG_DIR
from vae_lab.distributions import LIKELIHOODS
from vae_lab.units import Status, likelihood_status

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_status_of_every_likelihood_on_every_kind_of_data(name):
    kind = LIKELIHOODS[name].kind
    on_binary, on_bytes = likelihood_status(name, binary_data=True), likelihood_status(name, binary_data=False)
    dequantized = likelihood_status(name, binary_data=False, dequantize="uniform")
    assert on_binary.normalised == (kind in ("binary", "discrete"))  # a density at {0, 1} is no probability
    assert on_bytes.normalised == (kind == "discrete")  # Bernoulli on grey levels, a density at k/255: no
    assert dequantized.normalised == (kind == "density")  # dequantisation is for densities only
    assert dequantized.log_bin_width == (-math.log(256) if kind == "density" else 0.0)
    assert on_binary.log_bin_width == on_bytes.log_bin_width == 0.0  # masses are used as they are
    for status in (on_binary, on_bytes, dequantized):
        assert name in status.note and "\n" not in status.note
        assert status.as_json() == {"normalised": status.normalised, "note": status.note}


def test_the_notes_name_the_fix():
    assert "dataset.binarize=dynamic" in likelihood_status("bernoulli", binary_data=False).note
    assert "cross-entropy" in likelihood_status("bernoulli", binary_data=False).note
    assert "dataset.dequantize=uniform" in likelihood_status("gaussian", binary_data=False).note
    assert "model.likelihood=bernoulli" in likelihood_status("gaussian_learned", binary_data=True).note


def _log_bin_mass_gaussian(level, loc, scale):
    """log of the N(loc, scale^2) mass on [k, k + 1)/256, float64 (the upper tail mirrored)."""
    a, b = (level / 256 - loc) / scale, ((level + 1) / 256 - loc) / scale
    lo, hi = np.where(a > 0, -b, a), np.where(a > 0, -a, b)
    return log_ndtr(hi) + np.log(-np.expm1(log_ndtr(lo) - log_ndtr(hi)))


@pytest.mark.parametrize("scale", [1e-3, 4e-3, 0.05, 0.5])
def test_dequantised_density_is_a_lower_bound_on_the_bin_mass(scale):
    """Theis et al. 2016, Sec. 3.1: E_u log p((k + u)/256) - ln 256 <= log P(k), by Jensen, per pixel."""
    level = np.arange(256.0)
    for loc in (0.0, 0.3, 0.51, 1.0):
        u = (np.arange(20000) + 0.5) / 20000  # midpoint quadrature of E_u
        y = (level[:, None] + u) / 256
        log_p = -0.5 * ((y - loc) / scale) ** 2 - np.log(scale * math.sqrt(2 * math.pi))
        bound = log_p.mean(1) - math.log(256)
        mass = _log_bin_mass_gaussian(level, loc, scale)
        ok = np.isfinite(mass)
        assert (bound[ok] <= mass[ok] + 1e-9).all()


def compose_cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", "print_config=false", "logger=none",
                                           "callbacks=none", "trainer.enable_progress_bar=false",
                                           "trainer.enable_model_summary=false", *overrides])


def test_dequantised_bits_per_dim_of_a_trained_model_bound_its_binned_bits_per_dim(tmp_path):
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
        binned = torch.from_numpy(_log_bin_mass_gaussian(level, loc, scale)).sum((-3, -2, -1))  # (K, B)
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
def test_default_runs_report_a_normalised_log_likelihood_and_bits_per_dim(tmp_path, dataset):
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


def test_status_is_given_to_evaluate_or_taken_conservatively():
    from vae_lab.evaluation import evaluate
    from vae_lab.model import VAE

    model = VAE(in_shape=(1, 4, 4), latent_dim=2, net={"hidden_dims": [8]}, likelihood="gaussian_learned").eval()
    x = [(torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long))]
    assert "elbo_bits_per_dim" not in evaluate(model, x, iwae_samples=2)  # dequantised or not: it cannot know
    told = evaluate(model, x, iwae_samples=2, status=Status(True, "dequantised", -math.log(256)))
    assert told["elbo_bits_per_dim"] == pytest.approx(
        -(told["elbo_nats"] - 16 * math.log(256)) / (16 * math.log(2)), rel=1e-6)


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory):
    from datasets_fixtures import copy_mnist

    return copy_mnist(tmp_path_factory.mktemp("mnist"), "MNIST")


def test_seed_experiment_says_its_number_is_not_a_log_likelihood(tmp_path, mnist_root):
    """The seed's grey-level BCE: console line, metrics.json, warning and TensorBoard all say so; no bits/dim."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", "experiment=seed_mnist_mlp", f"paths.data_dir={mnist_root}",
         f"hydra.run.dir={run_dir}", "trainer.max_steps=3", "trainer.max_epochs=-1", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "print_config=false", "callbacks=none"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(row for row in proc.stdout.splitlines() if row.startswith("Final validation ELBO"))
    assert "not a normalised log-likelihood (bernoulli on grey levels is a cross-entropy" in line
    assert "bits/dim" not in line
    assert proc.stderr.count("dataset.binarize=dynamic") == 1  # the warning, once, with the fix
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["log_likelihood"]["normalised"] is False and "cross-entropy" in metrics["log_likelihood"]["note"]
    assert not [k for k in (*metrics["val"], *metrics["test"]) if "bits_per_dim" in k]
    assert "val/elbo_nats" in metrics["val"]
    tags = EventAccumulator(str(run_dir / "tensorboard")).Reload().Tags()["scalars"]
    assert "val/elbo_nats" in tags and not [t for t in tags if "bits_per_dim" in t]
