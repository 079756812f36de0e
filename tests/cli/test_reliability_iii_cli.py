"""Reliability III (issue 29), the rows that need real processes: sweep and run locks seen from a second process,
the evaluate CLI refusing non-finite weights, a writer SIGKILLed mid-swap or mid-write, Ctrl-C during start-up, a
small `ulimit -v`; and (slow) two sweeps at once and a copied run resumed. Every process through tests/driver.py.
The row-15 forged file name runs in tests/cli/test_bad_input.py's batch."""

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import driver
import pytest
import torch
from omegaconf import OmegaConf

from vae_lab import publish
from vae_lab.run_dir import lock_sweep_dir

TESTS = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": os.pathsep.join([str(driver.ROOT), str(TESTS)])}  # signal_trigger.py, test_reliability_resume
SMALL_VAE = """
import torch
from vae_lab.model import VAE

def small_vae(seed):
    torch.manual_seed(seed)
    model = VAE(in_shape=[1, 8, 8], latent_dim=3, architecture="mlp", net={"hidden_dims": [16]}, likelihood="bernoulli")
    model.train()(torch.rand(6, 1, 8, 8))
    return model.eval()
"""


def python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (a second process), from the repository root."""
    return driver.python(code, env=ENV, timeout=timeout)


_namespace: dict = {}
exec(SMALL_VAE, _namespace)  # the same builder here and in the subprocesses' code
small_vae = _namespace["small_vae"]  # small_vae(seed): an MLP VAE on 8x8 images, BatchNorm statistics off their init


# ---------------------------------------------------------------- rows 1-2: sweeps hold locks


def test_a_second_sweep_in_a_held_sweep_directory_is_refused_in_one_line(tmp_path):
    """Row 1 (fast): the sweep lock, taken here, refuses another process naming this one's PID."""
    assert lock_sweep_dir(tmp_path / "sweep")
    other = python(f"from vae_lab.run_dir import lock_sweep_dir; lock_sweep_dir({str(tmp_path / 'sweep')!r})")
    assert other.returncode != 0
    assert f"hydra.sweep.dir={tmp_path / 'sweep'} is in use by another sweep (PID {os.getpid()})" in other.stderr


