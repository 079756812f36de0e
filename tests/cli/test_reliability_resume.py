"""Resume and run-directory reliability through the real CLI (issue 16 items 1-4, 7, 14).

Faults land at exact points: tests/signal_trigger.py's SignalAt callback, added with `+callbacks.fault.*`, makes
the run signal itself at one global step and phase, so each test reproduces one interleaving every time. Every
process is started through tests/driver.py. An interrupted artifact swap (item 4, no process) is
tests/unit/test_artifact_swap.py.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import driver
import pytest

TESTS = Path(__file__).resolve().parents[1]
MAX_STEPS = 60
# Validation every 20 steps and step checkpoints every 20: each step checkpoint falls on a validation step.
RUN = [f"trainer.max_steps={MAX_STEPS}", "trainer.max_epochs=-1", "trainer.val_check_interval=20",
       "trainer.check_val_every_n_epoch=null", "callbacks=no_images",
       "callbacks.periodic_checkpoint.every_n_train_steps=20", "trainer.enable_progress_bar=false",
       "trainer.enable_model_summary=false", "print_config=false", "trainer.log_every_n_steps=10"]
ENV = {"PYTHONPATH": os.pathsep.join([str(driver.ROOT), str(TESTS)])}  # signal_trigger.py for +callbacks.fault


def fault(step: int, phase: str, sig: str) -> list[str]:
    return ["+callbacks.fault._target_=signal_trigger.SignalAt", f"+callbacks.fault.step={step}",
            f"+callbacks.fault.phase={phase}", f"+callbacks.fault.sig={sig}"]


def cli(*overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return driver.run("train", *RUN, *overrides, timeout=timeout, env=ENV)


def tb_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` as TensorBoard shows it (events a resumed run purged are hidden)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(event.step, event.value) for event in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run: its metrics.json and its TensorBoard validation and training curves."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    proc = cli(f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"run_dir": run_dir, "metrics": json.loads((run_dir / "metrics.json").read_text()),
            "val": tb_scalars(run_dir, "val/elbo_nats"), "train": tb_scalars(run_dir, "train/loss")}


def assert_same_as_reference(run_dir: Path, reference: dict) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == MAX_STEPS
    assert Path(metrics["best_checkpoint"]).name == Path(reference["metrics"]["best_checkpoint"]).name
    assert metrics["val"]["val/elbo_nats"] == reference["metrics"]["val"]["val/elbo_nats"]
    published = json.loads((run_dir / "artifact" / "metrics.json").read_text())
    assert published["val"]["val/elbo_nats"] == reference["metrics"]["val"]["val/elbo_nats"]  # the published model
    val = tb_scalars(run_dir, "val/elbo_nats")
    assert val == reference["val"]  # every validation once, at its step, with the uninterrupted value
    assert len({step for step, _ in val}) == len(val)
    assert [s for s, _ in tb_scalars(run_dir, "train/loss")] == [s for s, _ in reference["train"]]


@pytest.mark.slow  # CLI runs killed and resumed: ~25-60 s each
def test_sigterm_inside_the_last_validation_is_redone_on_resume(tmp_path, reference):
    """Item 1: SIGTERM in the step-60 validation; resume redoes it, so the best checkpoint is step 60's."""
    run_dir = tmp_path / "run"
    first = cli(f"hydra.run.dir={run_dir}", *fault(MAX_STEPS, "validation", "SIGTERM"))
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()
    resumed = cli(f"hydra.run.dir={run_dir}", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step60" in Path(reference["metrics"]["best_checkpoint"]).name  # the test means something
    assert_same_as_reference(run_dir, reference)


@pytest.mark.slow  # CLI runs killed and resumed: ~25-60 s each
def test_sigkill_in_a_validation_after_a_step_checkpoint_is_redone_on_resume(tmp_path, reference):
    """Item 1: the step-40 checkpoint is taken before step 40's validation; SIGKILL inside that validation."""
    run_dir = tmp_path / "run"
    first = cli(f"hydra.run.dir={run_dir}", *fault(40, "validation", "SIGKILL"))
    assert first.returncode == -signal.SIGKILL
    resumed = cli(f"hydra.run.dir={run_dir}", "resume=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(global step 40)" in resumed.stdout
    assert_same_as_reference(run_dir, reference)


@pytest.mark.slow  # CLI runs killed and resumed: ~25-60 s each
def test_resume_from_the_final_checkpoint_logs_no_step_twice(tmp_path, reference):
    """Item 7: killed in the end-of-training validation, resumed from the step-60 checkpoint."""
    run_dir = tmp_path / "run"
    first = cli(f"hydra.run.dir={run_dir}", *fault(MAX_STEPS, "final", "SIGKILL"))
    assert first.returncode == -signal.SIGKILL
    resumed = cli(f"hydra.run.dir={run_dir}", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(global step {MAX_STEPS})" in resumed.stdout
    assert_same_as_reference(run_dir, reference)


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.mark.slow  # CLI runs killed and resumed: ~25-60 s each
def test_a_start_killed_before_its_first_checkpoint_restarts_in_place(tmp_path):
    """Item 2: SIGKILL at step 5 (first checkpoint at 20); the SLURM requeue's resume=auto starts fresh there."""
    run_dir = tmp_path / "run"
    first = cli(f"hydra.run.dir={run_dir}", *fault(5, "train", "SIGKILL"))
    assert first.returncode == -signal.SIGKILL
    assert not list(run_dir.glob("checkpoints/*.ckpt")) and (run_dir / "run_info.json").is_file()
    dead = files(run_dir)

    explicit = cli(f"resume={run_dir}")
    assert explicit.returncode == 2 and f"resume=auto hydra.run.dir={run_dir}" in explicit.stderr, explicit.stderr
    assert "Traceback" not in explicit.stderr

    requeue = cli(f"hydra.run.dir={run_dir}", "resume=auto")
    assert requeue.returncode == 0, requeue.stderr[-3000:]
    assert "held a start that left no checkpoint" in requeue.stderr
    (aside,) = run_dir.glob(".aborted_*")
    # nothing deleted: every file of the dead start is kept, byte for byte, under .aborted_<time>/
    assert {name: data for name, data in files(aside).items()} == {k: v for k, v in dead.items() if k != ".run.lock"}
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == MAX_STEPS
    steps = [s for s, _ in tb_scalars(run_dir, "train/loss")]
    assert len(set(steps)) == len(steps) and steps[-1] == MAX_STEPS - 1  # the new run's curve alone


def wait_for_lock(run_dir: Path, proc: subprocess.Popen) -> None:
    """Until `proc` holds the run directory's lock (its PID is in the lock file)."""
    deadline = time.time() + 300
    lock = run_dir / ".run.lock"
    while time.time() < deadline and proc.poll() is None:
        if lock.is_file() and lock.read_text().strip() == str(proc.pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"process {proc.pid} never took the lock (exit {proc.poll()})")


def refused_while_held(run_dir: Path, holder: subprocess.Popen, *overrides: str) -> None:
    """With `holder` frozen inside its run (SIGSTOP), a second CLI start in `run_dir` is refused naming its PID."""
    wait_for_lock(run_dir, holder)
    holder.send_signal(signal.SIGSTOP)
    try:
        before = files(run_dir)
        second = cli(*overrides, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert f"is in use by another run (PID {holder.pid})" in second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert files(run_dir) == before  # nothing of the first run touched
    finally:
        holder.send_signal(signal.SIGCONT)


@pytest.mark.slow  # two real training processes: ~45 s
def test_two_processes_never_share_a_run_directory(tmp_path):
    """Item 3: a second start, and a second simultaneous resume=, are refused while the first one runs."""
    run_dir = tmp_path / "run"
    popen = lambda *o: driver.start("train", *RUN, *o, env=ENV)  # noqa: E731
    first = popen(f"hydra.run.dir={run_dir}")
    refused_while_held(run_dir, first, f"hydra.run.dir={run_dir}")
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]

    resumed = popen(f"resume={run_dir}", f"trainer.max_steps={MAX_STEPS + 20}")
    refused_while_held(run_dir, resumed, f"resume={run_dir}", f"trainer.max_steps={MAX_STEPS + 20}")
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == MAX_STEPS + 20


@pytest.mark.slow  # CLI runs killed and resumed: ~25-60 s each
def test_resume_with_changed_training_settings_warns_in_one_line(reference):
    """Item 14: another lr, batch size or seed continues (a requeue must not fail) but says what changed;
    another model shape is refused as before. Runs on the finished reference run (last test using it)."""
    run_dir = reference["run_dir"]
    changed = cli(f"resume={run_dir}", "schedule.lr=0.0003", "schedule.batch_size=32", "seed=7")
    assert changed.returncode == 0, changed.stderr[-3000:]
    warnings = [line for line in changed.stderr.splitlines() if line.startswith("warning: resume=")]
    assert warnings == [f"warning: resume={run_dir} continues with changed training settings: "
                        "schedule.batch_size 64 → 32, schedule.lr 0.001 → 0.0003, seed 42 → 7 "
                        "(.hydra/config.yaml keeps the first run's)"]
    same = cli(f"resume={run_dir}")
    assert same.returncode == 0 and "warning: resume=" not in same.stderr
    shape = cli(f"resume={run_dir}", "model.latent_dim=8")
    assert shape.returncode == 2 and "different model" in shape.stderr
