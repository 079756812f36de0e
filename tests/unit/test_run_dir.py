"""vae_lab.run_dir's pure pieces: what marks a directory as a run, setting a dead start's files aside, which
checkpoint is latest and best, metrics.json's relocatable names, reading a checkpoint, and the in-process lock."""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from vae_lab import run_dir as rd
from vae_lab.errors import CheckpointError, ConfigError


def touch(path: Path, data: bytes = b"", mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_run_contents_and_results_name_what_marks_a_run(tmp_path):
    assert rd.run_contents(tmp_path / "missing") == [] and rd.run_results(tmp_path / "missing") == []
    assert rd.run_contents(tmp_path) == [] and rd.run_results(tmp_path) == []
    touch(tmp_path / "train.log")  # a leftover, not a mark of a run
    assert rd.run_contents(tmp_path) == []
    touch(tmp_path / "run_info.json")
    touch(tmp_path / "tensorboard" / "events.out.tfevents.1")
    assert rd.run_contents(tmp_path) == ["run_info.json", "tensorboard/"]
    assert rd.run_results(tmp_path) == []  # started, but nothing worth keeping
    touch(tmp_path / "checkpoints" / "last.ckpt")
    touch(tmp_path / "hpc_ckpt_1.ckpt")
    assert rd.run_contents(tmp_path) == ["run_info.json", "checkpoints/", "tensorboard/"]
    assert rd.run_results(tmp_path) == ["checkpoints/*.ckpt", "hpc_ckpt_*.ckpt"]
    touch(tmp_path / "metrics.json", b"{}")
    (tmp_path / "artifact").mkdir()
    assert rd.run_results(tmp_path)[:2] == ["metrics.json", "artifact"]


def test_set_aside_leftovers_moves_a_dead_starts_files_and_deletes_nothing(tmp_path):
    assert rd.set_aside_leftovers(tmp_path) is None  # nothing to move: no folder made
    assert list(tmp_path.iterdir()) == []
    touch(tmp_path / ".hydra" / "config.yaml", b"a: 1\n")
    touch(tmp_path / "train.log", b"log")
    touch(tmp_path / "tensorboard" / "events.out.tfevents.1", b"ev")
    touch(tmp_path / "notes.txt", b"the user's own file")  # not a leftover of a run: stays
    first = rd.set_aside_leftovers(tmp_path)
    assert first.parent == tmp_path and first.name.startswith(rd.ABORTED_PREFIX)
    assert (first / ".hydra" / "config.yaml").read_bytes() == b"a: 1\n" and (first / "train.log").read_bytes() == b"log"
    assert (first / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"ev"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, "notes.txt"])
    touch(tmp_path / "train.log", b"second")  # a second dead start within the same second: its own folder
    second = rd.set_aside_leftovers(tmp_path)
    assert second != first and second.name.startswith(first.name.split("_", 2)[0])
    assert (second / "train.log").read_bytes() == b"second" and (first / "train.log").read_bytes() == b"log"


def test_latest_checkpoint_prefers_the_newest_of_last_and_slurms(tmp_path):
    assert rd.latest_checkpoint(tmp_path / "missing") is None
    assert rd.latest_checkpoint(tmp_path) is None
    now = time.time()
    best = touch(tmp_path / "checkpoints" / "best-epoch000-step10.ckpt", mtime=now)
    assert rd.latest_checkpoint(tmp_path) == best  # no last.ckpt: the newest of checkpoints/*.ckpt
    older = touch(tmp_path / "checkpoints" / "best-epoch000-step5.ckpt", mtime=now - 100)
    assert rd.latest_checkpoint(tmp_path) == best != older
    last = touch(tmp_path / "checkpoints" / "last.ckpt", mtime=now - 50)
    assert rd.latest_checkpoint(tmp_path) == last  # last.ckpt wins over a newer best-*.ckpt
    hpc = touch(tmp_path / "hpc_ckpt_3.ckpt", mtime=now - 10)
    assert rd.latest_checkpoint(tmp_path) == hpc  # Lightning's SLURM checkpoint, newer than last.ckpt
    os.utime(last, (now, now))
    assert rd.latest_checkpoint(tmp_path) == last


