"""Which run directory a run writes to, and the checkpoint it continues from (`resume=<run dir>`).

A new run never writes into a directory that already holds a run; `resume=<run dir>` continues that run in
place from its newest checkpoint, after checking that the checkpoint can be read and was made by the model this
config builds. The checks run before anything is written, so a refused command leaves every file as it was.
"""

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vae_lab.cli.errors import report_user_errors
from vae_lab.errors import CheckpointError, ConfigError

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
# What a started run leaves behind; a directory holding any of them belongs to that run.
RUN_FILES = ("metrics.json", "run_info.json")
RUN_GLOBS = (f"{CHECKPOINT_DIR}/*.ckpt", "tensorboard/events.out.tfevents.*")
# Checkpoint keys only a training checkpoint has (a weights-only or foreign file lacks them).
TRAINING_KEYS = ("state_dict", "hyper_parameters", "optimizer_states", "loops", "global_step")


def run_contents(run_dir: Path) -> list[str]:
    """The files that mark `run_dir` as holding a run (empty if it does not)."""
    if not run_dir.is_dir():
        return []
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    for pattern in RUN_GLOBS:
        if next(iter(run_dir.glob(pattern)), None) is not None:
            found.append(pattern.split("/")[0] + "/")
    return found


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest of `checkpoints/last.ckpt` and Lightning's SLURM `hpc_ckpt_*.ckpt`, else the newest
    `checkpoints/*.ckpt`, else None."""
    folder = run_dir / CHECKPOINT_DIR
    newest = lambda paths: max(paths, key=lambda p: p.stat().st_mtime, default=None)  # noqa: E731
    latest = [folder / LAST] if (folder / LAST).is_file() else []
    latest += list(run_dir.glob("hpc_ckpt_*.ckpt")) if run_dir.is_dir() else []
    return newest(latest) or (newest(list(folder.glob("*.ckpt"))) if folder.is_dir() else None)


def resolve_resume(value: str) -> tuple[Path, Path]:
    """`resume=<run dir>` (or a .ckpt inside `<run dir>/checkpoints/`) -> (run dir, checkpoint)."""
    path = Path(str(value)).expanduser().resolve()
    if path.is_file():
        if path.parent.name != CHECKPOINT_DIR:
            raise ConfigError(
                f"resume={value}: a checkpoint outside <run dir>/{CHECKPOINT_DIR}/ has no run directory to continue; "
                f"use ckpt_path={value} to start a new run from it"
            )
        return path.parent.parent, path
    if not path.is_dir():
        raise ConfigError(f"resume={value}: no such run directory (pass the directory of the run to continue)")
    ckpt = find_checkpoint(path)
    if ckpt is None:
        raise ConfigError(
            f"resume={value}: no checkpoint in {path / CHECKPOINT_DIR} (expected {LAST}); nothing to resume, "
            f"start a new run without resume="
        )
    return path, ckpt


def _is_secondary_rank() -> bool:
    """A DDP rank other than 0: Lightning re-runs the command line for them, into rank 0's directory."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


class RunDirGuard(Callback):
    """Hydra callback: validate the config and pick the run directory before Hydra writes anything into it.

    A fresh run whose `hydra.run.dir` already holds a run is refused; `resume=<run dir>` points hydra.run.dir
    at that run and leaves its `.hydra/` as it was (the resumed config is checked against its checkpoint).
    """

    @report_user_errors
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vae_lab.config import validate

        validate(config)
        if config.get("resume") == "auto":  # same command line for the first start and every requeue (SLURM)
            run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser()
            config.resume = str(run_dir) if find_checkpoint(run_dir) else None
        resume, ckpt_path = config.get("resume"), config.get("ckpt_path")
        if resume is not None and ckpt_path is not None:
            raise ConfigError(f"resume={resume} and ckpt_path={ckpt_path}: set one of them")
        if resume is not None and config.get("init_from"):
            raise ConfigError(f"resume={resume} continues a run with its own weights; init_from= starts a new one: "
                              "set one of them")
        if ckpt_path is not None and not Path(str(ckpt_path)).expanduser().is_file():
            hint = " (Lightning's 'last'/'best' are not supported: continue a run with resume=<run dir>)"
            raise ConfigError(f"ckpt_path={ckpt_path}: no such checkpoint file" + (
                hint if str(ckpt_path) in ("last", "best", "hpc", "registry") else ""))
        if resume is not None:
            run_dir, _ = resolve_resume(resume)
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.run.dir = str(run_dir)
                config.hydra.output_subdir = None  # keep the run's own .hydra/config.yaml and overrides.yaml
            return
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser()
        found = run_contents(run_dir)
        if found and not _is_secondary_rank():
            raise ConfigError(
                f"hydra.run.dir={run_dir} already holds a run ({', '.join(found)}); choose a new directory, "
                f"or continue that run with resume={run_dir}"
            )

    @report_user_errors
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") is not None:
            raise ConfigError(f"resume={config.resume} continues one run; it cannot be combined with -m (multirun)")
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser()
        taken = sorted(p.name for p in sweep_dir.glob("*") if p.is_dir() and run_contents(p))
        if taken:
            jobs = ", ".join(taken[:3]) + (", ..." if len(taken) > 3 else "")
            raise ConfigError(f"hydra.sweep.dir={sweep_dir} already holds runs ({jobs}); choose a new sweep directory")


