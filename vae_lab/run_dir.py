"""The run-directory contract: what a run writes where, its latest and best checkpoint, reading a checkpoint.

<run dir>/
  .hydra/config.yaml, .hydra/overrides.yaml   the resolved config and the command line's overrides
  run_info.json                                git commit, package versions, argv (and every resume)
  checkpoints/last.ckpt, checkpoints/best-*.ckpt
  metrics.json                                 final metrics of the best checkpoint (`best_checkpoint` names it)
  artifact/                                    the shareable model (vae_lab.artifact)
  images/, tensorboard/, train.log
  .run.lock                                    the running process's exclusive lock (its PID inside); a sweep
                                               job holds its job directory's, the sweep its .sweep.lock
"""

import json
import os
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.io import atomic_write_json

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
ARTIFACT_DIR = "artifact"
METRICS_NAME = "metrics.json"
RUN_INFO_NAME = "run_info.json"
IMAGES_DIR = "images"
CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
# What a started run leaves behind; a directory holding any of them belongs to that run.
RUN_FILES = (METRICS_NAME, RUN_INFO_NAME)
RUN_GLOBS = (f"{CHECKPOINT_DIR}/*.ckpt", "tensorboard/events.out.tfevents.*")
# What makes a run worth keeping: a checkpoint to resume or results. A directory with none of them holds only
# the leftovers of a start that died early; a new start there sets these aside (ABORTED_PREFIX<time>/) and begins.
RESULT_FILES = (METRICS_NAME, ARTIFACT_DIR)
RESULT_GLOBS = (f"{CHECKPOINT_DIR}/*.ckpt", "hpc_ckpt_*.ckpt")
LEFTOVERS = (".hydra", "train.log", RUN_INFO_NAME, "tensorboard", "csv", IMAGES_DIR, CHECKPOINT_DIR)
ABORTED_PREFIX = ".aborted_"
# Checkpoint keys only a training checkpoint has (a weights-only or foreign file lacks them).
TRAINING_KEYS = ("state_dict", "hyper_parameters", "optimizer_states", "loops", "global_step")
MODEL_PREFIX = "model."  # VAEModule keeps the VAE at `self.model`
EMA_STATE_KEY = "EMA"  # checkpoint["callbacks"][EMA_STATE_KEY]: the weights' moving average (vae_lab.callbacks.ema)
LOCK_NAME = ".run.lock"
SWEEP_LOCK_NAME = ".sweep.lock"  # in hydra.sweep.dir, held by the sweep's launching process
_HELD_LOCKS: dict[str, tuple] = {}  # lock file -> (its FileLock, created by us), held until this process ends


def lock_run_dir(run_dir: Path) -> bool:
    """Hold `run_dir`'s exclusive OS lock (flock) for the rest of this process, or refuse naming its holder's PID.

    True if this call took it, False if this process already held it.

    The kernel releases the lock when the holder dies, however it dies: no stale lock survives a SIGKILL.
    """
    return _take_lock(Path(run_dir), LOCK_NAME, lambda folder, holder: (
        f"{folder} is in use by another run (PID {holder}); wait for it to end or choose another directory"))


def lock_sweep_dir(sweep_dir: Path) -> bool:
    """Hold a sweep directory's lock (SWEEP_LOCK_NAME) for the sweep's life: a second sweep there is refused, as a
    second run in a run directory is (each job also holds its own directory's run lock while it runs)."""
    return _take_lock(Path(sweep_dir), SWEEP_LOCK_NAME, lambda folder, holder: (
        f"hydra.sweep.dir={folder} is in use by another sweep (PID {holder}); wait for it to end or choose another "
        "sweep directory"))


def _take_lock(folder: Path, name: str, refusal) -> bool:
    from filelock import FileLock, Timeout

    folder = folder.expanduser().resolve()
    if str(folder / name) in _HELD_LOCKS:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    created = not path.exists()
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = path.read_text().strip() if path.is_file() else ""
        raise ConfigError(refusal(folder, holder or "unknown, starting")) from None
    path.write_text(f"{os.getpid()}\n")  # the contenders read it; filelock never truncates the file
    _HELD_LOCKS[str(path)] = (lock, created)
    return True


def run_dir_busy(run_dir: Path) -> bool:
    """Whether another live process holds `run_dir`'s lock (it may be writing there right now)."""
    from filelock import FileLock, Timeout

    path = Path(run_dir).expanduser().resolve() / LOCK_NAME
    if str(path) in _HELD_LOCKS or not path.is_file():
        return False
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False


