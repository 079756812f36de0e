"""Reliability III (issue 29), the rows that evaluate() reads a damaged or hostile run in-process: a truncated
metrics.json, a run config that is not YAML, a saved config that would look things up in the environment. Each
works on a copy of the shared tiny trained run (`trained_run("plain")`)."""

import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.run_dir import read_metrics, run_config

TOKEN = "hf_reliabilityIIIsecret0123456789"


@pytest.fixture
def run(trained_run, tmp_path) -> Path:
    """A private copy of a finished tiny run (checkpoints, metrics.json, .hydra/config.yaml as Hydra saves it)."""
    return Path(shutil.copytree(trained_run("plain"), tmp_path / "run"))


@pytest.fixture
def evaluate(compose):
    """evaluate(model, out, *overrides) -> evaluate_model's (report, out) on 20 validation examples."""
    from vae_lab.evaluation import evaluate_model

    def run_evaluate(model: str, out: Path, *overrides: str):
        return evaluate_model(compose(f"model={model}", "split=val", "iwae_samples=2", "progress=false",
                                      "max_examples=20", f"out={out}", *overrides, config="evaluate"))

    return run_evaluate


# ---------------------------------------------------------------- row 9: damaged run files


def test_a_truncated_metrics_json_is_one_line(tmp_path, run, evaluate):
    (run / "metrics.json").write_text('{"best_checkpoint": "checkpoints/be')
    with pytest.raises(CheckpointError) as info:
        read_metrics(run)
    assert "metrics.json is not valid JSON" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError):
        evaluate(str(run), tmp_path / "e.json")


@pytest.mark.parametrize("text", ["a: [1, 2\nb: {", "- just\n- a list\n", "\x00\x01binary", "a: &x [*x]"])
def test_a_non_yaml_run_config_is_one_line(tmp_path, run, evaluate, text):
    from vae_lab.resume import prepare_resume

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


# ---------------------------------------------------------------- row 16: a run's config resolves no environment


def test_a_runs_saved_config_looks_nothing_up_in_the_environment(tmp_path, monkeypatch, run, evaluate):
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
