"""Training end to end: fast_dev_run of every architecture x built-in dataset, and the CLI in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.train import train

ROOT = Path(__file__).resolve().parents[1]


def compose_cfg(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={tmp_path}", "print_config=false", *overrides])


def test_cli_writes_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", "trainer.max_steps=30", "trainer.max_epochs=-1",
         "trainer.val_check_interval=15", "trainer.enable_progress_bar=false", "print_config=false"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Run directory: {run_dir.resolve()}" in proc.stdout and "Final validation ELBO" in proc.stdout
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "run_info.json").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 30
    val = metrics["val"]
    assert val["val/elbo_nats"] == pytest.approx(-(val["val/distortion_nats"] + val["val/rate_nats"]), rel=1e-5)
    assert "test" not in metrics  # digits has no official test split
    assert Path(metrics["best_checkpoint"]).is_file()


@pytest.mark.parametrize(
    "override",
    ["model.latent_dim=0", "loss.beta=-1", "loss.beta=abc", "model.likelihood=nope", "dataset=nope"],
)
def test_cli_bad_input_is_one_clear_line(tmp_path, override):
    proc = subprocess.run([sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", override],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    key = override.split("=")[0]
    assert key in proc.stderr, proc.stderr