def test_a_sweep_job_holds_its_directory_lock_while_it_runs(tmp_path, monkeypatch):
    """Row 2 (fast): inside multirun_job, the job directory is locked (a resume= there is refused), and freed after."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from vae_lab.cli.hydra_callbacks import multirun_job

    job_dir = tmp_path / "sweep" / "0"
    hydra_cfg = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(job_dir)},
                                            "overrides": {"task": ["seed=1"]}, "job": {"num": 0},
                                            "launcher": {"_target_": "basic"}}})
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra_cfg.hydra))
    seen = []

    @multirun_job
    def task(cfg):
        probe = python(f"from vae_lab.run_dir import lock_run_dir; lock_run_dir({str(job_dir)!r})")
        seen.append(probe.stderr)
        return 1.0

    assert task(OmegaConf.create({"trainer": {}})) == 1.0
    assert f"{job_dir} is in use by another run (PID {os.getpid()})" in seen[0]
    assert python(f"from vae_lab.run_dir import lock_run_dir; lock_run_dir({str(job_dir)!r})").returncode == 0


# ---------------------------------------------------------------- row 4: non-finite weights


@pytest.fixture
def nan_artifact(tmp_path) -> Path:
    from hub_fixtures import put_nan_in_first_tensor

    folder = publish.save_artifact(tmp_path / "artifact", small_vae(0))
    put_nan_in_first_tensor(folder)
    return folder


def test_evaluate_cli_refuses_non_finite_weights_in_one_line(nan_artifact, tmp_path):
    """Row 4 (CLI): exit 2 and one line, instead of exit 0 with a finite ELBO."""
    proc = driver.run("evaluate", f"model={nan_artifact}", "dataset=digits", "split=val", "iwae_samples=2",
                      "progress=false", f"out={tmp_path / 'e.json'}", env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "non-finite" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "e.json").exists()


# ---------------------------------------------------------------- row 12: from_pretrained recovers a swap


@pytest.mark.parametrize("nth", [2, 3], ids=["before_swap_out", "between_the_renames"])
def test_from_pretrained_recovers_a_swap_killed_by_sigkill(tmp_path, nth):
    """Row 12: the writer is SIGKILLed inside write_artifact's renames; from_pretrained finishes the swap."""
    from vae_lab.model import VAE

    out = tmp_path / "run" / "artifact"
    code = f"""
import os, signal, torch
from pathlib import Path
from vae_lab import publish
publish.save_artifact(Path({str(out)!r}), small_vae(0))
second = small_vae(1)
torch.save(second.state_dict(), {str(tmp_path / 'second.pt')!r})
real, calls = Path.rename, []
def rename(self, target):
    calls.append(self)
    if len(calls) == {nth}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, target)
Path.rename = rename
publish.save_artifact(Path({str(out)!r}), second)
"""
    proc = python(SMALL_VAE + code)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out.parent / ".artifact.new").is_dir()  # the debris of the swap
    model = VAE.from_pretrained(str(out))
    second = torch.load(tmp_path / "second.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in second.items())
    assert sorted(p.name for p in out.parent.iterdir()) == ["artifact"]


# ---------------------------------------------------------------- row 14: temp files of a dead writer


def test_a_dead_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    """Row 14: a writer SIGKILLed mid-write leaves `.<name>.pid<PID>.*.tmp`; the next write removes it."""
    from vae_lab.io import atomic_write_json

    target = tmp_path / "images" / "samples.png"
    proc = python("import os, signal\nfrom vae_lab.io import atomic_write\n"
                  f"atomic_write({str(target)!r}, lambda f: (f.write(b'half'), f.flush(), "
                  "os.kill(os.getpid(), signal.SIGKILL)))")
    assert proc.returncode == -signal.SIGKILL
    (stale,) = target.parent.glob(".samples.png.*.tmp")
    live = target.parent / f".samples.png.pid{os.getppid()}.x.tmp"  # a live process's: kept
    live.write_bytes(b"")
    atomic_write_json(target, {"ok": 1})
    assert not stale.exists() and live.exists() and json.loads(target.read_text()) == {"ok": 1}


# ---------------------------------------------------------------- row 11: Ctrl-C during start-up


def test_ctrl_c_before_training_is_one_line_and_exit_130():
    """Row 11 (fast): the handler a run has between its imports and training ends it at once with one line,
    also where Lightning's fit set-up would catch a KeyboardInterrupt and carry on."""
    proc = python("import os, signal, time\nfrom vae_lab.cli.interrupts import Phases\nPhases().install()\n"
                  "try:\n    os.kill(os.getpid(), signal.SIGINT); time.sleep(30)\n"
                  "except BaseException:\n    print('swallowed')\n")
    assert proc.returncode == 130 and "swallowed" not in proc.stdout
    assert proc.stderr.splitlines() == [__import__("vae_lab.startup").startup.LINE]


@pytest.mark.slow  # four real starts interrupted: ~40 s
@pytest.mark.parametrize("delay", [0.05, 0.8, 2.0, 4.0])
def test_ctrl_c_at_any_moment_of_start_up_exits_130_in_one_line(tmp_path, delay):
    """Row 11: SIGINT while importing, composing, writing run_info.json / config, building or fitting."""
    proc = driver.start("train", "trainer.max_steps=100000", "trainer.max_epochs=-1", "callbacks=no_images",
                        "trainer.enable_progress_bar=false", "print_config=false", f"hydra.run.dir={tmp_path / 'run'}",
                        env=ENV)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith(("interrupted by", "stopped by"))]
    assert len(lines) == 1, stderr[-3000:]


# ---------------------------------------------------------------- rows 1, 2, 13, 3 through the real CLI


def wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} never happened (exit {proc.poll()})")


def holds(lock: Path, pid: int) -> bool:
    return lock.is_file() and lock.read_text().strip() == str(pid)


