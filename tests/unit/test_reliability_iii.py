"""Reliability III (issue 29): tried as an attacker would. The rows whose pieces need no Trainer and no process:
relocatable runs, non-finite weights at load, the sweep report's planned jobs, escaped names, hostile data files.
Rows through evaluate() in-process: tests/integration/test_reliability_iii_runs.py; through real processes (locks,
kills, signals, memory limits): tests/cli/test_reliability_iii_cli.py."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from vae_lab import artifact, publish
from vae_lab.errors import CheckpointError
from vae_lab.run_dir import best_checkpoint, run_config


def small_vae(seed: int = 0):
    """A small MLP VAE on 8x8 images (the shape of the bundled digits), BatchNorm statistics moved off their init."""
    from vae_lab.model import VAE

    torch.manual_seed(seed)
    model = VAE(in_shape=[1, 8, 8], latent_dim=3, architecture="mlp", net={"hidden_dims": [16]}, likelihood="bernoulli")
    model.train()(torch.rand(6, 1, 8, 8))
    return model.eval()


def fake_run(run_dir: Path, seed: int = 0) -> Path:
    """A finished run's files, without training: a weights checkpoint, metrics.json naming it, the config as Hydra
    saves it (unresolved)."""
    from vae_lab.configs import compose_train

    model = small_vae(seed)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    (run_dir / "checkpoints").mkdir(parents=True)
    best = run_dir / "checkpoints" / "best-epoch000-step20.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"model": artifact.model_config(model)}}, best)
    (run_dir / "metrics.json").write_text(json.dumps({"best_checkpoint": str(best), "run_dir": str(run_dir)}))
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(compose_train(["dataset=digits", f"seed={seed}"]), run_dir / ".hydra" / "config.yaml")
    return run_dir


# ---------------------------------------------------------------- row 3: a run directory is relocatable


def test_a_copied_run_reads_its_own_best_checkpoint_not_the_originals(tmp_path):
    """Row 3 (fast): metrics.json of a copy names the original's absolute path; the copy's own file is used."""
    import shutil

    original = fake_run(tmp_path / "X")
    copy = Path(shutil.copytree(original, tmp_path / "Y"))
    assert best_checkpoint(copy) == copy / "checkpoints" / "best-epoch000-step20.ckpt"
    shutil.rmtree(original)
    fake_run(original, seed=1)  # a new run at X
    assert best_checkpoint(copy).is_relative_to(copy)
    cfg = run_config(copy)
    assert cfg.paths.output_dir == str(copy)  # not ${hydra:runtime.output_dir} of whoever reads it


def test_resumed_checkpoint_state_is_rebased_into_the_new_directory(tmp_path):
    """Row 3 (fast): ModelCheckpoint state of a checkpoint written at X points into Y when resumed at Y."""
    from types import SimpleNamespace

    from vae_lab.callbacks.resumable import rebase_checkpoint_paths

    old, new = str(tmp_path / "X" / "checkpoints"), str(tmp_path / "Y" / "checkpoints")
    callback = SimpleNamespace(state_key="ModelCheckpoint{k}", dirpath=new)
    state = {"dirpath": old, "best_model_path": f"{old}/best.ckpt", "last_model_path": f"{old}/last.ckpt",
             "kth_best_model_path": f"{old}/best.ckpt", "best_k_models": {f"{old}/best.ckpt": 1.0}}
    checkpoint = {"callbacks": {"ModelCheckpoint{k}": state}}
    rebase_checkpoint_paths(checkpoint, [callback])
    assert state == {"dirpath": new, "best_model_path": f"{new}/best.ckpt", "last_model_path": f"{new}/last.ckpt",
                     "kth_best_model_path": f"{new}/best.ckpt", "best_k_models": {f"{new}/best.ckpt": 1.0}}


# ---------------------------------------------------------------- row 4: non-finite weights


@pytest.fixture
def nan_artifact(tmp_path) -> Path:
    from hub_fixtures import put_nan_in_first_tensor

    folder = publish.save_artifact(tmp_path / "artifact", small_vae())
    put_nan_in_first_tensor(folder)
    return folder


def test_non_finite_weights_are_refused_at_load_naming_the_tensor(nan_artifact, monkeypatch):
    """Row 4: evaluate, sample and from_pretrained all load through one check; an env switch allows it."""
    from safetensors.torch import load_file

    from vae_lab.loading import load_model
    from vae_lab.model import VAE

    name = sorted(load_file(nan_artifact / "model.safetensors"))[0]
    for load in (lambda: load_model(str(nan_artifact)), lambda: VAE.from_pretrained(str(nan_artifact))):
        with pytest.raises(CheckpointError) as info:
            load()
        assert f"tensor {name} holds 1 non-finite value(s)" in str(info.value)
        assert artifact.ALLOW_NONFINITE_ENV in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv(artifact.ALLOW_NONFINITE_ENV, "1")
    assert torch.isnan(VAE.from_pretrained(str(nan_artifact)).state_dict()[name]).any()


# ---------------------------------------------------------------- row 13: the report lists every planned job


def test_the_sweep_report_lists_jobs_that_never_started(tmp_path):
    from vae_lab.sweep_report import NOT_STARTED, collect_jobs

    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "overrides.yaml").write_text("- seed=1\n- trainer.max_steps=5\n")
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    max_batch_size: null\n    params: null\n  overrides:\n    task:\n    - seed=1,2,3,4\n"
        "    - trainer.max_steps=5\n")
    jobs = collect_jobs(sweep)
    assert [(j.name, j.status, j.overrides["seed"]) for j in jobs] == [
        ("0", "incomplete", "1"), ("1", NOT_STARTED, "2"), ("2", NOT_STARTED, "3"), ("3", NOT_STARTED, "4")]


# ---------------------------------------------------------------- row 15: names printed escaped


def test_printable_escapes_control_and_format_characters():
    from vae_lab.cli.errors import printable

    assert printable("a\nb\r\x1b[2J\u202ec é→") == "a\\nb\\r\\x1b[2J\\u202ec é→"


# ---------------------------------------------------------------- rows 5-9: hostile data files


@pytest.fixture
def deadline():
    """A test that would block forever (open() of a FIFO) fails after 60 s instead."""
    def expired(signum, frame):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def png(path: Path, size=(8, 8)) -> Path:
    from PIL import Image

    Image.new("L", size, 128).save(path)
    return path


@pytest.mark.parametrize("feature", ["string", "image"])
@pytest.mark.parametrize("mode", [{"in_memory": True}, {"streaming": True}])
@pytest.mark.parametrize("target", ["fifo", "outside"])
def test_hf_image_paths_are_read_only_as_regular_files_inside_the_dataset(tmp_path, deadline, feature, mode, target):
    """Row 5: a real FIFO (would block open() forever) or a local file outside the dataset's folder."""
    import datasets

    from vae_lab.data.hf import load_hf
    from vae_lab.errors import DataError

    folder = tmp_path / "saved"
    bad = folder / "images" / "pipe.png" if target == "fifo" else tmp_path / "outside" / "secret.png"
    bad.parent.mkdir(parents=True)
    os.mkfifo(bad) if target == "fifo" else png(bad)
    if feature == "string":
        datasets.Dataset.from_dict({"image": [str(bad)]}).save_to_disk(str(folder))
    else:  # the Image feature's storage {"bytes": None, "path": ...}, as an attacker writes it (save_to_disk embeds)
        struct = datasets.Features({"image": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}})
        datasets.Dataset.from_dict({"image": [{"bytes": None, "path": str(bad)}]}, features=struct
                                   ).save_to_disk(str(folder))
        info = json.loads((folder / "dataset_info.json").read_text())
        info["features"] = {"image": {"_type": "Image"}}
        (folder / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError) as info:
        load_hf(tmp_path / "data", False, str(folder), num_workers=0, **mode)
    expected = "is not a regular file" if target == "fifo" else "leads outside the dataset's folder"
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_a_parquet_dictionary_bomb_is_refused_from_its_footer(tmp_path):
    """Row 6: 10 million dictionary-encoded rows in ~200 KB would decode to 1.4 GB."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vae_lab.data.hf import load_hf
    from vae_lab.errors import DataError

    column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(10_000_000, dtype=np.int32)), pa.array([b"x" * 140]))
    file = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"image": column}), file, row_group_size=10_000_000)
    assert file.stat().st_size < 1_000_000
    with pytest.raises(DataError) as info:
        load_hf(tmp_path / "data", False, str(file), num_workers=0)
    assert f"Parquet file {file} row group 0 (10,000,000 rows) decodes to about 1.4 GB, over the limit of 1 GB" \
        in str(info.value) and "VAE_LAB_MAX_PARQUET_GB" in str(info.value)


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A real PNG whose header says width x height, compressed to a few KB (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compressobj(9)
    data = b"".join(rows.compress(b"\0" * (width + 1)) for _ in range(min(height, 64))) + rows.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("width,height", [(30000, 30000), (12000, 12000)])
@pytest.mark.parametrize("path", ["folder", "streamed", "parquet"])
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, monkeypatch, width, height, path):
    """Row 7: a 900 Mpx PNG (PIL's own error) and a 144 Mpx one (PIL only warns, then decodes 3.3 GB for sixty)."""
    import datasets

    from vae_lab.data.hf import load_hf
    from vae_lab.data.registry import load_image_folder
    from vae_lab.errors import DataError

    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    bomb = bomb_png(folder / "bomb.png", width, height)
    assert bomb.stat().st_size < 200_000
    if path == "parquet":
        file = tmp_path / "images.parquet"
        datasets.Dataset.from_dict({"image": [{"bytes": bomb.read_bytes(), "path": None}]},
                                   features=datasets.Features({"image": datasets.Image()})).to_parquet(str(file))
        load = lambda: load_hf(tmp_path / "data", False, str(file), num_workers=0)  # noqa: E731
    else:
        load = lambda: load_image_folder(tmp_path, False, str(tmp_path / "images"),  # noqa: E731
                                         in_memory=path == "folder", num_workers=0)
    with pytest.raises(DataError) as info:
        load()
    message = str(info.value)
    assert "over the limit of 40,000,000 pixels checked before decoding" in message and "\n" not in message
    assert "VAE_LAB_MAX_IMAGE_PIXELS" in message and (path == "parquet" or "bomb.png" in message)
    if width == 12000:
        assert "12000x12000 (144,000,000 pixels)" in message


def test_an_npz_with_an_object_array_under_any_key_is_one_line(tmp_path):
    """Row 8: the documented line, as for .npy, naming the key."""
    import numpy as np

    from vae_lab.data.registry import load_array_file
    from vae_lab.errors import DataError

    file = tmp_path / "data.npz"
    np.savez(file, x=np.zeros((4, 8, 8), np.uint8), unused=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError) as info:
        load_array_file(tmp_path, False, str(file))
    assert str(info.value) == (f"cannot read array file {file}: 'unused' is an object array (dtype=object), which "
                               "cannot be read: save numeric arrays")


def saved_dataset(tmp_path: Path) -> Path:
    import datasets

    folder = tmp_path / "saved"
    image = png(tmp_path / "img.png").read_bytes()
    datasets.Dataset.from_dict({"image": [{"bytes": image, "path": None}]},
                               features=datasets.Features({"image": datasets.Image()})).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("tamper", ["malformed_info", "nested_info", "unknown_feature", "state_traversal",
                                    "loading_script"])
def test_a_hostile_hf_folder_is_one_line_and_opens_nothing_outside(tmp_path, tamper, monkeypatch):
    """Row 9 (hf): malformed or deeply nested JSON, an unknown feature type, a state.json naming ../../etc/passwd,
    a loading-script folder."""
    import builtins

    from vae_lab.data.hf import load_hf
    from vae_lab.errors import DataError

    folder = saved_dataset(tmp_path)
    info, state = folder / "dataset_info.json", folder / "state.json"
    if tamper == "malformed_info":
        info.write_text(info.read_text()[:40])
    elif tamper == "nested_info":
        info.write_text('{"features": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif tamper == "unknown_feature":
        info.write_text(json.dumps({"features": {"image": {"_type": "Evil"}}}))
    elif tamper == "state_traversal":
        data = json.loads(state.read_text())
        data["_data_files"][0]["filename"] = "../../etc/passwd"
        state.write_text(json.dumps(data))
    else:
        for name in ("dataset_info.json", "state.json"):
            (folder / name).unlink()
        (folder / "saved.py").write_text("import os\nos.system('touch pwned')\n")
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    with pytest.raises(DataError) as err:
        load_hf(tmp_path / "data", False, str(folder), num_workers=0)
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    assert not any("passwd" in f for f in opened)
