"""Reliability at the edges of a run (issue 16): signals after training, a full disk, tiny validation data.

Every case runs the real CLI in a subprocess. A signal lands at a named phase through the documented test hook
VAE_LAB_SIGNAL_AT=<phase>:<SIGNAL> (vae_lab.cli.interrupts: the run sends it to itself on entering the phase). The
disk is a real tiny tmpfs where the machine allows a private mount namespace (`unshare -rm`, tests/tiny_fs.py),
and the file-size limit RLIMIT_FSIZE everywhere (writes past it fail with EFBIG once SIGXFSZ is ignored).
"""

import json
import os
import resource
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny_fs
import torch
from datasets_fixtures import write_array_file

from vae_lab.cli.interrupts import PHASES, SIGNAL_AT_ENV

ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = 20
QUIET = ["print_config=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
RUN = [f"trainer.max_steps={MAX_STEPS}", "trainer.max_epochs=-1", *QUIET]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def cli(*overrides: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**ENV, **(env or {})}, **kwargs)


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


def assert_one_disk_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow  # CLI runs signalled or filling a disk: ~15-70 s each
@pytest.mark.skipif(not tiny_fs.available(), reason="no private mount namespace (unshare -rm) for a tmpfs")
def test_disk_full_on_a_real_tiny_filesystem_keeps_the_previous_checkpoint(tmp_path):
    """A 3 MB tmpfs: the step-10 last.ckpt (~1.7 MB) fits, the step-20 one does not (torch reports a RuntimeError)."""
    mount, out = tmp_path / "mnt", tmp_path / "out"
    mount.mkdir()
    out.mkdir()
    argv = [sys.executable, "train.py", f"hydra.run.dir={mount / 'run'}", "trainer.max_steps=60",
            "trainer.max_epochs=-1", *QUIET, *CKPT_EVERY]
    script = (f"{' '.join(shlex.quote(a) for a in argv)} 2>{out / 'stderr'}; echo $? > {out / 'rc'}; "
              f"cp -a {mount / 'run'} {out / 'run'}")
    subprocess.run(tiny_fs.in_tmpfs(mount, "size=3m", script), cwd=ROOT, env=ENV, timeout=600, check=True)
    proc = subprocess.CompletedProcess(argv, int((out / "rc").read_text()), "", (out / "stderr").read_text())
    run_dir = mount / "run"
    assert_one_disk_line(proc, f"error: no space left on the device while writing {run_dir / 'checkpoints'}",
                         "the previous last.ckpt is intact", f"resume={run_dir}")
    ckpt_dir = out / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.ckpt"]  # no temp file left
    assert checkpoint_step(ckpt_dir / "last.ckpt") == 10


@pytest.mark.skipif(not tiny_fs.available(), reason="no private mount namespace (unshare -rm) for a tmpfs")
def test_disk_full_before_the_run_starts_is_one_line(tmp_path):
    """Hydra's own first writes (.hydra/*.yaml, train.log) on a full disk."""
    argv = [sys.executable, "train.py", f"hydra.run.dir={tmp_path / 'run'}", *RUN]
    script = f"dd if=/dev/zero of={tmp_path / 'fill'} bs=1k count=64 2>/dev/null; " + " ".join(map(shlex.quote, argv))
    proc = subprocess.run(tiny_fs.in_tmpfs(tmp_path, "size=64k", script), cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert_one_disk_line(proc, "error: no space left on the device")


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
    assert_one_disk_line(proc, "error: the file size limit was reached", "the previous last.ckpt is intact",
                         f"resume={run_dir}")
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert leftovers(run_dir) == []


# ---------------------------------------------------------------- tiny validation data


@pytest.mark.parametrize(("shape", "val_fraction"), [((40, 1, 1), 0.1), ((20, 8, 8), 0.05)],
                         ids=["1x1_images", "one_validation_example"])
def test_tiny_images_or_one_validation_example_still_write_metrics_and_artifact(tmp_path, shape, val_fraction):
    """No picture or metric that needs more pixels or points may cost the run its results."""
    data = write_array_file(tmp_path / "x.npz", np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    run_dir = tmp_path / "run"
    proc = cli(f"hydra.run.dir={run_dir}", "dataset=array_file", f"dataset.options.path={data}",
               f"dataset.val_fraction={val_fraction}", "trainer.max_steps=4", "trainer.max_epochs=-1", *QUIET)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    val = json.loads((run_dir / "metrics.json").read_text())["val"]
    assert (run_dir / "artifact" / "model.safetensors").is_file()
    assert "val/psnr_db" in val
    if shape[1] == 1:  # SSIM needs a 3x3 window: absent, said once, never a number
        assert "val/ssim" not in val
        assert proc.stderr.count("SSIM not computed: the images are 1x1 pixels") == 1
    else:
        assert "val/ssim" in val
        assert "note: latent_scatter not drawn" in proc.stderr  # one point: the plot is a note, not a failure
