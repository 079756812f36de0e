"""Hydra callback: validate the config and pick the run directory before Hydra writes anything into it."""

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write, open_dict

from vae_lab.cli.errors import printable, report_user_errors
from vae_lab.errors import ConfigError
from vae_lab.io import check_writable_dir
from vae_lab.resume import is_secondary_rank, resolve_resume
from vae_lab.run_dir import (latest_checkpoint, lock_run_dir, lock_sweep_dir, run_contents, run_dir_busy,
                             run_results, set_aside_leftovers, unlock_run_dir)


class RunDirGuard(Callback):
    """Hydra callback: validate the config and pick the run directory before Hydra writes anything into it.

    The run directory's lock is taken first (a second process there is refused, naming the holder's PID). A fresh
    run whose `hydra.run.dir` holds a checkpoint or results is refused; one that holds only the leftovers of a
    start that died before its first checkpoint sets them aside and starts there. `resume=<run dir>` points
    hydra.run.dir at that run and leaves its `.hydra/` as it was (the resumed config is checked against its
    checkpoint).
    """

    @report_user_errors
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vae_lab.config import validate
        from vae_lab.vq_stage2 import validate as validate_stage2

        validate(config)
        validate_stage2(config)  # prior_of= names a VQ-VAE (loaded here: before the run directory is written)
        if config.get("resume") == "auto":  # same command line for the first start and every requeue (SLURM)
            run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser()
            config.resume = str(run_dir) if latest_checkpoint(run_dir) else None  # no checkpoint: start fresh there
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
            named = Path(str(resume)).expanduser().resolve()
            named = named.parent.parent if named.is_file() else named
            if not is_secondary_rank() and run_dir_busy(named):  # a live writer there (a sweep's job too) comes first
                lock_run_dir(named)  # refused naming its PID (or taken, if it ended just now)
            run_dir, _ = resolve_resume(resume)
            check_writable_dir(run_dir, "resume")
            if not is_secondary_rank():  # DDP's other ranks run in rank 0's directory, under its lock
                lock_run_dir(run_dir)
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.run.dir = str(run_dir)
                config.hydra.output_subdir = None  # keep the run's own .hydra/config.yaml and overrides.yaml
            return
        run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir"))).expanduser()
        check_writable_dir(run_dir, "hydra.run.dir")
        if is_secondary_rank():
            return
        took = lock_run_dir(run_dir)  # before any check or marker: a second start waits for nothing, it is refused
        if run_results(run_dir):
            if took:
                unlock_run_dir(run_dir)  # the refused start leaves the directory as it found it
            raise ConfigError(
                f"hydra.run.dir={run_dir} already holds a run ({', '.join(run_results(run_dir))}); "
                f"choose a new directory, or continue that run with resume={run_dir}"
            )
        aside = set_aside_leftovers(run_dir)
        if aside is not None:
            print(printable(f"{run_dir} held a start that left no checkpoint: its files are now in {aside}; "
                            "starting fresh"), file=sys.stderr, flush=True)

    @report_user_errors
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") is not None:
            raise ConfigError(f"resume={config.resume} continues one run; it cannot be combined with -m (multirun)")
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))).expanduser()
        check_writable_dir(sweep_dir, "hydra.sweep.dir")
        if not is_secondary_rank():
            lock_sweep_dir(sweep_dir)  # before the check: a second sweep started at the same moment is refused here
        taken = sorted(p.name for p in sweep_dir.glob("*") if p.is_dir() and run_contents(p))
        if taken:
            jobs = ", ".join(taken[:3]) + (", ..." if len(taken) > 3 else "")
            raise ConfigError(f"hydra.sweep.dir={sweep_dir} already holds runs ({jobs}); choose a new sweep directory")
