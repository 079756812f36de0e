"""Multirun plumbing: the sweep report at the end, the DDP guard at the start, a failed job recorded, not fatal."""

import functools
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from vae_lab.cli.errors import printable
from vae_lab.errors import ConfigError, VaeLabError
from vae_lab.run_dir import lock_run_dir, unlock_run_dir

log = logging.getLogger(__name__)

# Launchers under which each DDP rank is started by the cluster (SLURM tasks), not by re-running the command line.
RANK_STARTING_LAUNCHERS = ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",)
RELAUNCHING_STRATEGIES = ("ddp", "fsdp", "deepspeed")  # Lightning starts ranks 1.. by re-running sys.argv
NON_RELAUNCHING = ("spawn", "fork", "notebook")  # ddp_spawn, ddp_fork, ddp_notebook start ranks in-process


def _relaunches(trainer: Any) -> bool:
    """Whether this trainer config starts extra processes by re-running the command line."""
    trainer = trainer if trainer is not None else {}
    strategy = trainer.get("strategy", "auto")
    if not isinstance(strategy, str) or strategy.split("_")[0] not in RELAUNCHING_STRATEGIES:
        return False
    if any(word in strategy for word in NON_RELAUNCHING):
        return False
    devices, num_nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    as_list = isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices)
    one_device = devices == 1 or (as_list and len(devices) == 1)
    return not (one_device and num_nodes == 1)


def check_multirun_strategy(trainer: Any, launcher_target: str | None) -> None:
    """Refuse a multirun whose jobs would re-launch the whole sweep in every DDP rank."""
    if launcher_target in RANK_STARTING_LAUNCHERS or not _relaunches(trainer):
        return
    strategy = trainer.get("strategy")
    raise ConfigError(
        f"trainer.strategy={strategy} cannot run in a local multirun (-m): every DDP rank re-runs the command line "
        "and would re-launch the whole sweep. Use hydra/launcher=slurm or submitit_slurm (SLURM starts the ranks), "
        "trainer.strategy=ddp_spawn, or single-device jobs (hardware=cpu or gpu; in parallel with "
        "hydra/launcher=joblib)"
    )


def _one_line(err: BaseException) -> str:
    """A user error's own message; anything else as `Type: first line`."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text if isinstance(err, VaeLabError) else f"{type(err).__name__}: {text}".rstrip(": ")


def _is_rank_zero() -> bool:
    """Lightning's rank once Lightning is imported, else the cluster launcher's (SLURM, torchrun) environment."""
    if "lightning" in sys.modules:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        return getattr(rank_zero_only, "rank", 0) == 0
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def record_failure(job_dir: Path, err: BaseException, overrides: list[str], wall_time_s: float) -> Path:
    """Write <job dir>/failure.json: the one-line error the sweep report shows, and the traceback."""
    from vae_lab.io import atomic_write_json
    from vae_lab.sweep_report import FAILURE_FILE

    return atomic_write_json(job_dir / FAILURE_FILE, {
        "error": _one_line(err),
        "type": type(err).__name__,
        "traceback": "".join(traceback.format_exception(err)),
        "overrides": overrides,
        "wall_time_s": round(wall_time_s, 2),
    })


def multirun_job(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """In a multirun: refuse a relaunching DDP job, and record a failed job in failure.json instead of raising.

    Hydra's sweeper stops the sweep at the first job that raises and then skips on_multirun_end; a job that
    returns keeps the others running and the report still gets written. Outside a multirun `task` runs as is.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return task(cfg)
        hydra_cfg = HydraConfig.get()
        started = time.time()
        job_dir = Path(hydra_cfg.runtime.output_dir)
        try:
            took = _is_rank_zero() and lock_run_dir(job_dir)  # like a single run: resume=<job dir> now refused
        except ConfigError as err:  # another process holds this job's directory: leave it as it is
            print(printable(f"error: job {hydra_cfg.job.num} not run: {err}; the sweep goes on"), file=sys.stderr,
                  flush=True)
            return None
        try:
            check_multirun_strategy(cfg.get("trainer"), OmegaConf.select(hydra_cfg, "launcher._target_"))
            return task(cfg)
        except Exception as err:  # noqa: BLE001 - any failure of one job is recorded; the sweep goes on
            if _is_rank_zero():
                path = record_failure(job_dir, err, list(hydra_cfg.overrides.task), time.time() - started)
                log.info("job %s failed", hydra_cfg.job.num, exc_info=err)  # the traceback, into train.log
                print(printable(f"error: job {hydra_cfg.job.num} failed: {_one_line(err)} (recorded in {path}); "
                                "the sweep goes on"), file=sys.stderr, flush=True)
            return None
        finally:
            if took:  # the job is over: its directory can be resumed (a worker process may run further jobs)
                unlock_run_dir(job_dir)

    return wrapper


class SweepReport(Callback):
    """Hydra callback: refuse a DDP multirun at the start; write the sweep report (vae_lab.sweep_report) at the end.

    Args:
        metric: the metric of the heatmaps and of the best job, e.g. val/elbo_nats.
        mode: max | min | auto (from the metric's name).
        axes: the two override keys on the heatmap axes; None: the first two swept keys.
    """

    def __init__(self, metric: str = "val/elbo_nats", mode: str = "auto", axes: list[str] | None = None):
        self.metric = metric
        self.mode = mode
        self.axes = list(axes) if axes else None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from vae_lab.cli.errors import EXIT_USER_ERROR

        try:
            check_multirun_strategy(config.get("trainer"), OmegaConf.select(config, "hydra.launcher._target_"))
        except ConfigError as err:
            # SystemExit, not an exception: Hydra turns a callback's exceptions into warnings and goes on
            print(f"error: {printable(str(err))}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from vae_lab.sweep_report import REPORT_MD, write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report = write_report(sweep_dir, metric=self.metric, mode=self.mode, axes=self.axes)
        except VaeLabError as err:
            print(f"error: no sweep report: {printable(str(err))}", file=sys.stderr, flush=True)
            return
        failed = [j for j in report.jobs if j.status != "ok"]
        print(f"\nSweep report: {sweep_dir.resolve() / REPORT_MD} ({len(report.jobs)} jobs, {len(failed)} failed)")
        print(report.best_line)
        if failed:
            by_error = {}  # the same error once, with every job that hit it
            for job in failed:
                by_error.setdefault(job.error, []).append(job.name)
            print(printable(f"warning: {len(failed)} of {len(report.jobs)} jobs did not finish: "
                            + "; ".join(f"job {', '.join(names)}: {error}" for error, names in by_error.items())),
                  file=sys.stderr, flush=True)
