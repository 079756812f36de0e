"""Sweeps through the CLI: `train.py -m` multiruns with their report, failed jobs, the DDP guard at start and in jobs,
TensorBoard's HPARAMS tab of a sweep, and scripts/sweep_report.py.

The three default-tier multiruns run once per test session, in one interpreter (`driver.run_many`: `train.py -m`'s
own entry point, Hydra's command-line parsing and launcher included), shared read-only by the tests below.
"""

import csv
import json
import os
from pathlib import Path

import pytest
from filelock import FileLock
from omegaconf import OmegaConf
from PIL import Image

import driver

TINY = ["trainer.max_steps=6", "trainer.max_epochs=-1", "trainer.val_check_interval=3", "print_config=false",
        "callbacks=no_images", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def flat_metrics(job_dir: Path) -> dict[str, float]:
    metrics = json.loads((job_dir / "metrics.json").read_text())
    flat = {k: v for section in ("val", "test") for k, v in metrics.get(section, {}).items()}
    flat.update({k: metrics[k] for k in ("wall_time_s", "global_step", "epochs")})
    return flat


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """(the folder of the sweeps, name -> the run_many result of `train.py -m ...`), run by whichever xdist worker
    asks first; the others wait on the lock and read the finished sweeps.

    grid: 2 x 3 jobs, a 2 x 2 grid that trains (TensorBoard on) and latent_dim=0 that fails at start in both rows;
    ddp_refused: DDP in a local multirun, refused before any job; ddp_jobs: swept DDP hardware, each job refused."""
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "sweep_cli"
    shared.mkdir(parents=True, exist_ok=True)
    done = shared / "results.json"
    with FileLock(str(shared / "build.lock")):
        if not done.exists():
            cases = [
                ("ddp_refused", ["-m", "hardware=ddp_cpu", "loss.beta=1,2",
                                 f"hydra.sweep.dir={shared / 'ddp_refused'}"]),
                ("ddp_jobs", ["-m", "hardware=ddp_cpu,ddp", "trainer.devices=2",
                              f"hydra.sweep.dir={shared / 'ddp_jobs'}"]),
                ("grid", ["-m", "loss.beta=0.5,4", "model.latent_dim=2,3,0", f"hydra.sweep.dir={shared / 'grid'}",
                          *TINY, "logger=tensorboard"]),
            ]
            results = driver.run_many("train", cases, out=shared / "partial.json")
            done.write_text(json.dumps(results))
    return shared, json.loads(done.read_text())


def test_multirun_writes_a_report_of_every_job_and_records_failures(sweeps):
    shared, results = sweeps
    sweep_dir, proc = shared / "grid", results["grid"]
    assert proc["code"] == 0, proc["stderr"][-4000:]
    assert "Traceback" not in proc["stderr"]

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
    assert f"Best job by val/elbo_nats (higher is better): {best} " in proc["stdout"]
    assert sum(line.startswith("| ") for line in md.splitlines()) == 1 + len(job_dirs)  # header + one row per job
    assert md.count("| failed |") == 2
    with Image.open(sweep_dir / "heatmap_val_elbo_nats.png") as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 150
    assert "heatmap_val_elbo_nats.png" in md


def test_multirun_with_ddp_is_refused_at_start(sweeps):
    shared, results = sweeps
    line = driver.one_error_line(results["ddp_refused"], "error: trainer.strategy=ddp cannot run in a local multirun")
    assert line.startswith("error: trainer.strategy=ddp cannot run in a local multirun")
    assert results["ddp_refused"]["stderr"].strip().splitlines() == [line]  # nothing else on stderr
    for alternative in ("hydra/launcher=slurm or submitit_slurm", "trainer.strategy=ddp_spawn", "hydra/launcher=joblib",
                        "hardware=cpu"):
        assert alternative in line
    assert not (shared / "ddp_refused").exists()  # refused before any job started


def test_swept_ddp_jobs_fail_with_the_guard_and_the_sweep_still_reports(sweeps):
    shared, results = sweeps
    sweep_dir = shared / "ddp_jobs"
    assert results["ddp_jobs"]["code"] == 0, results["ddp_jobs"]["stderr"][-3000:]
    rows = read_csv(sweep_dir / "report.csv")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("trainer.strategy=ddp_spawn" in r["error"] for r in rows)
    assert "No finished job has val/elbo_nats" in (sweep_dir / "report.md").read_text()
    assert not list(sweep_dir.glob("heatmap_*.png"))


def hparams_of(event_dir) -> tuple[dict, dict]:
    """(hparams of the session, final/* scalars) as TensorBoard's HPARAMS plugin would read them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(event_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    params = {}
    for key, value in start.session_start_info.hparams.items():
        params[key] = value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
    metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"] if tag in metric_tags}
    return params, scalars


def test_a_sweep_lines_up_in_the_hparams_tab(sweeps):
    """Each finished job of the grid writes its swept and overridden values (not hydra.*) and its final metrics."""
    shared, results = sweeps
    sweep_dir = shared / "grid"
    assert results["grid"]["code"] == 0, results["grid"]["stderr"][-3000:]
    for job, beta, latent_dim in (("0", 0.5, 2.0), ("1", 0.5, 3.0), ("3", 4.0, 2.0), ("4", 4.0, 3.0)):
        params, scalars = hparams_of(sweep_dir / job / "tensorboard")
        assert params == {"loss.beta": beta, "model.latent_dim": latent_dim, "trainer.max_steps": 6.0,
                          "trainer.max_epochs": -1.0, "trainer.val_check_interval": 3.0, "print_config": False,
                          "callbacks": "no_images", "trainer.enable_progress_bar": False,
                          "trainer.enable_model_summary": False, "logger": "tensorboard"}
        val = json.loads((sweep_dir / job / "metrics.json").read_text())["val"]
        assert set(scalars) == {f"final/{k}" for k in val}  # digits: no test split
        assert scalars["final/val/elbo_nats"] == val["val/elbo_nats"]


def test_sweep_report_script(tmp_path):
    sweep = tmp_path / "sweep"
    for k, beta in enumerate(["0.5", "1", "4"]):  # a finished sweep's job folders, as train.py -m leaves them
        (sweep / str(k) / ".hydra").mkdir(parents=True)
        (sweep / str(k) / ".hydra" / "overrides.yaml").write_text(f"- loss.beta={beta}\n")
        (sweep / str(k) / "metrics.json").write_text(
            json.dumps({"val": {"val/elbo_nats": -float(beta), "val/ssim": float(beta) / 10}}))
    results = driver.run_many("sweep_report", [("ok", [sweep, "metric=val/ssim"]),
                                               ("missing", [sweep / "missing"])], out=tmp_path / "out.json")
    proc = results["ok"]
    assert proc["code"] == 0, proc["stderr"]
    assert "Best job by val/ssim (higher is better): 2 (loss.beta=4)" in proc["stdout"]
    assert (sweep / "report.md").is_file() and (sweep / "heatmap_val_ssim.png").is_file()
    assert len(read_csv(sweep / "report.csv")) == 3

    bad = results["missing"]
    driver.one_error_line(bad)
    assert bad["stderr"].strip().splitlines() == [
        f"error: sweep_dir={str(sweep / 'missing')!r} is not a directory: give a multirun directory "
        "(hydra.sweep.dir, e.g. outputs/multiruns/<date>_<time>)"]


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel(tmp_path):
    sweep_dir = tmp_path / "sweep"
    driver.run("train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "loss.beta=1,4",
               f"hydra.sweep.dir={sweep_dir}", *TINY, "logger=none", ok=True)
    rows = read_csv(sweep_dir / "report.csv")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row in rows:
        assert float(row["val/elbo_nats"]) == flat_metrics(sweep_dir / row["job"])["val/elbo_nats"]