def test_relative_name_and_own_file_keep_a_run_relocatable(tmp_path):
    run = tmp_path / "run"
    ckpt = touch(run / "checkpoints" / "best.ckpt")
    assert rd.relative_name(run, ckpt) == "checkpoints/best.ckpt"
    assert rd.relative_name(run, None) is None and rd.relative_name(run, "") is None
    outside = tmp_path / "elsewhere" / "x.ckpt"
    assert rd.relative_name(run, outside) == str(outside)  # a custom dirpath: kept as given
    assert rd.own_file(run, "checkpoints/best.ckpt") == run / "checkpoints" / "best.ckpt"
    # an absolute path (a run written before runs were relocatable, or the original of a copy): this run's file
    assert rd.own_file(run, str(tmp_path / "original" / "checkpoints" / "best.ckpt")) == run / "checkpoints" / "best.ckpt"
    assert rd.own_file(run, "../other/checkpoints/best.ckpt") is None  # never a file of another directory
    assert rd.own_file(run, None) is None and rd.own_file(run, "") is None and rd.own_file(run, 3) is None


def test_best_checkpoint_reads_metrics_json_else_the_latest(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        rd.best_checkpoint(tmp_path)
    last = touch(tmp_path / "checkpoints" / "last.ckpt")
    assert rd.best_checkpoint(tmp_path) == last  # no metrics.json
    best = touch(tmp_path / "checkpoints" / "best-epoch000-step20.ckpt")
    (tmp_path / "metrics.json").write_text(json.dumps({"best_checkpoint": "checkpoints/best-epoch000-step20.ckpt"}))
    assert rd.best_checkpoint(tmp_path) == best
    best.unlink()  # named but gone: the latest
    assert rd.best_checkpoint(tmp_path) == last


def test_read_metrics_is_none_a_dict_or_one_line(tmp_path):
    assert rd.read_metrics(tmp_path) is None
    (tmp_path / "metrics.json").write_text('{"global_step": 3}')
    assert rd.read_metrics(tmp_path) == {"global_step": 3}
    for damaged in ('{"global_step": ', "[1, 2]", b"\xff\xfe"):
        path = tmp_path / "metrics.json"
        path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
        with pytest.raises(CheckpointError) as info:
            rd.read_metrics(tmp_path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_run_config_is_data_that_refers_to_its_own_directory(tmp_path):
    assert rd.run_config(None) is None and rd.run_config(tmp_path) is None
    touch(tmp_path / ".hydra" / "config.yaml",
          b"paths:\n  output_dir: /somewhere/else\n  data_dir: ${oc.env:HOME}\nschedule:\n  lr: 0.5\n"
          b"other:\n  lr: ${schedule.lr}\n")
    cfg = rd.run_config(tmp_path)
    assert cfg.paths.output_dir == str(tmp_path)  # a moved run refers to itself
    assert cfg.paths.data_dir == "${oc.env:HOME}"  # a resolver call stays literal text
    assert cfg.other.lr == 0.5  # links between its own keys resolve
    assert rd.run_overrides(tmp_path) == []
    touch(tmp_path / ".hydra" / "overrides.yaml", b"- seed=3\n- model.latent_dim=4\n")
    assert rd.run_overrides(tmp_path) == ["seed=3", "model.latent_dim=4"]


def test_read_checkpoint_refuses_what_is_not_a_vae_lab_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        rd.read_checkpoint(tmp_path / "none.ckpt")
    torch.save({"state_dict": {}, "global_step": 1}, tmp_path / "whole.ckpt")
    data = (tmp_path / "whole.ckpt").read_bytes()
    touch(tmp_path / "cut.ckpt", data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        rd.read_checkpoint(tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match=r"is not a vae_lab training checkpoint \(no hyper_parameters, "
                                              r"optimizer_states, loops\); resume needs"):
        rd.read_checkpoint(tmp_path / "whole.ckpt")
    weights = {"state_dict": {"model.w": torch.ones(2), "other.v": torch.zeros(1)},
               "hyper_parameters": {"model": {"latent_dim": 2}}}
    torch.save(weights, tmp_path / "weights.ckpt")
    with pytest.raises(CheckpointError, match="training checkpoint"):
        rd.read_checkpoint(tmp_path / "weights.ckpt")
    ckpt = rd.read_checkpoint(tmp_path / "weights.ckpt", training=False)  # weights only: enough for a model
    kwargs, state = rd.model_state(ckpt)
    assert kwargs == {"latent_dim": 2} and list(state) == ["w"] and torch.equal(state["w"], torch.ones(2))
    torch.save({**weights, "hyper_parameters": {"lr": 1}}, tmp_path / "nomodel.ckpt")
    with pytest.raises(CheckpointError, match=r"\(no hyper_parameters.model\)"):
        rd.read_checkpoint(tmp_path / "nomodel.ckpt", training=False)


def test_model_state_gives_the_moving_average_when_the_run_evaluated_with_it():
    ckpt = {"state_dict": {"model.w": torch.ones(1)}, "hyper_parameters": {"model": {"latent_dim": 2}}}
    assert rd.weights_description(ckpt) == "raw" and rd.ema_state(ckpt) is None
    ema = {"evaluate": True, "decay": 0.999, "state_dict": {"w": torch.full((1,), 7.0)}}
    ckpt["callbacks"] = {rd.EMA_STATE_KEY: ema}
    assert rd.weights_description(ckpt) == "ema(0.999)"
    assert torch.equal(rd.model_state(ckpt)[1]["w"], torch.full((1,), 7.0))
    assert torch.equal(rd.model_state(ckpt, raw=True)[1]["w"], torch.ones(1))
    ckpt["callbacks"][rd.EMA_STATE_KEY] = {**ema, "evaluate": False}  # kept, but the run evaluated the raw weights
    assert rd.weights_description(ckpt) == "raw" and torch.equal(rd.model_state(ckpt)[1]["w"], torch.ones(1))


def test_record_run_appends_each_resume(tmp_path, monkeypatch):
    monkeypatch.setattr("vae_lab.run_info.run_info", lambda: {"git_commit": "abc", "argv": ["first"]})
    rd.record_run(tmp_path, None)
    assert json.loads((tmp_path / "run_info.json").read_text()) == {"git_commit": "abc", "argv": ["first"]}
    rd.record_run(tmp_path, "/r/checkpoints/last.ckpt")
    rd.record_run(tmp_path, "/r/checkpoints/last.ckpt")
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["argv"] == ["first"] and len(info["resumes"]) == 2
    assert info["resumes"][0]["checkpoint"] == "/r/checkpoints/last.ckpt" and info["resumes"][0]["git_commit"] == "abc"
    rd.record_run(tmp_path, None)  # a new run replaces the record
    assert "resumes" not in json.loads((tmp_path / "run_info.json").read_text())


def test_the_run_lock_is_taken_once_per_process_and_released(tmp_path):
    run = tmp_path / "run"
    assert rd.lock_run_dir(run) is True
    try:
        assert (run / rd.LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert rd.lock_run_dir(run) is False  # already ours
        assert rd.run_dir_busy(run) is False  # held by this process: not "another" run
    finally:
        rd.unlock_run_dir(run)
    assert not (run / rd.LOCK_NAME).exists()  # created by us: removed
    assert rd.run_dir_busy(run) is False
    rd.unlock_run_dir(run)  # not held: a no-op


def test_a_lock_held_elsewhere_is_refused_naming_its_holder(tmp_path):
    from filelock import FileLock

    run = tmp_path / "run"
    run.mkdir()
    other = FileLock(run / rd.LOCK_NAME, timeout=0)  # another holder (a separate lock object: flock is per open file)
    other.acquire()
    try:
        (run / rd.LOCK_NAME).write_text("4242\n")
        assert rd.run_dir_busy(run) is True
        with pytest.raises(ConfigError, match=r"is in use by another run \(PID 4242\)"):
            rd.lock_run_dir(run)
    finally:
        other.release()
    assert rd.run_dir_busy(run) is False
