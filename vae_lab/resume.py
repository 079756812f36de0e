"""Continuing a run: `resume=<run dir>` (in place, from its latest checkpoint) and `ckpt_path=` (a new run from a
checkpoint's full state), each checked against the model this config builds before anything is written."""

import os
from pathlib import Path

from omegaconf import DictConfig, open_dict

from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.rules import plain
from vae_lab.run_dir import CHECKPOINT_DIR, LAST, latest_checkpoint, read_checkpoint


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
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise ConfigError(
            f"resume={value}: no checkpoint in {path / CHECKPOINT_DIR} (expected {LAST}); nothing to resume, "
            f"start a new run without resume="
        )
    return path, ckpt


def is_secondary_rank() -> bool:
    """A DDP rank other than 0: Lightning re-runs the command line for them, into rank 0's directory."""
    return any(int(os.environ.get(k, "0") or 0) > 0 for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"))


def check_model(ckpt: dict, expected: dict, path: Path) -> None:
    """Refuse a checkpoint whose VAE init args differ from the ones this config builds."""
    saved = dict(ckpt["hyper_parameters"]["model"])
    keys = sorted(set(saved) | set(expected))
    diffs = [f"{k}: {saved.get(k)!r} in the checkpoint, {expected.get(k)!r} now" for k in keys
             if plain(saved.get(k)) != plain(expected.get(k))]
    if diffs:
        raise CheckpointError(
            f"{path} was trained with a different model ({'; '.join(diffs)}); resume with the run's own overrides "
            f"(its .hydra/overrides.yaml) or start a new run"
        )


def prepare_resume(cfg: DictConfig, model_kwargs: dict) -> str | None:
    """The checkpoint `trainer.fit` continues from (None: a fresh start), checked against the model config.

    Continuing in the same directory: TensorBoard is told to hide events the interrupted process logged after
    this checkpoint (`purge_step`), so curves continue without duplicate steps.
    """
    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume == "auto":  # in-process use (the Hydra guard has already resolved it for the CLI)
        here = Path(cfg.paths.output_dir)
        resume = str(here) if latest_checkpoint(here) else None
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
    check_model(ckpt, model_kwargs, path)
    step = int(ckpt["global_step"])
    for node in (cfg.get("logger") or {}).values():
        if node is not None and str(node.get("_target_", "")).endswith("TensorBoardLogger"):
            with open_dict(node):
                node.purge_step = step
    if not is_secondary_rank():
        print(f"resuming from {path} (global step {step})")
    return str(path)