def read_checkpoint(path: Path) -> dict:
    """A training checkpoint's contents (tensors memory-mapped), or a one-line CheckpointError."""
    import zipfile

    import torch

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
    missing = [k for k in TRAINING_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing or "model" not in ckpt["hyper_parameters"]:
        what = ", ".join(missing) or "hyper_parameters.model"
        raise CheckpointError(f"{path} is not a vae_lab training checkpoint (no {what}); resume needs a last.ckpt "
                              "written by train.py (init_from= starts a new run from a model's weights)")
    return ckpt


def check_model(ckpt: dict, expected: dict, path: Path) -> None:
    """Refuse a checkpoint whose VAE init args differ from the ones this config builds."""
    saved = dict(ckpt["hyper_parameters"]["model"])
    keys = sorted(set(saved) | set(expected))
    diffs = [f"{k}: {saved.get(k)!r} in the checkpoint, {expected.get(k)!r} now" for k in keys
             if _plain(saved.get(k)) != _plain(expected.get(k))]
    if diffs:
        raise CheckpointError(
            f"{path} was trained with a different model ({'; '.join(diffs)}); resume with the run's own overrides "
            f"(its .hydra/overrides.yaml) or start a new run"
        )


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal (JSON round trips turn one into the other)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def prepare_resume(cfg: DictConfig, spec) -> str | None:
    """The checkpoint `trainer.fit` continues from (None: a fresh start), checked against the model config.

    Continuing in the same directory: TensorBoard is told to hide events the interrupted process logged after
    this checkpoint (`purge_step`), so curves continue without duplicate steps.
    """
    from vae_lab.build import model_kwargs

    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume == "auto":  # in-process use (the Hydra guard has already resolved it for the CLI)
        here = Path(cfg.paths.output_dir)
        resume = str(here) if find_checkpoint(here) else None
    if resume is None and ckpt_path is None:
        return None
    if resume is not None:
        run_dir, path = resolve_resume(resume)
        here = Path(cfg.paths.output_dir).expanduser().resolve()
        if here != run_dir:
            raise ConfigError(f"resume={resume} continues {run_dir}, but this run writes to {here}")
    else:
        path = Path(str(ckpt_path)).expanduser().resolve()
    ckpt = read_checkpoint(path)
    check_model(ckpt, model_kwargs(cfg, spec), path)
    step = int(ckpt["global_step"])
    for node in (cfg.get("logger") or {}).values():
        if node is not None and str(node.get("_target_", "")).endswith("TensorBoardLogger"):
            with open_dict(node):
                node.purge_step = step
    if not _is_secondary_rank():
        print(f"resuming from {path} (global step {step})")
    return str(path)


def record_run(run_dir: Path, resumed_from: str | None) -> None:
    """Write run_info.json for a new run; a resumed run appends to the list of resumes instead of replacing it."""
    from vae_lab.io import atomic_write_json
    from vae_lab.run_info import run_info

    info = run_info()
    path = run_dir / "run_info.json"
    if resumed_from is not None and path.is_file():
        previous = json.loads(path.read_text())
        previous.setdefault("resumes", []).append(
            {"checkpoint": resumed_from, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv,
             "git_commit": info.get("git_commit")}
        )
        info = previous
    atomic_write_json(path, info)


def reliability_callbacks(cfg: DictConfig) -> list:
    """The callbacks every training run gets: non-finite guard, and resumability (RNG state, signals, atomic IO)."""
    from vae_lab.callbacks.nonfinite import NonFiniteGuard
    from vae_lab.callbacks.resumable import Resumable

    guard = OmegaConf.to_container(cfg.guard, resolve=True) if cfg.get("guard") is not None else {}
    return [Resumable(Path(cfg.paths.output_dir) / CHECKPOINT_DIR), NonFiniteGuard(**guard)]