@pytest.mark.slow  # two real sweeps and a resume= at once, then a kill: ~30 s
def test_a_sweep_holds_its_directory_and_each_jobs_and_reports_every_job(tmp_path):
    """Rows 1, 2 and 13: while sweep A runs job 0, a second sweep into the same hydra.sweep.dir and a resume= of
    job 0 are refused in one line and touch nothing; A, killed during job 0, reports all four jobs."""
    from test_reliability_resume import RUN

    sweep = tmp_path / "sweep"
    a = driver.start("train", "-m", *RUN, "seed=42,43,44,45", f"hydra.sweep.dir={sweep}", env=ENV)
    try:
        wait_for(lambda: holds(sweep / "0" / ".run.lock", a.pid), a, "job 0 holding its lock")
        a.send_signal(signal.SIGSTOP)  # job 0 is running: freeze it there
        config = (sweep / "0" / ".hydra" / "config.yaml").read_bytes()
        b = driver.run("train", "-m", *RUN, "seed=7", f"hydra.sweep.dir={sweep}", env=ENV, timeout=300)
        assert b.returncode == 2 and "Traceback" not in b.stderr, b.stderr[-3000:]
        assert b.stderr.splitlines() == [f"error: hydra.sweep.dir={sweep.resolve()} is in use by another sweep "
                                         f"(PID {a.pid}); wait for it to end or choose another sweep directory"]
        r = driver.run("train", *RUN, f"resume={sweep / '0'}", env=ENV, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert r.stderr.splitlines() == [f"error: {(sweep / '0').resolve()} is in use by another run (PID {a.pid}); "
                                         "wait for it to end or choose another directory"]
        assert (sweep / "0" / ".hydra" / "config.yaml").read_bytes() == config  # still seed 42's
        assert not (sweep / "report.csv").exists()
    finally:
        a.send_signal(signal.SIGKILL)  # killed during job 0
        a.communicate(timeout=60)
    report = driver.run("sweep_report", str(sweep), env=ENV, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    import csv

    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert [(r["job"], r["status"], r["seed"]) for r in rows] == [
        ("0", "incomplete", "42"), ("1", "not started", "43"), ("2", "not started", "44"), ("3", "not started", "45")]


@pytest.mark.slow  # four CLI runs: ~40 s
def test_a_copied_run_resumes_and_evaluates_its_own_files(tmp_path):
    """Row 3: X killed after its first checkpoint; `cp -a X Y; rm -rf X`; a new run at X; resume=Y then gives the
    uninterrupted run's numbers from Y's own checkpoints, and evaluate on Y reads Y's checkpoint."""
    import shutil

    from test_reliability_resume import cli, fault

    reference = tmp_path / "reference"
    assert cli(f"hydra.run.dir={reference}").returncode == 0
    x, y = tmp_path / "X", tmp_path / "Y"
    killed = cli(f"hydra.run.dir={x}", *fault(30, "train", "SIGKILL"))
    assert killed.returncode == -signal.SIGKILL
    driver.execute(["cp", "-a", x, y], ok=True)  # a copy as a user makes it (times and modes kept)
    shutil.rmtree(x)
    assert cli(f"hydra.run.dir={x}", "seed=7").returncode == 0  # a new, different run at X
    resumed = cli(f"resume={y}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((y / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert metrics["best_checkpoint"] == expected["best_checkpoint"] and not Path(metrics["best_checkpoint"]).is_absolute()
    assert metrics["val"]["val/elbo_nats"] == expected["val"]["val/elbo_nats"]
    assert (y / "artifact" / "model.safetensors").read_bytes() == (reference / "artifact" / "model.safetensors").read_bytes()
    copy = Path(shutil.copytree(y, tmp_path / "Z"))  # evaluate on a copy of Y, with Y itself gone
    shutil.rmtree(y)
    from vae_lab.loading import load_model

    assert load_model(str(copy)).source == copy / metrics["best_checkpoint"]


# ---------------------------------------------------------------- row 10: a small address-space limit


@pytest.mark.parametrize("script", ["train.py", "scripts/evaluate.py", "scripts/sample.py"])
def test_a_small_ulimit_v_is_one_line_naming_memory(script, tmp_path):
    """Row 10: `ulimit -v 3G` killed `import torch` with std::bad_alloc; now one line at start, exit 2."""
    proc = driver.run(script, f"model={tmp_path}", env=ENV, timeout=120,
                      wrap=lambda argv: ["bash", "-c", f"ulimit -v 3145728; exec {shlex.join(argv)}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "ulimit -v" in proc.stderr
    assert "error: the address-space limit (ulimit -v) is 3.0 GiB, too little memory" in proc.stderr
