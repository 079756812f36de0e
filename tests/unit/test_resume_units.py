"""vae_lab.resume's pure pieces: what `resume=` names, the model check, the settings a resume may change without
comment, and prepare_resume on hand-made checkpoints (no Trainer: what it returns, prints and sets)."""

import pytest
import torch
from omegaconf import OmegaConf

from vae_lab import resume
from vae_lab.errors import CheckpointError, ConfigError

MODEL = {"latent_dim": 3, "architecture": "mlp"}


def training_checkpoint(path, step: int = 7, model: dict = MODEL):
    """A file read_checkpoint accepts as a training checkpoint (every key resuming needs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"model": dict(model)}, "optimizer_states": [], "loops": {},
                "global_step": step}, path)
    return path


def test_resolve_resume_accepts_a_run_directory_or_one_of_its_checkpoints(tmp_path):
    run = tmp_path / "run"
    last = training_checkpoint(run / "checkpoints" / "last.ckpt")
    assert resume.resolve_resume(str(run)) == (run, last)
    best = training_checkpoint(run / "checkpoints" / "best.ckpt")
    assert resume.resolve_resume(str(best)) == (run, best)
    outside = training_checkpoint(tmp_path / "loose.ckpt")
    with pytest.raises(ConfigError, match=f"use ckpt_path={outside} to start a new run from it"):
        resume.resolve_resume(str(outside))
    with pytest.raises(ConfigError, match="no such run directory"):
        resume.resolve_resume(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=f"nothing to resume: .* resume=auto hydra.run.dir={tmp_path / 'empty'}"):
        resume.resolve_resume(str(tmp_path / "empty"))


@pytest.mark.parametrize(("env", "secondary"), [({}, False), ({"LOCAL_RANK": "0"}, False), ({"LOCAL_RANK": "1"}, True),
                                                ({"NODE_RANK": "2"}, True), ({"SLURM_PROCID": "1"}, True),
                                                ({"RANK": "3"}, True), ({"RANK": ""}, False)])
def test_is_secondary_rank(monkeypatch, env, secondary):
    for key in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resume.is_secondary_rank() is secondary


def test_check_model_names_every_difference(tmp_path):
    ckpt = {"hyper_parameters": {"model": {"latent_dim": 3, "architecture": "mlp", "net": {"hidden_dims": [16]}}}}
    resume.check_model(ckpt, {"latent_dim": 3, "architecture": "mlp", "net": {"hidden_dims": [16]}}, tmp_path)
    with pytest.raises(CheckpointError) as info:
        resume.check_model(ckpt, {"latent_dim": 8, "architecture": "mlp", "prior": "vamp"}, tmp_path / "last.ckpt")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'last.ckpt'} was trained with a different model (")
    assert "latent_dim: 3 in the checkpoint, 8 now" in message
    assert "net: {'hidden_dims': [16]} in the checkpoint, None now" in message
    assert "prior: None in the checkpoint, 'vamp' now" in message and "architecture" not in message


def test_flat_keys_of_a_nested_config():
    assert resume._flat({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b.": 1, "a.c.d.": [1, 2], "e.": {}}
    assert resume._flat(5) == {"": 5}


def test_changed_settings_lists_training_settings_only():
    run = OmegaConf.create({"seed": 42, "schedule": {"lr": 0.001, "batch_size": 64}, "trainer": {"max_steps": 10},
                            "paths": {"output_dir": "/a"}, "model": {"latent_dim": 3}, "resume": None,
                            "loss": {"beta": "${schedule.lr}"}})
    same = OmegaConf.create(OmegaConf.to_container(run))
    assert resume.changed_settings(run, same) == []
    new = OmegaConf.create({"seed": 7, "schedule": {"lr": 0.0003, "batch_size": 64}, "trainer": {"max_steps": 99},
                            "paths": {"output_dir": "/b"}, "model": {"latent_dim": 8}, "resume": "/a",
                            "loss": {"beta": "${schedule.lr}"}, "extra": {"k": 1}})
    # how long it trains, where it writes, the model (checked apart) and resume= itself are free; interpolations are
    # compared unresolved (loss.beta follows schedule.lr: not a change of its own)
    assert resume.changed_settings(run, new) == ["extra.k (unset) → 1", "schedule.lr 0.001 → 0.0003", "seed 42 → 7"]


def test_prepare_resume_without_resume_or_ckpt_path_is_a_fresh_start(tmp_path):
    cfg = OmegaConf.create({"resume": None, "ckpt_path": None, "paths": {"output_dir": str(tmp_path)}})
    assert resume.prepare_resume(cfg, MODEL) is None
    cfg.resume = "auto"  # in-process resume=auto in a directory with no checkpoint: a fresh start too
    assert resume.prepare_resume(cfg, MODEL) is None


def test_prepare_resume_continues_in_place_and_hides_later_tensorboard_events(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    last = training_checkpoint(tmp_path / "checkpoints" / "last.ckpt", step=7)
    cfg = OmegaConf.create({"resume": "auto", "ckpt_path": None, "paths": {"output_dir": str(tmp_path)},
                            "logger": {"tb": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger"},
                                       "csv": {"_target_": "lightning.pytorch.loggers.CSVLogger"}}})
    assert resume.prepare_resume(cfg, MODEL) == str(last)
    assert cfg.logger.tb.purge_step == 7 and "purge_step" not in cfg.logger.csv
    assert capsys.readouterr().out == f"resuming from {last} (global step 7)\n"
    with pytest.raises(CheckpointError, match="different model"):
        resume.prepare_resume(cfg, {**MODEL, "latent_dim": 4})


def test_prepare_resume_refuses_another_directory_and_warns_of_changed_settings(tmp_path, capsys):
    run = tmp_path / "run"
    training_checkpoint(run / "checkpoints" / "last.ckpt")
    (run / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create({"seed": 42, "paths": {"output_dir": str(run)}}), run / ".hydra" / "config.yaml")
    cfg = OmegaConf.create({"resume": str(run), "ckpt_path": None, "seed": 7,
                            "paths": {"output_dir": str(tmp_path / "elsewhere")}})
    with pytest.raises(ConfigError, match=f"continues {run}, but this run writes to {tmp_path / 'elsewhere'}"):
        resume.prepare_resume(cfg, MODEL)
    cfg.paths.output_dir = str(run)
    assert resume.prepare_resume(cfg, MODEL) == str(run / "checkpoints" / "last.ckpt")
    assert capsys.readouterr().err == (f"warning: resume={run} continues with changed training settings: seed 42 → 7 "
                                       "(.hydra/config.yaml keeps the first run's)\n")


def test_prepare_resume_from_ckpt_path_reads_and_checks_that_file(tmp_path):
    ckpt = training_checkpoint(tmp_path / "elsewhere" / "x.ckpt", step=3)
    cfg = OmegaConf.create({"resume": None, "ckpt_path": str(ckpt), "paths": {"output_dir": str(tmp_path / "new")}})
    assert resume.prepare_resume(cfg, MODEL) == str(ckpt)
    torch.save({"weights": torch.zeros(1)}, ckpt)
    with pytest.raises(CheckpointError, match="is not a vae_lab training checkpoint"):
        resume.prepare_resume(cfg, MODEL)
