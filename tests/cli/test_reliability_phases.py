"""Reliability at the edges of a run (issue 16): signals after training, a full disk, tiny validation data.

Every case runs the real CLI in a process (tests/driver.py). A signal lands at a named phase through the documented test hook
VAE_LAB_SIGNAL_AT=<phase>:<SIGNAL> (vae_lab.cli.interrupts: the run sends it to itself on entering the phase). The
disk is a real tiny tmpfs where the machine allows a private mount namespace (`unshare -rm`, tests/tiny_fs.py),
and the file-size limit RLIMIT_FSIZE everywhere (writes past it fail with EFBIG once SIGXFSZ is ignored). Tiny
validation data (1x1 images, one validation example) is tests/integration/test_train.py.
"""

import json
import resource
import shlex
import signal
import subprocess
from pathlib import Path

import driver
import pytest
import tiny_fs
import torch

from vae_lab.cli.interrupts import PHASES, SIGNAL_AT_ENV

MAX_STEPS = 20
QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
RUN = [f"trainer.max_steps={MAX_STEPS}", "trainer.max_epochs=-1", *QUIET]


def cli(*overrides: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return driver.run("train", *overrides, env=env, **kwargs)


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def leftovers(run_dir: Path) -> list[str]:
    """Temp files or directories an interrupted atomic write would leave (.name.*.tmp, .artifact.tmp)."""
    return [str(p) for p in run_dir.rglob(".*") if "tmp" in p.name or p.name.endswith(".old")]


# ---------------------------------------------------------------- signals after training

CASES = [("pictures", "SIGINT"), ("validation", "SIGTERM"), ("metrics", "SIGINT"), ("artifact", "SIGTERM"),
         ("push", "SIGTERM")]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict:
    """(phase, signal) -> (run dir, finished process) of a run that received `signal` on entering `phase`."""
    out = {}
    for phase, name in CASES:
        run_dir = tmp_path_factory.mktemp(f"{phase}_{name}") / "run"
        hub = ["hub=push", "hub.repo_id=nobody-vae-lab/phase-test"] if phase == "push" else []
        out[phase, name] = run_dir, cli(f"hydra.run.dir={run_dir}", *RUN, *hub,
                                        env={SIGNAL_AT_ENV: f"{phase}:{name}"})
    return out


@pytest.mark.slow  # CLI runs signalled or filling a disk: ~15-70 s each
@pytest.mark.parametrize(("phase", "name"), CASES, ids=[f"{p}-{n}" for p, n in CASES])
def test_a_signal_after_training_ends_in_one_line_with_the_signal_exit_code(interrupted, phase, name):
    run_dir, proc = interrupted[phase, name]
    signum = getattr(signal, name)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"interrupted by {name} during {PHASES[phase]}: "), line
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == MAX_STEPS  # training's state is kept whole
    assert (run_dir / "metrics.json").exists() == (phase in ("artifact", "push"))
    assert (run_dir / "artifact").exists() == (phase == "push")
    assert leftovers(run_dir) == []
    if phase == "push":
        assert "push them with: python scripts/push_to_hub.py" in line and "nobody-vae-lab/phase-test" in line
    else:
        assert f"resume={run_dir.resolve()} redoes the final validation and test, metrics.json and the artifact" in line
    if phase == "pictures":
        assert not list(run_dir.glob("images/*.png"))  # the remaining pictures were skipped, the checkpoint saved


@pytest.mark.slow  # CLI runs signalled or filling a disk: ~15-70 s each
def test_resume_after_a_signal_in_the_final_validation_finishes_the_run_as_uninterrupted(interrupted):
    run_dir, _ = interrupted["validation", "SIGTERM"]
    proc = cli(f"resume={run_dir}", *RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the artifact case trained the same run and wrote metrics.json before its signal: the uninterrupted numbers
    reference = json.loads((interrupted["artifact", "SIGTERM"][0] / "metrics.json").read_text())
    assert metrics["global_step"] == reference["global_step"] == MAX_STEPS
    assert metrics["val"]["val/elbo_nats"] == reference["val"]["val/elbo_nats"]
    assert (run_dir / "artifact" / "model.safetensors").is_file()


# ---------------------------------------------------------------- a full disk

CKPT_EVERY = ["callbacks=no_images", "logger=none", "callbacks.periodic_checkpoint.every_n_train_steps=10"]


@pytest.mark.slow  # CLI runs signalled or filling a disk: ~15-70 s each
@pytest.mark.skipif(not tiny_fs.available(), reason="no private mount namespace (unshare -rm) for a tmpfs")
def test_disk_full_on_a_real_tiny_filesystem_keeps_the_previous_checkpoint(tmp_path):
    """A 3 MB tmpfs: the step-10 last.ckpt (~1.7 MB) fits, the step-20 one does not (torch reports a RuntimeError)."""
    mount, out = tmp_path / "mnt", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    args = [f"hydra.run.dir={mount / 'run'}", "trainer.max_steps=60", "trainer.max_epochs=-1", *QUIET, *CKPT_EVERY]
    wrap = lambda argv: tiny_fs.in_tmpfs(mount, "size=3m", (  # noqa: E731
        f"{shlex.join(argv)} 2>{out / 'stderr'}; echo $? > {out / 'rc'}; cp -a {mount / 'run'} {out / 'run'}"))
    shell = driver.run("train", *args, wrap=wrap)
    assert shell.returncode == 0, shell.stderr[-3000:]  # the wrapper (mount, copy out); the run's own exit is rc
    proc = subprocess.CompletedProcess(args, int((out / "rc").read_text()), "", (out / "stderr").read_text())
    run_dir = mount / "run"
    driver.one_error_line(proc, f"error: no space left on the device while writing {run_dir / 'checkpoints'}",
                         "the previous last.ckpt is intact", f"resume={run_dir}")
    ckpt_dir = out / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # no temp file left
    assert checkpoint_step(ckpt_dir / "last.ckpt") == 10


@pytest.mark.skipif(not tiny_fs.available(), reason="no private mount namespace (unshare -rm) for a tmpfs")
def test_disk_full_before_the_run_starts_is_one_line(tmp_path):
    """Hydra's own first writes (.hydra/*.yaml, train.log) on a full disk."""
    fill = f"dd if=/dev/zero of={tmp_path / 'fill'} bs=1k count=64 2>/dev/null; "
    proc = driver.run("train", f"hydra.run.dir={tmp_path / 'run'}", *RUN,
                      wrap=lambda argv: tiny_fs.in_tmpfs(tmp_path, "size=64k", fill + shlex.join(argv)))
    driver.one_error_line(proc, "error: no space left on the device")


@pytest.mark.slow  # CLI runs signalled or filling a disk: ~15-70 s each
def test_file_size_limit_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """RLIMIT_FSIZE below a checkpoint's size on resume: EFBIG (SIGXFSZ ignored), one line, last.ckpt intact."""
    run_dir = tmp_path / "run"
    first = cli(f"hydra.run.dir={run_dir}", "trainer.max_steps=10", "trainer.max_epochs=-1", *QUIET, *CKPT_EVERY)
    assert first.returncode == 0, first.stderr[-3000:]
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited: the write fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, resource.RLIM_INFINITY))

    proc = cli(f"resume={run_dir}", "trainer.max_steps=20", "trainer.max_epochs=-1", *QUIET, *CKPT_EVERY,
               preexec_fn=limit_file_size)
    driver.one_error_line(proc, "error: the file size limit was reached", "the previous last.ckpt is intact",
                         f"resume={run_dir}")
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert leftovers(run_dir) == []
