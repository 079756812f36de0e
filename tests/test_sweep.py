"""Sweeps: a multirun through the CLI with its report, failed jobs, the DDP guard, the grid and launcher configs."""

import csv
import json
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.hydra_callbacks import check_multirun_strategy
from vae_lab.errors import ConfigError
from vae_lab.sweep_report import _axis_values, collect_jobs, write_report

ROOT = Path(__file__).resolve().parents[1]
TINY = ["trainer.max_steps=6", "trainer.max_epochs=-1", "trainer.val_check_interval=3", "print_config=false",
        "callbacks=no_images",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=none"]
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def run_cli(*args, timeout=400):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def flat_metrics(job_dir: Path) -> dict[str, float]:
    metrics = json.loads((job_dir / "metrics.json").read_text())
    flat = {k: v for section in ("val", "test") for k, v in metrics.get(section, {}).items()}
    flat.update({k: metrics[k] for k in ("wall_time_s", "global_step", "epochs")})
    return flat


def test_multirun_writes_a_report_of_every_job_and_records_failures(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # 2 x 3 jobs: a 2 x 2 grid that trains, and latent_dim=0 that fails at start in both rows
    proc = run_cli("train.py", "-m", "loss.beta=0.5,4", "model.latent_dim=2,3,0", f"hydra.sweep.dir={sweep_dir}",
                   *TINY)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr

    job_dirs = sorted((d for d in sweep_dir.iterdir() if d.is_dir()), key=lambda d: int(d.name))
    assert [d.name for d in job_dirs] == ["0", "1", "2", "3", "4", "5"]  # the failures did not stop the sweep
    ok = [d for d in job_dirs if (d / "metrics.json").is_file()]
    failed = [d for d in job_dirs if (d / "failure.json").is_file()]
    assert [d.name for d in ok] == ["0", "1", "3", "4"] and [d.name for d in failed] == ["2", "5"]
    for d in job_dirs:
        assert (d / ".hydra" / "config.yaml").is_file()
    for d in ok:
        assert (d / "checkpoints" / "last.ckpt").is_file()
    failure = json.loads((failed[0] / "failure.json").read_text())
    assert failure["error"] == "model.latent_dim=0 is invalid: must be an integer >= 1"
    assert "model.latent_dim=0" in failure["overrides"] and "ConfigError" in failure["traceback"]

    rows = read_csv(sweep_dir / "report.csv")
    assert [r["job"] for r in rows] == [d.name for d in job_dirs]
    for row, d in zip(rows, job_dirs):
        overrides = dict(line.split("=", 1) for line in OmegaConf.load(d / ".hydra" / "overrides.yaml"))
        assert row["loss.beta"] == overrides["loss.beta"] and row["model.latent_dim"] == overrides["model.latent_dim"]
        if d in ok:
            assert row["status"] == "ok" and row["error"] == ""
            expected = flat_metrics(d)
            expected.pop("val/loss")  # beta-weighted: left out of the table on purpose
            assert {k: float(row[k]) for k in expected} == expected  # exactly the numbers of its metrics.json
            assert {"val/elbo_nats", "val/distortion_nats", "val/rate_nats", "wall_time_s"} <= set(expected)
        else:
            assert row["status"] == "failed" and row["error"] == failure["error"]
            assert row["val/elbo_nats"] == ""

    elbos = {d.name: flat_metrics(d)["val/elbo_nats"] for d in ok}
    best = max(elbos, key=elbos.get)
    md = (sweep_dir / "report.md").read_text()
    assert f"Best job by val/elbo_nats (higher is better): {best} " in md
    assert f"Best job by val/elbo_nats (higher is better): {best} " in proc.stdout
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + len(job_dirs)  # header + one row per job
    assert md.count("| failed |") == 2
    with Image.open(sweep_dir / "heatmap_val_elbo_nats.png") as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 150
    assert "heatmap_val_elbo_nats.png" in md


def test_multirun_with_ddp_is_refused_at_start(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train.py", "-m", "hardware=ddp_cpu", "loss.beta=1,2", f"hydra.sweep.dir={sweep_dir}", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: trainer.strategy=ddp cannot run in a local multirun")
    for alternative in ("hydra/launcher=slurm or submitit_slurm", "trainer.strategy=ddp_spawn", "hydra/launcher=joblib",
                        "hardware=cpu"):
        assert alternative in lines[0]
    assert not sweep_dir.exists()  # refused before any job started


def test_swept_ddp_jobs_fail_with_the_guard_and_the_sweep_still_reports(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train.py", "-m", "hardware=ddp_cpu,ddp", "trainer.devices=2", f"hydra.sweep.dir={sweep_dir}",
                   timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(sweep_dir / "report.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("trainer.strategy=ddp_spawn" in r["error"] for r in rows)
    assert "No finished job has val/elbo_nats" in (sweep_dir / "report.md").read_text()
    assert not list(sweep_dir.glob("heatmap_*.png"))


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


def test_sweep_report_script(tmp_path):
    for k, beta in enumerate(["0.5", "1", "4"]):
        write_job(tmp_path, str(k), [f"loss.beta={beta}"],
                  metrics={"val": {"val/elbo_nats": -float(beta), "val/ssim": float(beta) / 10}})
    proc = run_cli("scripts/sweep_report.py", str(tmp_path), "metric=val/ssim", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Best job by val/ssim (higher is better): 2 (loss.beta=4)" in proc.stdout
    assert (tmp_path / "report.md").is_file() and (tmp_path / "heatmap_val_ssim.png").is_file()
    assert len(read_csv(tmp_path / "report.csv")) == 3

    bad = run_cli("scripts/sweep_report.py", str(tmp_path / "missing"), timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        f"error: sweep_dir={str(tmp_path / 'missing')!r} is not a directory: give a multirun directory "
        "(hydra.sweep.dir, e.g. outputs/multiruns/<date>_<time>)"]


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("train.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss.beta=1,4",
                   f"hydra.sweep.dir={sweep_dir}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(sweep_dir / "report.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row in rows:
        assert float(row["val/elbo_nats"]) == flat_metrics(sweep_dir / row["job"])["val/elbo_nats"]


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
