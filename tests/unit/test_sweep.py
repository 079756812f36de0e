"""Sweeps without a process: the DDP guard of a multirun, the grid and launcher configs, the report of a sweep
directory (tests/cli/test_sweep_cli.py runs real multiruns and scripts/sweep_report.py)."""

import json
from itertools import product
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.hydra_callbacks import check_multirun_strategy
from vae_lab.errors import ConfigError
from vae_lab.sweep_report import _axis_values, collect_jobs, write_report

BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


@pytest.mark.parametrize(
    "strategy, devices, num_nodes, launcher, refused",
    [
        ("ddp", 2, 1, BASIC, True),
        ("ddp", 2, 1, JOBLIB, True),  # a loky worker's rank 1 would re-run the sweep too
        ("ddp", 1, 2, BASIC, True),
        ("ddp_find_unused_parameters_true", 4, 1, BASIC, True),
        ("fsdp", 2, 1, BASIC, True),
        ("ddp", 4, 2, SLURM, False),  # SLURM starts every rank as a task
        ("ddp_spawn", 2, 1, BASIC, False),
        ("ddp", 1, 1, BASIC, False),  # one process: nothing is re-launched
        ("auto", 1, 1, JOBLIB, False),
    ],
)
def test_multirun_strategy_guard(strategy, devices, num_nodes, launcher, refused):
    trainer = {"strategy": strategy, "devices": devices, "num_nodes": num_nodes}
    if refused:
        with pytest.raises(ConfigError, match="ddp_spawn"):
            check_multirun_strategy(trainer, launcher)
    else:
        check_multirun_strategy(trainer, launcher)


def test_sweep_config_is_the_beta_by_latent_grid():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["+sweep=beta_latent"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # `python train.py +sweep=beta_latent` needs no -m
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    jobs = {tuple(sorted(job)) for job in batches[0]}
    expected = {tuple(sorted([f"loss.beta={b}", f"model.latent_dim={d}"]))
                for b, d in product(["0.5", "1", "4"], ["2", "16", "128"])}
    assert jobs == expected


def test_joblib_launcher_composes_with_n_jobs():
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "JoblibLauncher" and launcher.joblib["n_jobs"] == 2


def test_slurm_launcher_config_makes_a_valid_sbatch_script_offline(tmp_path, monkeypatch):
    """hydra/launcher=slurm composes, takes its shape from trainer.*, and submitit accepts every parameter."""
    import submitit
    from hydra.utils import instantiate
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    overrides = ["hydra/launcher=slurm", "hardware=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                 "hydra.launcher.gpus_per_node=4", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert launcher.params["tasks_per_node"] == 4 and launcher.params["nodes"] == 2
    check_multirun_strategy(cfg.trainer, cfg.hydra.launcher._target_)  # DDP under SLURM is allowed

    # The launcher's own translation to submitit (SlurmLauncher.launch), minus the submission: no cluster here.
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # pretend srun exists
    params = dict(launcher.params)
    executor = submitit.AutoExecutor(cluster="slurm", folder=str(tmp_path / "submitit"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=240"):
        assert line in script, script


def write_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None = None,
              failure: str | None = None) -> Path:
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if failure is not None:
        (job / "failure.json").write_text(json.dumps({"error": failure}))
    return job


def test_report_orders_numeric_axes_slices_a_third_axis_and_flags_incomplete_jobs(tmp_path):
    jobs = list(product(["16", "128", "2"], ["4", "0.5"], ["a", "b"]))
    for k, (dim, beta, arch) in enumerate(jobs):
        value = -100.0 + int(dim) / 10 - float(beta) + (arch == "b")
        metrics = {"val": {"val/elbo_nats": value, "val/bits_per_dim": 1.0 - value / 1000}, "wall_time_s": 1.5}
        write_job(tmp_path, str(k), [f"model.latent_dim={dim}", f"loss.beta={beta}", f"arch={arch}", "seed=1"],
                  metrics=None if k == 5 else metrics)
    report = write_report(tmp_path, axes=["loss.beta", "model.latent_dim"])
    assert report.axes == ["loss.beta", "model.latent_dim", "arch"]  # seed=1 is common, not an axis
    assert [j.name for j in report.jobs] == [str(k) for k in range(12)]
    assert report.jobs[5].status == "incomplete" and "killed or is still running" in report.jobs[5].error
    assert report.best.overrides == {"model.latent_dim": "128", "loss.beta": "0.5", "arch": "b", "seed": "1"}
    heatmaps = sorted(p.name for p in tmp_path.glob("heatmap_*.png"))
    assert heatmaps == ["heatmap_val_elbo_nats__arch=a.png", "heatmap_val_elbo_nats__arch=b.png"]

    lower = write_report(tmp_path, metric="val/bits_per_dim")  # lower is better: the same best job
    assert lower.mode == "min" and lower.best.name == report.best.name
    assert _axis_values(collect_jobs(tmp_path), "model.latent_dim") == ["2", "16", "128"]  # numbers, not text


def test_report_errors_are_one_clear_line(tmp_path):
    write_job(tmp_path, "0", ["loss.beta=1"], metrics={"val": {"val/elbo_nats": -1.0, "val/rate_nats": 2.0}})
    write_job(tmp_path, "1", ["loss.beta=2"], failure="boom")
    with pytest.raises(ConfigError, match="available: val/elbo_nats, val/rate_nats"):
        write_report(tmp_path, metric="val/nope")
    with pytest.raises(ConfigError, match="set mode=max or mode=min"):
        write_report(tmp_path, metric="val/rate_nats")
    assert write_report(tmp_path, metric="val/rate_nats", mode="min").best.name == "0"
    with pytest.raises(ConfigError, match="swept keys: loss.beta"):
        write_report(tmp_path, axes=["seed"])
    with pytest.raises(ConfigError, match="no job directory"):
        write_report(tmp_path / "1" / ".hydra")


def test_report_shows_the_disentanglement_section_as_columns(tmp_path):
    for k, (loss, mig) in enumerate([("elbo", 0.05), ("beta_tcvae", 0.2), ("factor_vae", 0.1)]):
        metrics = {"val": {"val/elbo_nats": -100.0 - k},
                   "disentanglement": {"mig": mig, "dci_disentanglement": 2 * mig, "mi_matrix": [[0.1]],
                                       "factor_names": ["shape"], "seed": 0, "num_train": 10000}}
        write_job(tmp_path, str(k), [f"loss={loss}", "dataset=sprites"], metrics=metrics)
    report = write_report(tmp_path, metric="disentanglement/mig")
    assert report.mode == "max" and report.best.overrides["loss"] == "beta_tcvae"
    header = (tmp_path / "report.csv").read_text().splitlines()[0].split(",")
    assert "disentanglement/mig" in header and "disentanglement/dci_disentanglement" in header
    assert not any(h.endswith(("/seed", "/num_train", "mi_matrix")) for h in header)
