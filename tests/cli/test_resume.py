"""Kill and resume through the CLI: SIGKILL or SIGTERM midway, resume, land exactly where an uninterrupted run does.

Exact, not within a tolerance: the checkpoint holds the weights, optimizer and scheduler state, loop counters, the
global RNG streams (vae_lab.callbacks.resumable) and the in-memory batches' position inside their epoch, and
evaluation noise is seeded per batch, so the resumed run takes bit-identical steps.
"""

import json
import signal
import subprocess
import time
from pathlib import Path

import driver
import pytest
import torch

MAX_STEPS = 200  # 8 epochs of digits at batch 64: the kill lands soon after the first checkpoint (step 35)
# Periodic checkpoints every 35 steps, validation every 50: they never coincide before step 350 (checkpoints that
# fall on a validation step, whose validation resume redoes, are tested in test_reliability_resume.py).
RUN = [f"trainer.max_steps={MAX_STEPS}", "trainer.max_epochs=-1", "trainer.val_check_interval=50",
       "trainer.check_val_every_n_epoch=null", "callbacks=no_images",
       "callbacks.periodic_checkpoint.every_n_train_steps=35", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "print_config=false"]


def run_cli(*overrides: str) -> subprocess.CompletedProcess:
    return driver.run("train", *RUN, *overrides, ok=True)


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def scalar_steps(run_dir: Path, tag: str = "train/loss") -> list[int]:
    """The steps TensorBoard shows for `tag` (it hides events a resumed run purged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [event.step for event in acc.Scalars(tag)]


def start_and_interrupt(run_dir: Path, sig: int, *overrides: str) -> tuple[subprocess.Popen, int, str]:
    """Start a run, wait for its first periodic last.ckpt (+ a moment), send `sig`; -> (process, step seen, stderr)."""
    proc = driver.start("train", *RUN, f"hydra.run.dir={run_dir}", *overrides)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    seen = checkpoint_step(last) if last.exists() else -1
    time.sleep(0.05)  # often a few more steps: the signal lands between checkpoints
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    return proc, seen, stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run (in-process, the same train() the CLI calls): metrics.json and TensorBoard steps."""
    from hydra import compose, initialize_config_dir

    from vae_lab.cli import CONFIG_DIR
    from vae_lab.cli.train import train

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        train(compose("train", overrides=[*RUN, f"paths.output_dir={run_dir}"]))
    return {"metrics": json.loads((run_dir / "metrics.json").read_text()), "steps": scalar_steps(run_dir)}


def assert_same_as_reference(run_dir: Path, reference: dict) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == reference["metrics"]["global_step"] == MAX_STEPS
    # bit-identical training: the best checkpoint's validation ELBO agrees exactly
    assert metrics["val"]["val/elbo_nats"] == reference["metrics"]["val"]["val/elbo_nats"]
    assert Path(metrics["best_checkpoint"]).name == Path(reference["metrics"]["best_checkpoint"]).name
    steps = scalar_steps(run_dir)
    assert steps == reference["steps"]  # curves continue: no step twice, none missing
    assert len(set(steps)) == len(steps)


@pytest.mark.slow  # a CLI run killed and resumed: ~25 s each
def test_sigkill_midway_then_resume_matches_uninterrupted(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc, seen, _ = start_and_interrupt(run_dir, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists(), "the kill landed after training had finished"
    resumed_from = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert 0 < seen <= resumed_from < MAX_STEPS
    before = (run_dir / ".hydra" / "config.yaml").read_bytes()

    out = run_cli(f"resume={run_dir}")
    assert f"global step {resumed_from}" in out.stdout
    assert_same_as_reference(run_dir, reference)
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == before  # the run's own config is kept
    info = json.loads((run_dir / "run_info.json").read_text())
    assert [r["checkpoint"] for r in info["resumes"]] == [str(run_dir / "checkpoints" / "last.ckpt")]


@pytest.mark.slow  # a CLI run killed and resumed: ~25 s each
def test_sigterm_saves_the_current_step_then_resume_matches_uninterrupted(tmp_path, reference):
    """The SLURM pattern: the same command line (fixed run dir, resume=auto) for the first start and the requeue."""
    run_dir = tmp_path / "run"
    proc, seen, stderr = start_and_interrupt(run_dir, signal.SIGTERM, "resume=auto")
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    saved = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    # the checkpoint holds the step at which the run stopped (usually past the periodic one seen before the
    # signal); the resumed run then matching the uninterrupted one shows no step was lost or repeated
    assert 0 < seen <= saved < MAX_STEPS
    assert f"stopped by SIGTERM at step {saved}" in stderr and f"resume={run_dir}" in stderr
    assert "Traceback" not in stderr

    out = run_cli(f"hydra.run.dir={run_dir}", "resume=auto")
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'} (global step {saved})" in out.stdout
    assert_same_as_reference(run_dir, reference)
