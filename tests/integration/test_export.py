"""Synthetic data and codes out of a model (vae_lab.export) in-process on the shared tiny runs: exported samples read
back through dataset=array_file and dataset=image_folder; exported codes are the model's posterior codes; t-SNE.
sample.py's refusal of class=all on the command line: tests/cli/test_sample_cli.py; dataset.options.classes and the
flat-code check: tests/unit/test_export_options.py."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from vae_lab.cli import CONFIG_DIR
from vae_lab.data.registry import load_dataset
from vae_lab.errors import ConfigError
from vae_lab.export import encode_model
from vae_lab.loading import load_model
from vae_lab.sampling import run_sample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def runs(trained_run):
    """The shared runs of tests/trained.py, read-only (every export here writes under tmp_path)."""
    return {"plain": trained_run("plain"), "cond": trained_run("cond")}


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


def test_latent_scatter_with_tsne_writes_its_own_picture(runs, tmp_path):
    [path] = _sample(runs["plain"], "mode=latent_scatter", "method=tsne", "n=60", f"out={tmp_path}")
    assert path.name == "latent_tsne_val.png" and path.stat().st_size > 0
