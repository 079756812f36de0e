"""Synthetic data and codes out of a model (vae_lab.export): exported samples read back through dataset=array_file
and dataset=image_folder; exported codes are the model's posterior codes; t-SNE; dataset.options.classes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from datasets_fixtures import copy_mnist
from test_ood import _train_run
from vae_lab.cli import CONFIG_DIR
from vae_lab.data.datamodule import VAEDataModule
from vae_lab.data.registry import load_dataset
from vae_lab.errors import ConfigError
from vae_lab.export import encode_model, need_flat_code
from vae_lab.loading import load_model
from vae_lab.sampling import run_sample

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"plain": _train_run(root / "plain"), "cond": _train_run(root / "cond", "model.conditional=true")}


def _sample(model, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return run_sample(compose("sample", overrides=[f"model={model}", *overrides]))


def test_exported_samples_read_back_as_array_file_with_shape_levels_and_labels(runs, tmp_path):
    [path] = _sample(runs["cond"], "mode=export", "n=5", "class=all", f"out={tmp_path / 's.npz'}")
    raw = load_dataset("array_file", tmp_path, False, path=str(path))
    assert raw.train_x.shape == (50, 1, 8, 8) and raw.train_x.dtype == torch.uint8 and raw.levels == 256
    assert torch.equal(raw.train_y, torch.arange(10).repeat_interleave(5))
    # the same seed, the same data; a sample of p(x|z) instead of its mean differs
    again = _sample(runs["cond"], "mode=export", "n=5", "class=all", f"out={tmp_path / 't.npz'}")[0]
    with np.load(path) as a, np.load(again) as b:
        assert np.array_equal(a["x"], b["x"])


def test_exported_folder_reads_back_as_image_folder_with_class_subfolders(runs, tmp_path):
    _sample(runs["cond"], "mode=export", "n=2", "class=all", f"out={tmp_path / 'synthetic'}")
    raw = load_dataset("image_folder", tmp_path, False, path=str(tmp_path / "synthetic"))
    assert raw.train_x.shape == (20, 1, 8, 8) and raw.class_names == tuple(str(c) for c in range(10))
    assert torch.equal(raw.train_y, torch.arange(10).repeat_interleave(2))


def test_unconditional_export_is_unlabelled_and_class_all_is_refused(runs, tmp_path):
    [path] = _sample(runs["plain"], "mode=export", "n=7", f"out={tmp_path / 'u.npz'}")
    with np.load(path) as f:
        assert list(f.keys()) == ["x"] and f["x"].shape == (7, 8, 8)
    with pytest.raises(ConfigError, match="class=all needs a conditional model"):
        _sample(runs["plain"], "mode=export", "class=all", f"out={tmp_path / 'v.npz'}")
    with pytest.raises(ConfigError, match="class"):
        _sample(runs["plain"], "mode=sample", "class=all")  # all: only for export


def test_cli_class_all_on_an_unconditional_model_is_one_line_and_writes_nothing(runs, tmp_path):
    proc = subprocess.run([sys.executable, "scripts/sample.py", f"model={runs['plain']}", "mode=export",
                           "class=all", f"out={tmp_path / 'x.npz'}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "class=all needs a conditional model" in proc.stderr and not (tmp_path / "x.npz").exists()


def test_exported_codes_are_the_posterior_codes_with_scales_and_labels(runs, tmp_path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("encode", overrides=[f"model={runs['cond']}", "split=val", f"out={tmp_path / 'c.npz'}"])
    encode_model(cfg)
    loaded = load_model(runs["cond"])
    from vae_lab.loading import datamodule_for

    x, y = zip(*datamodule_for(loaded, [], stage=None).val_dataloader())
    x, y = torch.cat(x), torch.cat(y)
    with torch.no_grad():
        q = loaded.model.encode(x, y)
    with np.load(tmp_path / "c.npz") as f:
        assert np.allclose(f["codes"], q.mean.numpy(), atol=1e-6)
        assert np.allclose(f["scales"], q.base_dist.scale.numpy(), atol=1e-6)
        assert np.array_equal(f["labels"], y.numpy()) and np.array_equal(f["index"], np.arange(len(y)))


def test_families_without_a_flat_code_are_told_in_one_line():
    class Hierarchy:
        flat_code, family = False, "hierarchical"

    with pytest.raises(ConfigError, match="needs a flat latent code.*hierarchical family"):
        need_flat_code(Hierarchy(), "scripts/encode.py")


def test_latent_scatter_with_tsne_writes_its_own_picture(runs, tmp_path):
    [path] = _sample(runs["plain"], "mode=latent_scatter", "method=tsne", "n=60", f"out={tmp_path}")
    assert path.name == "latent_tsne_val.png" and path.stat().st_size > 0


def _splits(dm: VAEDataModule) -> dict:
    dm.setup()
    return {s: torch.cat([y for _, y in getattr(dm, f"{s}_dataloader")()]) for s in ("train", "val", "test")
            if s != "test" or dm.spec.has_test}


def test_classes_keeps_exactly_those_classes_in_every_split(tmp_path):
    root = copy_mnist(tmp_path)
    kept = [0, 3, 8]
    dm = VAEDataModule("mnist", str(root), batch_size=5000, download=False, options={"classes": kept})
    full = VAEDataModule("mnist", str(root), batch_size=5000, download=False)
    got, every = _splits(dm), _splits(full)
    for split, labels in got.items():
        assert sorted(labels.unique().tolist()) == kept, split
    expected = sum(int(torch.isin(every[s], torch.tensor(kept)).sum()) for s in ("train", "val"))
    assert len(got["train"]) + len(got["val"]) == expected  # nothing of those classes lost
    assert len(got["test"]) == int(torch.isin(every["test"], torch.tensor(kept)).sum())
    assert dm.spec.num_classes == 10  # labels keep their indices


@pytest.mark.parametrize("classes,message", [([], "non-empty list"), ([12], "classes 0..9"), ("3", "list")])
def test_bad_classes_are_one_line(classes, message):
    dm = VAEDataModule("digits", "unused", download=False, options={"classes": classes})
    with pytest.raises(ConfigError, match=message):
        dm.setup()


def test_classes_compose_for_train_py():
    from vae_lab.configs import compose_train

    cfg = compose_train(["dataset=digits", "dataset.options.classes=[0,1,2,3,4,5,6,7,8]"])
    assert list(cfg.dataset.options.classes) == list(range(9))
