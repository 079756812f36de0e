"""The sprites generator (deterministic, every factor combination once, shapes that look right), the dSprites
archive reader, and the factor grid the metrics sample from."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_lab.data import VAEDataModule, load_dataset
from vae_lab.data.factors import FactorGrid
from vae_lab.data.sprites import DSPRITES_FILE, FACTOR_NAMES, FACTOR_SIZES, factor_values, file_md5, render_sprites
from vae_lab.errors import ConfigError, DataError
from vae_lab.plots import image_grid, save_png

ROOT = Path(__file__).resolve().parents[2]
SUBSET = {"orientation": 8, "pos_x": 8, "pos_y": 8}  # 3 x 6 x 5 x 4 x 4 = 1440 images


@pytest.fixture(scope="module")
def subset():
    return render_sprites(SUBSET)


def test_generation_is_deterministic_with_a_known_hash(subset):
    x, f = subset
    assert x.shape == (1440, 1, 64, 64) and x.dtype == torch.uint8 and f.shape == (1440, 5)
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest() == \
        "26aa77433e49aa5741a845a0601e7f76f9e4f0e02515b84bc97d80629ff1c5e6"
    assert torch.equal(render_sprites(SUBSET)[0], x)
    assert set(torch.unique(x).tolist()) == {0, 255}  # binary


def test_every_factor_combination_once_in_dsprites_order(subset):
    _, f = subset
    assert int(np.prod(FACTOR_SIZES)) == 737280 and FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    kept = factor_values(SUBSET)
    expected = np.stack([m.reshape(-1) for m in np.meshgrid(*kept, indexing="ij")], 1)  # row-major, pos_y fastest
    np.testing.assert_array_equal(f.numpy(), expected)
    assert len(np.unique(f.numpy(), axis=0)) == len(f)
    assert FactorGrid(subset[0], f, FACTOR_NAMES).sizes == (3, 6, 5, 4, 4)


def _image(x, f, **factors):
    row = torch.ones(len(f), dtype=torch.bool)
    for name, value in factors.items():
        row &= f[:, FACTOR_NAMES.index(name)] == value
    (index,) = row.nonzero()[:, 0].tolist()
    return x[index, 0].numpy() > 0


def test_pictures_look_like_the_shapes_and_a_grid_is_saved(subset):
    x, f = subset
    big = dict(scale=5, orientation=0, pos_x=8, pos_y=8)
    square, ellipse, heart = (_image(x, f, shape=s, **big) for s in range(3))
    rows, cols = np.nonzero(square)
    assert square.sum() == 20 * 20 and np.ptp(rows) == np.ptp(cols) == 19  # scale 1: a 20-pixel axis-aligned square
    rows, cols = np.nonzero(ellipse)
    assert np.ptp(cols) == 19 and np.ptp(rows) == 9  # semi-axes 10 and 5 pixels
    assert heart.sum() < square.sum() and not np.array_equal(heart, heart[::-1])  # lobes on top, point below
    moved = _image(x, f, shape=2, scale=5, orientation=0, pos_x=16, pos_y=24)
    assert np.array_equal(np.roll(np.roll(heart, 16, axis=0), 8, axis=1), moved)  # positions are translations
    turned = _image(x, f, shape=0, scale=5, orientation=8, pos_x=8, pos_y=8)  # 8/40 of a turn = 72 degrees
    assert turned.sum() == pytest.approx(400, rel=0.05) and not np.array_equal(turned, square)
    picks = [_image(x, f, shape=s, scale=sc, orientation=o, pos_x=8, pos_y=8)
             for s in range(3) for sc in (0, 5) for o in range(0, 40, 8)]
    out = save_png(image_grid(torch.tensor(np.stack(picks))[:, None].float(), nrow=5, pad_value=0.5),
                   ROOT / "outputs" / "test_pictures" / "sprites_grid.png")
    assert out.is_file()  # rows: square, ellipse, heart at scales 0.5 and 1; columns: orientations


def test_bad_stride_options_are_one_line():
    with pytest.raises(ConfigError, match=r"stride.pos_x=0 is invalid: must be an integer in \[1, 32\]"):
        render_sprites({"pos_x": 0})
    with pytest.raises(ConfigError, match="unknown factor 'colour': valid factors: shape, scale"):
        render_sprites({"colour": 2})
    with pytest.raises(ConfigError, match="accepted options: stride"):
        load_dataset("sprites", ".", size=3)


def _write_dsprites(folder: Path, stride) -> Path:
    """A small archive in the official layout: imgs (N, 64, 64) uint8 0/1, latents_classes (N, 6) with colour."""
    x, f = render_sprites(stride)
    classes = np.concatenate([np.zeros((len(f), 1), np.int64), f.numpy()], axis=1)
    path = folder / DSPRITES_FILE
    np.savez_compressed(path, imgs=(x[:, 0].numpy() // 255).astype(np.uint8), latents_classes=classes,
                        latents_values=classes.astype(np.float64))
    return path


def test_dsprites_reads_an_archive_in_the_official_format_md5_checked(tmp_path):
    path = _write_dsprites(tmp_path, {"orientation": 10, "pos_x": 8, "pos_y": 8})
    raw = load_dataset("dsprites", tmp_path, False, stride={"pos_x": 2}, md5=file_md5(path))
    x, f = render_sprites({"orientation": 10, "pos_x": 8, "pos_y": 8})
    torch.testing.assert_close(raw.train_x, x)
    torch.testing.assert_close(raw.factors, f)
    assert raw.class_names == ("square", "ellipse", "heart") and torch.equal(raw.train_y, f[:, 0])
    with pytest.raises(DataError, match="fails its md5 check \\(expected 7da33b31b13a06f4b04a70402ce90c2e, found"):
        load_dataset("dsprites", tmp_path, False)
    with pytest.raises(DataError, match="dSprites not found: expected"):
        load_dataset("dsprites", tmp_path / "elsewhere", False, md5=None)


def test_datamodule_carries_the_factors_and_rebuilds_the_full_grid(tmp_path):
    dm = VAEDataModule("sprites", str(tmp_path), batch_size=32, val_fraction=0.1, options={"stride": SUBSET})
    assert dm.spec.factor_names == FACTOR_NAMES and dm.spec.num_classes == 3 and dm.spec.num_train == 1296
    grid = dm.factor_grid()
    codes = np.array([[0, 0, 0, 0, 0], [2, 5, 4, 3, 3]])
    x, f = render_sprites(SUBSET)
    torch.testing.assert_close(grid.observations(codes), x[[0, len(x) - 1]].float() / 255)
    assert VAEDataModule("digits", str(tmp_path)).factor_grid() is None
    with pytest.raises(DataError, match="do not form a full grid"):
        FactorGrid(x[:10], f[:10], FACTOR_NAMES)
