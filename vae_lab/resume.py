"""Continuing a run: `resume=<run dir>` (in place, from its latest checkpoint) and `ckpt_path=` (a new run from a
checkpoint's full state), each checked against the model this config builds before anything is written."""

import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.artifact import recover_artifact
from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.rules import plain
from vae_lab.run_dir import ARTIFACT_DIR, CHECKPOINT_DIR, LAST, latest_checkpoint, read_checkpoint, run_config


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
            f"resume={value}: no checkpoint in {path / CHECKPOINT_DIR} (expected {LAST}); nothing to resume: start "
            f"it again in place with resume=auto hydra.run.dir={path} (files of the dead start are set aside)"
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


# What a resumed run may change without comment: how long it trains, where and what it logs and prints. The
# model (`model.*`) is checked against the checkpoint and refused when it differs (check_model).
FREE_KEYS = ("resume", "ckpt_path", "print_config", "paths", "logger", "callbacks", "hub", "disentanglement", "model",
             "trainer.max_steps", "trainer.max_epochs", "trainer.max_time", "schedule.max_epochs",
             "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.default_root_dir")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b": leaf} of a plain config (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    return {k: v for key, value in node.items() for k, v in _flat(value, f"{prefix}{key}.").items()} if node \
        else {prefix: node}


def changed_settings(run_cfg: DictConfig, cfg: DictConfig) -> list[str]:
    """'key old → new' for every training setting of `cfg` that differs from the run's own config (unresolved)."""
    old = {k.rstrip("."): v for k, v in _flat(OmegaConf.to_container(run_cfg, resolve=False)).items()}
    new = {k.rstrip("."): v for k, v in _flat(OmegaConf.to_container(cfg, resolve=False)).items()}
    free = lambda key: any(key == f or key.startswith(f + ".") for f in FREE_KEYS)  # noqa: E731
    return [f"{k} {old.get(k, '(unset)')} → {new.get(k, '(unset)')}" for k in sorted(set(old) | set(new))
            if not free(k) and old.get(k) != new.get(k)]


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
        recover_artifact(run_dir / ARTIFACT_DIR)  # a swap a crash interrupted: put the complete copy back
        run_cfg = run_config(run_dir)
        changes = changed_settings(run_cfg, cfg) if run_cfg is not None else []
        if changes and not is_secondary_rank():  # a requeue-safe resume continues, but never silently
            print(f"warning: resume={resume} continues with changed training settings: {', '.join(changes)} "
                  "(.hydra/config.yaml keeps the first run's)", file=sys.stderr, flush=True)
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
