"""Reliability III (issue 29): tried as an attacker would. One test (or more) per row of the issue's table; the
real-process ones (two sweeps at once, kills) are marked slow, and each row keeps a fast in-process test."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from test_hub import small_vae
from vae_lab import artifact, publish
from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.run_dir import best_checkpoint, lock_run_dir, lock_sweep_dir, read_metrics, run_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
TOKEN = "hf_reliabilityIIIsecret0123456789"


def python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (a second process), from the repository root."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def fake_run(run_dir: Path, seed: int = 0) -> Path:
    """A finished run's files, without training: a weights checkpoint, metrics.json naming it, the config as Hydra
    saves it (unresolved)."""
    from vae_lab.configs import compose_train

    torch.manual_seed(seed)
    model = small_vae("mlp", "bernoulli")
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    (run_dir / "checkpoints").mkdir(parents=True)
    best = run_dir / "checkpoints" / "best-epoch000-step20.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"model": artifact.model_config(model)}}, best)
    (run_dir / "metrics.json").write_text(json.dumps({"best_checkpoint": str(best), "run_dir": str(run_dir)}))
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(compose_train(["dataset=digits", f"seed={seed}"]), run_dir / ".hydra" / "config.yaml")
    return run_dir


def evaluate(model: str, out: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    from vae_lab.cli import CONFIG_DIR
    from vae_lab.evaluation import evaluate_model

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"model={model}", "split=val", "iwae_samples=2", "progress=false",
                                             "max_examples=20", f"out={out}", *overrides])
    return evaluate_model(cfg)


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


# ---------------------------------------------------------------- row 3: a run directory is relocatable


def test_a_copied_run_reads_its_own_best_checkpoint_not_the_originals(tmp_path):
    """Row 3 (fast): metrics.json of a copy names the original's absolute path; the copy's own file is used."""
    import shutil

    original = fake_run(tmp_path / "X")
    copy = Path(shutil.copytree(original, tmp_path / "Y"))
    assert best_checkpoint(copy) == copy / "checkpoints" / "best-epoch000-step20.ckpt"
    shutil.rmtree(original)
    fake_run(original, seed=1)  # a new run at X
    assert best_checkpoint(copy).is_relative_to(copy)
    cfg = run_config(copy)
    assert cfg.paths.output_dir == str(copy)  # not ${hydra:runtime.output_dir} of whoever reads it


def test_resumed_checkpoint_state_is_rebased_into_the_new_directory(tmp_path):
    """Row 3 (fast): ModelCheckpoint state of a checkpoint written at X points into Y when resumed at Y."""
    from types import SimpleNamespace

    from vae_lab.callbacks.resumable import rebase_checkpoint_paths

    old, new = str(tmp_path / "X" / "checkpoints"), str(tmp_path / "Y" / "checkpoints")
    callback = SimpleNamespace(state_key="ModelCheckpoint{k}", dirpath=new)
    state = {"dirpath": old, "best_model_path": f"{old}/best.ckpt", "last_model_path": f"{old}/last.ckpt",
             "kth_best_model_path": f"{old}/best.ckpt", "best_k_models": {f"{old}/best.ckpt": 1.0}}
    checkpoint = {"callbacks": {"ModelCheckpoint{k}": state}}
    rebase_checkpoint_paths(checkpoint, [callback])
    assert state == {"dirpath": new, "best_model_path": f"{new}/best.ckpt", "last_model_path": f"{new}/last.ckpt",
                     "kth_best_model_path": f"{new}/best.ckpt", "best_k_models": {f"{new}/best.ckpt": 1.0}}


# ---------------------------------------------------------------- row 4: non-finite weights


@pytest.fixture
def nan_artifact(tmp_path) -> Path:
    from safetensors.torch import load_file, save_file

    folder = publish.save_artifact(tmp_path / "artifact", small_vae("mlp", "bernoulli"))
    weights = load_file(folder / "model.safetensors")
    name = sorted(weights)[0]
    weights[name][0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_non_finite_weights_are_refused_at_load_naming_the_tensor(nan_artifact, monkeypatch):
    """Row 4: evaluate, sample and from_pretrained all load through one check; an env switch allows it."""
    from safetensors.torch import load_file

    from vae_lab.loading import load_model
    from vae_lab.model import VAE

    name = sorted(load_file(nan_artifact / "model.safetensors"))[0]
    for load in (lambda: load_model(str(nan_artifact)), lambda: VAE.from_pretrained(str(nan_artifact))):
        with pytest.raises(CheckpointError) as info:
            load()
        assert f"tensor {name} holds 1 non-finite value(s)" in str(info.value)
        assert artifact.ALLOW_NONFINITE_ENV in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv(artifact.ALLOW_NONFINITE_ENV, "1")
    assert torch.isnan(VAE.from_pretrained(str(nan_artifact)).state_dict()[name]).any()


def test_evaluate_cli_refuses_non_finite_weights_in_one_line(nan_artifact, tmp_path):
    """Row 4 (CLI): exit 2 and one line, instead of exit 0 with a finite ELBO."""
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", f"model={nan_artifact}", "dataset=digits",
                           "split=val", "iwae_samples=2", "progress=false", f"out={tmp_path / 'e.json'}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "non-finite" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "e.json").exists()


# ---------------------------------------------------------------- row 9: damaged run files


def test_a_truncated_metrics_json_is_one_line(tmp_path):
    run = fake_run(tmp_path / "run")
    (run / "metrics.json").write_text('{"best_checkpoint": "checkpoints/be')
    with pytest.raises(CheckpointError) as info:
        read_metrics(run)
    assert "metrics.json is not valid JSON" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError):
        evaluate(str(run), tmp_path / "e.json")


@pytest.mark.parametrize("text", ["a: [1, 2\nb: {", "- just\n- a list\n", "\x00\x01binary", "a: &x [*x]"])
def test_a_non_yaml_run_config_is_one_line(tmp_path, text):
    from vae_lab.resume import prepare_resume

    run = fake_run(tmp_path / "run")
    (run / ".hydra" / "config.yaml").write_text(text)
    with pytest.raises(CheckpointError) as info:
        run_config(run)
    assert str(run / ".hydra" / "config.yaml") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError):
        evaluate(str(run), tmp_path / "e.json")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    cfg = OmegaConf.create({"resume": str(run), "ckpt_path": None, "paths": {"output_dir": str(run)}})
    with pytest.raises(CheckpointError):
        prepare_resume(cfg, {})


# ---------------------------------------------------------------- row 12: from_pretrained recovers a swap


@pytest.mark.parametrize("nth", [2, 3], ids=["before_swap_out", "between_the_renames"])
def test_from_pretrained_recovers_a_swap_killed_by_sigkill(tmp_path, nth):
    """Row 12: the writer is SIGKILLed inside write_artifact's renames; from_pretrained finishes the swap."""
    from vae_lab.model import VAE

    out = tmp_path / "run" / "artifact"
    code = f"""
import os, signal, torch
from pathlib import Path
from test_hub import small_vae
from vae_lab import publish
torch.manual_seed(0); publish.save_artifact(Path({str(out)!r}), small_vae("mlp", "bernoulli"))
torch.manual_seed(1); second = small_vae("mlp", "bernoulli")
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
    proc = python(code)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out.parent / ".artifact.new").is_dir()  # the debris of the swap
    model = VAE.from_pretrained(str(out))
    second = torch.load(tmp_path / "second.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in second.items())
    assert sorted(p.name for p in out.parent.iterdir()) == ["artifact"]


# ---------------------------------------------------------------- row 13: the report lists every planned job


def test_the_sweep_report_lists_jobs_that_never_started(tmp_path):
    from vae_lab.sweep_report import NOT_STARTED, collect_jobs

    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("- seed=1\n- trainer.max_steps=5\n")
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    max_batch_size: null\n    params: null\n  overrides:\n    task:\n    - seed=1,2,3,4\n"
        "    - trainer.max_steps=5\n")
    jobs = collect_jobs(sweep)
    assert [(j.name, j.status, j.overrides["seed"]) for j in jobs] == [
        ("0", "incomplete", "1"), ("1", NOT_STARTED, "2"), ("2", NOT_STARTED, "3"), ("3", NOT_STARTED, "4")]


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


# ---------------------------------------------------------------- row 15: names printed escaped


def test_a_file_name_cannot_forge_an_error_line(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "x\nerror: FAKE LINE.png").write_bytes(b"not an image")
    proc = subprocess.run([sys.executable, "train.py", "dataset=image_folder", f"dataset.options.path={folder}",
                           "trainer.fast_dev_run=true", f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read image ") and "x\\nerror: FAKE LINE.png" in lines[0]


def test_printable_escapes_control_and_format_characters():
    from vae_lab.cli.errors import printable

    assert printable("a\nb\r\x1b[2J\u202ec é→") == "a\\nb\\r\\x1b[2J\\u202ec é→"


# ---------------------------------------------------------------- row 16: a run's config resolves no environment


def test_a_runs_saved_config_looks_nothing_up_in_the_environment(tmp_path, monkeypatch):
    run = fake_run(tmp_path / "run")
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.paths.data_dir = "${oc.env:HF_TOKEN}"
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(ConfigError) as info:
        evaluate(str(run), tmp_path / "e.json")
    assert "paths.data_dir='${oc.env:HF_TOKEN}'" in str(info.value) and TOKEN not in str(info.value)
    assert not (tmp_path / "e.json").exists()
    report, out = evaluate(str(run), tmp_path / "e.json", f"paths.data_dir={tmp_path}")  # the fix the line names
    assert TOKEN not in out.read_text()
    loaded = run_config(run)
    assert loaded.model.likelihood == loaded.dataset.likelihood  # links between its own keys still resolve


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
    proc = subprocess.Popen([sys.executable, "train.py", "trainer.max_steps=100000", "trainer.max_epochs=-1",
                             "callbacks=no_images", "trainer.enable_progress_bar=false", "print_config=false",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
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
    a = subprocess.Popen([sys.executable, "train.py", "-m", *RUN, "seed=42,43,44,45", f"hydra.sweep.dir={sweep}"],
                         cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: holds(sweep / "0" / ".run.lock", a.pid), a, "job 0 holding its lock")
        a.send_signal(signal.SIGSTOP)  # job 0 is running: freeze it there
        config = (sweep / "0" / ".hydra" / "config.yaml").read_bytes()
        b = subprocess.run([sys.executable, "train.py", "-m", *RUN, "seed=7", f"hydra.sweep.dir={sweep}"], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=300)
        assert b.returncode == 2 and "Traceback" not in b.stderr, b.stderr[-3000:]
        assert b.stderr.splitlines() == [f"error: hydra.sweep.dir={sweep.resolve()} is in use by another sweep "
                                         f"(PID {a.pid}); wait for it to end or choose another sweep directory"]
        r = subprocess.run([sys.executable, "train.py", *RUN, f"resume={sweep / '0'}"], cwd=ROOT, env=ENV,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert r.stderr.splitlines() == [f"error: {(sweep / '0').resolve()} is in use by another run (PID {a.pid}); "
                                         "wait for it to end or choose another directory"]
        assert (sweep / "0" / ".hydra" / "config.yaml").read_bytes() == config  # still seed 42's
        assert not (sweep / "report.csv").exists()
    finally:
        a.send_signal(signal.SIGKILL)  # killed during job 0
        a.communicate(timeout=60)
    report = subprocess.run([sys.executable, "scripts/sweep_report.py", str(sweep)], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=300)
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
    subprocess.run(["cp", "-a", str(x), str(y)], check=True)
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


# ---------------------------------------------------------------- rows 5-9: hostile data files


@pytest.fixture
def deadline():
    """A test that would block forever (open() of a FIFO) fails after 60 s instead."""
    def expired(signum, frame):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def png(path: Path, size=(8, 8)) -> Path:
    from PIL import Image

    Image.new("L", size, 128).save(path)
    return path


@pytest.mark.parametrize("feature", ["string", "image"])
@pytest.mark.parametrize("mode", [{"in_memory": True}, {"streaming": True}])
@pytest.mark.parametrize("target", ["fifo", "outside"])
def test_hf_image_paths_are_read_only_as_regular_files_inside_the_dataset(tmp_path, deadline, feature, mode, target):
    """Row 5: a real FIFO (would block open() forever) or a local file outside the dataset's folder."""
    import datasets

    from vae_lab.data.hf import load_hf
    from vae_lab.errors import DataError

    folder = tmp_path / "saved"
    bad = folder / "images" / "pipe.png" if target == "fifo" else tmp_path / "outside" / "secret.png"
    bad.parent.mkdir(parents=True)
    os.mkfifo(bad) if target == "fifo" else png(bad)
    if feature == "string":
        datasets.Dataset.from_dict({"image": [str(bad)]}).save_to_disk(str(folder))
    else:  # the Image feature's storage {"bytes": None, "path": ...}, as an attacker writes it (save_to_disk embeds)
        struct = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}})
        datasets.Dataset.from_dict({"image": [{"bytes": None, "path": str(bad)}]}, features=struct
                                   ).save_to_disk(str(folder))
        info = json.loads((folder / "dataset_info.json").read_text())
        info["features"] = {"image": {"_type": "Image"}}
        (folder / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError) as info:
        load_hf(tmp_path / "data", False, str(folder), num_workers=0, **mode)
    expected = "is not a regular file" if target == "fifo" else "leads outside the dataset's folder"
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_parquet_dictionary_bomb_is_refused_from_its_footer(tmp_path):
    """Row 6: 10 million dictionary-encoded rows in ~200 KB would decode to 1.4 GB."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vae_lab.data.hf import load_hf
    from vae_lab.errors import DataError

    column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(10_000_000, dtype=np.int32)), pa.array([b"x" * 140]))
    file = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"image": column}), file, row_group_size=10_000_000)
    assert file.stat().st_size < 1_000_000
    with pytest.raises(DataError) as info:
        load_hf(tmp_path / "data", False, str(file), num_workers=0)
    assert f"Parquet file {file} row group 0 (10,000,000 rows) decodes to about 1.4 GB, over the limit of 1 GB" \
        in str(info.value) and "VAE_LAB_MAX_PARQUET_GB" in str(info.value)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A real PNG whose header says width x height, compressed to a few KB (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compressobj(9)
    data = b"".join(rows.compress(b"\0" * (width + 1)) for _ in range(min(height, 64))) + rows.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width,height", [(30000, 30000), (12000, 12000)])
@pytest.mark.parametrize("path", ["folder", "streamed", "parquet"])
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch, width, height, path):
    """Row 7: a 900 Mpx PNG (PIL's own error) and a 144 Mpx one (PIL only warns, then decodes 3.3 GB for sixty)."""
    import datasets

    from vae_lab.data.hf import load_hf
    from vae_lab.data.registry import load_image_folder
    from vae_lab.errors import DataError

    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    bomb = bomb_png(folder / "bomb.png", width, height)
    assert bomb.stat().st_size < 200_000
    if path == "parquet":
        file = tmp_path / "images.parquet"
        datasets.Dataset.from_dict({"image": [{"bytes": bomb.read_bytes(), "path": None}]},
                                   features=datasets.Features({"image": datasets.Image()})).to_parquet(str(file))
        load = lambda: load_hf(tmp_path / "data", False, str(file), num_workers=0)  # noqa: E731
    else:
        load = lambda: load_image_folder(tmp_path, False, str(tmp_path / "images"),  # noqa: E731
                                         in_memory=path == "folder", num_workers=0)
    with pytest.raises(DataError) as info:
        load()
    message = str(info.value)
    assert "over the limit of 40,000,000 pixels checked before decoding" in message and "\n" not in message
    assert "VAE_LAB_MAX_IMAGE_PIXELS" in message and (path == "parquet" or "bomb.png" in message)
    if width == 12000:
        assert "12000x12000 (144,000,000 pixels)" in message


def test_an_npz_with_an_object_array_under_any_key_is_one_line(tmp_path):
    """Row 8: the documented line, as for .npy, naming the key."""
    import numpy as np

    from vae_lab.data.registry import load_array_file
    from vae_lab.errors import DataError

    file = tmp_path / "data.npz"
    np.savez(file, x=np.zeros((4, 8, 8), np.uint8), unused=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError) as info:
        load_array_file(tmp_path, False, str(file))
    assert str(info.value) == (f"cannot read array file {file}: 'unused' is an object array (dtype=object), which "
                               "cannot be read: save numeric arrays")


def saved_dataset(tmp_path: Path) -> Path:
    import datasets

    folder = tmp_path / "saved"
    image = png(tmp_path / "img.png").read_bytes()
    datasets.Dataset.from_dict({"image": [{"bytes": image, "path": None}]},
                               features=datasets.Features({"image": datasets.Image()})).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("tamper", ["malformed_info", "nested_info", "unknown_feature", "state_traversal",
                                    "loading_script"])
def test_a_hostile_hf_folder_is_one_line_and_opens_nothing_outside(tmp_path, tamper, monkeypatch):
    """Row 9 (hf): malformed or deeply nested JSON, an unknown feature type, a state.json naming ../../etc/passwd,
    a loading-script folder."""
    import builtins

    from vae_lab.data.hf import load_hf
    from vae_lab.errors import DataError

    folder = saved_dataset(tmp_path)
    info, state = folder / "dataset_info.json", folder / "state.json"
    if tamper == "malformed_info":
        info.write_text(info.read_text()[:40])
    elif tamper == "nested_info":
        info.write_text('{"features": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif tamper == "unknown_feature":
        info.write_text(json.dumps({"features": {"image": {"_type": "Evil"}}}))
    elif tamper == "state_traversal":
        data = json.loads(state.read_text())
        data["_data_files"][0]["filename"] = "../../etc/passwd"
        state.write_text(json.dumps(data))
    else:
        for name in ("dataset_info.json", "state.json"):
            (folder / name).unlink()
        (folder / "saved.py").write_text("import os\nos.system('touch pwned')\n")
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    with pytest.raises(DataError) as err:
        load_hf(tmp_path / "data", False, str(folder), num_workers=0)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    assert not any("passwd" in f for f in opened)


# ---------------------------------------------------------------- row 10: a small address-space limit


@pytest.mark.parametrize("script", ["train.py", "scripts/evaluate.py", "scripts/sample.py"])
def test_a_small_ulimit_v_is_one_line_naming_memory(script, tmp_path):
    """Row 10: `ulimit -v 3G` killed `import torch` with std::bad_alloc; now one line at start, exit 2."""
    proc = subprocess.run(["bash", "-c", f"ulimit -v 3145728; exec {sys.executable} {script} model={tmp_path}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "ulimit -v" in proc.stderr
    assert "error: the address-space limit (ulimit -v) is 3.0 GiB, too little memory" in proc.stderr
