"""scripts/evaluate.py in a subprocess on models trained in the test: evaluation.json, the table, clear errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from datasets_fixtures import copy_mnist
from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per process: the tests share a few cores

# What the issue asks evaluation.json to hold.
REQUIRED_KEYS = {
    "elbo_nats", "distortion_nats", "rate_nats",  # ELBO terms, nats/example
    "iwae_nats", "iwae_stderr_nats", "iwae_samples",  # IWAE log p(x) with k samples and its standard error
    "elbo_bits_per_dim", "iwae_bits_per_dim",
    "ssim", "psnr_db", "mse",  # reconstructions through the posterior mean
    "active_units", "kl_per_dim_nats",
    "num_examples", "split", "dataset", "model",
}  # fmt: skip


def run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=ENV)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A digits VAE trained for a few steps through the real CLI."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    proc = run("train.py", f"hydra.run.dir={out}", "trainer.max_steps=30", "trainer.max_epochs=-1",
               "trainer.enable_progress_bar=false", "print_config=false", "logger=none", "model.latent_dim=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_evaluate_writes_every_number_next_to_the_model(run_dir):
    proc = run("scripts/evaluate.py", f"model={run_dir}", "split=val", "iwae_samples=50", "progress=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert REQUIRED_KEYS <= set(report), REQUIRED_KEYS - set(report)
    assert f"wrote {run_dir / 'evaluation.json'}" in proc.stdout and "IWAE k=50" in proc.stdout
    assert report["num_examples"] == 179 and report["split"] == "val" and report["iwae_samples"] == 50
    assert len(report["kl_per_dim_nats"]) == 4 and 0 <= report["active_units"] <= 4
    assert report["elbo_nats"] == pytest.approx(-(report["distortion_nats"] + report["rate_nats"]), rel=1e-6)
    assert report["iwae_nats"] >= report["elbo_nats"] - 3 * report["elbo_stderr_nats"]
    # Reconstructions are deterministic: the same SSIM/PSNR as validation at the end of training.
    val = json.loads((run_dir / "metrics.json").read_text())["val"]
    assert report["ssim"] == pytest.approx(val["val/ssim"], rel=1e-4)
    assert report["psnr_db"] == pytest.approx(val["val/psnr_db"], rel=1e-4)
    # The ELBO agrees with training's single-sample validation estimate up to Monte Carlo noise.
    assert report["elbo_nats"] == pytest.approx(val["val/elbo_nats"], abs=1.0)


def test_evaluate_a_checkpoint_with_overrides_writes_out(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    proc = run("scripts/evaluate.py", f"model={ckpt}", "split=val", "iwae_samples=5", "progress=false",
               "dataset.binarize=static", "max_examples=50", "batch_size=16", f"out={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert REQUIRED_KEYS <= set(report)
    assert report["binarize"] == "static" and report["num_examples"] == 50 and report["source"] == str(ckpt)


@pytest.mark.parametrize("args, key", [(["split=test"], "test split"), ([], "model")])  # digits has no test split
def test_evaluate_bad_input_is_one_clear_line(run_dir, args, key):
    args = [f"model={run_dir}", *args] if args else args
    proc = run("scripts/evaluate.py", *args, "progress=false")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0], proc.stderr[-2000:]


@pytest.mark.parametrize(
    "override, error, key",
    [("split=train", ConfigError, "split"), ("iwae_samples=0", ConfigError, "iwae_samples"),
     ("max_examples=-3", ConfigError, "max_examples"), ("model=/no/such/run", CheckpointError, "/no/such/run")],
)
def test_evaluate_rejects_bad_values_naming_them(run_dir, override, error, key):
    """The same checks in-process (cheaper than a subprocess each): the error's one line names the value."""
    from vae_lab.evaluation import evaluate_model

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"model={run_dir}", override])
    with pytest.raises(error) as caught:
        evaluate_model(cfg)
    assert key in str(caught.value) and "\n" not in str(caught.value)


def test_evaluate_help_lists_its_keys():
    proc = run("scripts/evaluate.py", "--help")
    assert proc.returncode == 0
    for key in ("model:", "split:", "iwae_samples:", "out:", "binarize:"):
        assert key in proc.stdout


@pytest.mark.slow
def test_mnist_dynamically_binarised_iwae_beats_elbo(tmp_path):
    """Real MNIST: one epoch of an MLP VAE, then IWAE-500 on 500 test images (a few minutes on 2 cores)."""
    data = copy_mnist(tmp_path / "data")
    run_dir = tmp_path / "run"
    proc = run("train.py", "dataset=mnist", "dataset.binarize=dynamic", f"paths.data_dir={data}",
               "trainer.max_epochs=1", "schedule.batch_size=100", "model.latent_dim=20", "logger=none",
               f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false", "print_config=false", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("scripts/evaluate.py", f"model={run_dir}", "iwae_samples=500", "max_examples=500", "progress=false",
               timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["dataset"] == "mnist" and report["binarize"] == "dynamic" and report["split"] == "test"
    assert report["iwae_nats"] > report["elbo_nats"] + 1.0  # the importance-weighted bound is tighter
    assert -160 < report["iwae_nats"] < -80  # a plausible density on binarised MNIST after one epoch
    assert report["active_units"] >= 5