def unlock_run_dir(run_dir: Path) -> None:
    """Release the lock taken by lock_run_dir (a refused start), removing its file if this process created it."""
    lock, created = _HELD_LOCKS.pop(str(Path(run_dir).expanduser().resolve() / LOCK_NAME), (None, False))
    if lock is not None:
        if created:
            (Path(lock.lock_file)).unlink(missing_ok=True)
        lock.release()


def run_contents(run_dir: Path) -> list[str]:
    """The files that mark `run_dir` as holding a run (empty if it does not)."""
    if not run_dir.is_dir():
        return []
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    for pattern in RUN_GLOBS:
        if next(iter(run_dir.glob(pattern)), None) is not None:
            found.append(pattern.split("/")[0] + "/")
    return found


def run_results(run_dir: Path) -> list[str]:
    """The checkpoints and results in `run_dir` (empty: nothing there is worth keeping or resuming)."""
    if not run_dir.is_dir():
        return []
    found = [name for name in RESULT_FILES if (run_dir / name).exists()]
    return found + [pattern for pattern in RESULT_GLOBS if next(iter(run_dir.glob(pattern)), None) is not None]


def set_aside_leftovers(run_dir: Path) -> Path | None:
    """Move the files of a start that left no checkpoint and no results into `<run dir>/.aborted_<time>/`
    (None: there were none). Nothing is deleted; the caller holds the directory's lock and checked run_results."""
    leftovers = [run_dir / name for name in LEFTOVERS if (run_dir / name).exists()]
    if not leftovers:
        return None
    stamp = f"{ABORTED_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = run_dir / stamp, 1
    while aside.exists():  # two dead starts within one second
        aside, n = run_dir / f"{stamp}_{n}", n + 1
    aside.mkdir()
    for path in leftovers:
        path.rename(aside / path.name)
    return aside


def latest_checkpoint(run_dir: Path) -> Path | None:
    """Where training continues from: the newest of last.ckpt and Lightning's SLURM `hpc_ckpt_*.ckpt`, else the
    newest `checkpoints/*.ckpt`, else None."""
    folder = run_dir / CHECKPOINT_DIR
    newest = lambda paths: max(paths, key=lambda p: p.stat().st_mtime, default=None)  # noqa: E731
    latest = [folder / LAST] if (folder / LAST).is_file() else []
    latest += list(run_dir.glob("hpc_ckpt_*.ckpt")) if run_dir.is_dir() else []
    return newest(latest) or (newest(list(folder.glob("*.ckpt"))) if folder.is_dir() else None)


def best_checkpoint(run_dir: Path) -> Path:
    """The weights a run's results describe: metrics.json's `best_checkpoint` (inside this run directory) if it
    still exists, else the latest."""
    best = own_file(run_dir, (read_metrics(run_dir) or {}).get("best_checkpoint"))
    if best is not None and best.is_file():
        return best
    latest = latest_checkpoint(run_dir)
    if latest is None:
        raise CheckpointError(f"no checkpoint in {run_dir / CHECKPOINT_DIR} (expected {LAST} or best-*.ckpt)")
    return latest


def relative_name(run_dir: Path, path: str | Path | None) -> str | None:
    """`path` as metrics.json records it: relative to the run directory, so a copied or moved run stays whole."""
    if not path:
        return None
    try:
        return Path(path).resolve().relative_to(Path(run_dir).resolve()).as_posix()
    except ValueError:
        return str(path)  # a checkpoint kept outside the run (a custom dirpath): as it was given


def own_file(run_dir: Path, recorded: str | None) -> Path | None:
    """A file metrics.json names, inside `run_dir`: a relative name, or (written before runs were relocatable) an
    absolute path read as `checkpoints/<its name>`; never a file of another directory (the original of a copy)."""
    if not isinstance(recorded, str) or not recorded:
        return None
    name = Path(recorded)
    name = Path(CHECKPOINT_DIR) / name.name if name.is_absolute() else name
    path = Path(run_dir) / name
    return path if path.resolve().is_relative_to(Path(run_dir).resolve()) else None


