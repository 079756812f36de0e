"""evaluate_model (scripts/evaluate.py's work) in-process on the shared tiny runs: evaluation.json, the table, values
refused by name. The command line itself (exit 2 and one line, the printed path, --help):
tests/cli/test_evaluate_cli.py."""

import json
import shutil

import pytest
from omegaconf import OmegaConf

from datasets_fixtures import copy_mnist
from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.evaluation import evaluate_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What the issue asks evaluation.json to hold.
REQUIRED_KEYS = {
    "elbo_nats", "distortion_nats", "rate_nats",  # ELBO terms, nats/example
    "iwae_nats", "iwae_stderr_nats", "iwae_samples",  # IWAE log p(x) with k samples and its standard error
    "elbo_bits_per_dim", "iwae_bits_per_dim",
    "ssim", "psnr_db", "mse",  # reconstructions through the posterior mean
    "active_units", "kl_per_dim_nats",
    "num_examples", "split", "dataset", "model",
}  # fmt: skip


def test_evaluate_writes_every_number_next_to_the_model(trained_run, compose, tmp_path, capsys):
    from vae_lab.cli.evaluate import print_table

    run_dir = shutil.copytree(trained_run("plain"), tmp_path / "run")  # evaluation.json is written into the run
    report, out = evaluate_model(compose(f"model={run_dir}", "split=val", "iwae_samples=50", "progress=false",
                                         config="evaluate"))
    assert out == run_dir / "evaluation.json"
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert REQUIRED_KEYS <= set(report), REQUIRED_KEYS - set(report)
    print_table(report)  # what scripts/evaluate.py prints above "wrote <path>"
    assert "IWAE k=50" in capsys.readouterr().out
    assert report["num_examples"] == 179 and report["split"] == "val" and report["iwae_samples"] == 50
    assert len(report["kl_per_dim_nats"]) == 3 and 0 <= report["active_units"] <= 3  # the run's latent_dim 3
    assert report["elbo_nats"] == pytest.approx(-(report["distortion_nats"] + report["rate_nats"]), rel=1e-6)
    assert report["iwae_nats"] >= report["elbo_nats"] - 3 * report["elbo_stderr_nats"]
    # Reconstructions are deterministic: the same SSIM/PSNR as validation at the end of training.
    val = json.loads((run_dir / "metrics.json").read_text())["val"]
    assert report["ssim"] == pytest.approx(val["val/ssim"], rel=1e-4)
    assert report["psnr_db"] == pytest.approx(val["val/psnr_db"], rel=1e-4)
    # The ELBO agrees with training's single-sample validation estimate up to Monte Carlo noise.
    assert report["elbo_nats"] == pytest.approx(val["val/elbo_nats"], abs=1.0)


def test_evaluate_a_checkpoint_with_overrides_writes_out(trained_run, compose, tmp_path):
    ckpt = trained_run("plain") / "checkpoints" / "last.ckpt"
    # dataset.* overrides come apart from the tool's own (vae_lab.cli.data_args), as the command line splits them
    evaluate_model(compose(f"model={ckpt}", "split=val", "iwae_samples=5", "progress=false", "max_examples=50",
                           "batch_size=16", f"out={tmp_path}", config="evaluate"), ["dataset.binarize=static"])
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert REQUIRED_KEYS <= set(report)
    assert report["binarize"] == "static" and report["num_examples"] == 50 and report["source"] == str(ckpt)
    assert not (ckpt.parent.parent / "evaluation.json").exists()  # out= wins over "next to the model"


@pytest.mark.parametrize(
    "override, error, key",
    [("split=train", ConfigError, "split"), ("iwae_samples=0", ConfigError, "iwae_samples"),
     ("max_examples=-3", ConfigError, "max_examples"), ("model=/no/such/run", CheckpointError, "/no/such/run")],
)
def test_evaluate_rejects_bad_values_naming_them(trained_run, compose, override, error, key):
    """The error's one line names the value (refused before anything is written next to the shared run)."""
    run_dir = trained_run("plain")
    with pytest.raises(error) as caught:
        evaluate_model(compose(f"model={run_dir}", override, config="evaluate"))
    assert key in str(caught.value) and "\n" not in str(caught.value)
    assert not (run_dir / "evaluation.json").exists()


@pytest.mark.slow
def test_mnist_dynamically_binarised_iwae_beats_elbo(compose, tmp_path):
    """Real MNIST: one epoch of an MLP VAE, then IWAE-500 on 500 test images (a few minutes on 2 cores)."""
    from vae_lab.cli.train import train

    data = copy_mnist(tmp_path / "data")
    run_dir = tmp_path / "run"
    cfg = compose("dataset=mnist", "dataset.binarize=dynamic", f"paths.data_dir={data}", "trainer.max_epochs=1",
                  "schedule.batch_size=100", "model.latent_dim=20", "logger=none", f"paths.output_dir={run_dir}",
                  "trainer.enable_progress_bar=false", "print_config=false")
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as Hydra saves it: evaluate reads the data from it
    train(cfg)
    report, _ = evaluate_model(compose(f"model={run_dir}", "iwae_samples=500", "max_examples=500", "progress=false",
                                       config="evaluate"))
    assert report == json.loads((run_dir / "evaluation.json").read_text())
    assert report["dataset"] == "mnist" and report["binarize"] == "dynamic" and report["split"] == "test"
    assert report["iwae_nats"] > report["elbo_nats"] + 1.0  # the importance-weighted bound is tighter
    assert -160 < report["iwae_nats"] < -80  # a plausible density on binarised MNIST after one epoch
    assert report["active_units"] >= 5