def read_metrics(run_dir: Path) -> dict | None:
    """metrics.json (None if absent); a truncated or damaged one is one CheckpointError line."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is not valid JSON ({reason}): a truncated or damaged file; delete it (the "
                              "latest checkpoint is then used) or resume the run to write it again") from None
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{path} is not a JSON object of metrics: a damaged file; delete it")
    return metrics


def run_config(run_dir: Path | None) -> DictConfig | None:
    """The run's composed config (.hydra/config.yaml), when there is one, read as data.

    Bounded safe YAML; a resolver call (`${oc.env:...}`, `${hydra:...}`) stays literal text, so re-reading a run
    (perhaps someone else's) looks nothing up in this process's environment; links between its own keys
    (`${schedule.lr}`) still resolve. `paths.output_dir` is this directory: a moved run refers to itself.
    """
    from vae_lab.saved_yaml import RESOLVER_CALL, yaml_data

    if run_dir is None or not os.path.lexists(Path(run_dir) / CONFIG_FILE):
        return None
    cfg = yaml_data(Path(run_dir) / CONFIG_FILE, Path(run_dir), literal=RESOLVER_CALL)
    if OmegaConf.is_dict(cfg.get("paths")):
        cfg.paths.output_dir = str(Path(run_dir))
    return cfg


def run_overrides(run_dir: Path) -> list[str]:
    path = Path(run_dir) / OVERRIDES_FILE
    return list(OmegaConf.to_container(OmegaConf.load(path))) if path.is_file() else []


def read_checkpoint(path: Path, training: bool = True) -> dict:
    """A checkpoint's contents (tensors memory-mapped, weights_only: no code runs), or a one-line CheckpointError.

    `training`: also require what resuming needs (optimizer states, loops); False for reading weights only.
    """
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip; a cut-off one has no central directory
        raise CheckpointError(f"cannot read checkpoint {path}: truncated (an interrupted write or copy?) or not a "
                              "PyTorch checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a pickle that needs code to load, a damaged archive member ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        reason = next((line for line in lines if "Unsupported global" in line), lines[0]).split(" Please ")[0]
        raise CheckpointError(f"cannot read checkpoint {path} with weights_only=True (vae_lab never runs code "
                              f"from a checkpoint): {reason[:200]}") from None
    needed = TRAINING_KEYS if training else ("state_dict", "hyper_parameters")
    missing = [k for k in needed if not isinstance(ckpt, dict) or k not in ckpt]
    if missing or not isinstance(ckpt["hyper_parameters"], dict) or "model" not in ckpt["hyper_parameters"]:
        what = ", ".join(missing) or "hyper_parameters.model"
        hint = ("; resume needs a last.ckpt written by train.py (init_from= starts a new run from a model's weights)"
                if training else "")
        raise CheckpointError(f"{path} is not a vae_lab {'training ' if training else ''}checkpoint (no {what}){hint}")
    return ckpt


def model_state(ckpt: dict, raw: bool = False) -> tuple[dict, dict]:
    """(model init args, model state_dict) of a checkpoint read by read_checkpoint: the weights its run evaluated,
    i.e. the moving average when the run kept one with `ema.evaluate` (unless `raw`), else the raw weights."""
    ema = ema_state(ckpt)
    if ema is not None and not raw:
        return dict(ckpt["hyper_parameters"]["model"]), dict(ema["state_dict"])
    state = {k[len(MODEL_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(MODEL_PREFIX)}
    return dict(ckpt["hyper_parameters"]["model"]), state


def ema_state(ckpt: dict) -> dict | None:
    """The checkpoint's EMA callback state when its run evaluated with the average, else None."""
    ema = (ckpt.get("callbacks") or {}).get(EMA_STATE_KEY)
    return ema if isinstance(ema, dict) and ema.get("evaluate") and ema.get("state_dict") else None


def ema_description(decay: float) -> str:
    return f"ema({decay:g})"


def weights_description(ckpt: dict) -> str:
    """Which weights model_state gives: `ema(0.999)` or `raw`."""
    ema = ema_state(ckpt)
    return ema_description(float(ema["decay"])) if ema is not None else "raw"


def record_run(run_dir: Path, resumed_from: str | None) -> None:
    """Write run_info.json for a new run; a resumed run appends to the list of resumes instead of replacing it."""
    from vae_lab.run_info import run_info

    info = run_info()
    path = run_dir / RUN_INFO_NAME
    if resumed_from is not None and path.is_file():
        previous = json.loads(path.read_text())
        previous.setdefault("resumes", []).append(
            {"checkpoint": resumed_from, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv,
             "git_commit": info.get("git_commit")}
        )
        info = previous
    atomic_write_json(path, info)


def recover_swap(path: Path) -> None:
    """Finish an artifact swap a crash interrupted at `path` (a no-op without its debris), unless a live run holds
    the directory around it (it may be swapping right now)."""
    from vae_lab.artifact import recover_artifact

    path = Path(path)
    if (path.is_dir() or not path.exists()) and path.parent.is_dir() and not run_dir_busy(path.parent):
        recover_artifact(path)
