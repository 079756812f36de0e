"""scripts/sample.py's work in-process (vae_lab.sampling) on the shared tiny runs: every mode writes a PNG of the
expected size; model refs; clear errors. The command line itself: tests/cli/test_sample_cli.py."""

import shutil

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from vae_lab import plots
from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import ConfigError
from vae_lab.loading import load_model
from vae_lab.sampling import run_sample as sample

TILE = 32  # digits are 8x8, upscaled x4 in grids to reach min_image_size=28


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grid_px(rows, cols, tile=TILE, padding=2):
    return cols * (tile + padding) + padding, rows * (tile + padding) + padding


def figure_px(rows, cols, margins, tile=8, padding=1):
    """A figure of tiles shown at plots.TILE_PX, with (horizontal, vertical) margins in inches."""
    scale = plots.TILE_PX / tile
    w = (cols * (tile + padding) + padding) * scale / plots.DPI + margins[0]
    h = (rows * (tile + padding) + padding) * scale / plots.DPI + margins[1]
    return round(w * plots.DPI), round(h * plots.DPI)


@pytest.fixture
def runs(trained_run):
    """The shared runs of tests/trained.py, read-only: plain2 (latent_dim 2), cond5 (conditional, latent_dim 5)."""
    return {"plain2": trained_run("plain2"), "cond5": trained_run("cond")}


def run_sample(model, tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("sample", overrides=[f"model={model}", *([f"out={tmp_path}"] if tmp_path else []), *overrides])
    return sample(cfg)


CASES = [  # run, overrides, file written, its (width, height)
    ("plain2", ["n=16"], "samples.png", grid_px(2, 8)),
    ("cond5", ["n=20"], "samples.png", grid_px(2, 10)),  # a conditional model: one column per class
    ("cond5", ["n=8", "class=3"], "samples_class3.png", grid_px(1, 8)),
    ("plain2", ["mode=reconstruct", "n=8"], "reconstructions.png", grid_px(2, 8)),  # originals over reconstructions
    ("plain2", ["mode=reconstruct", "n=4", "class=7"], "reconstructions_class7.png", grid_px(2, 4)),
    ("plain2", ["mode=interpolate", "n=3"], "interpolations.png", grid_px(3, 8 + 2)),
    ("plain2", ["mode=interpolate", "n=2", "pair=[1,2]", "steps=4"], "interpolations_1to2.png", grid_px(2, 4 + 2)),
    ("cond5", ["mode=interpolate", "n=2", "class=4"], "interpolations_4to4.png", grid_px(2, 8 + 2)),
    ("cond5", ["mode=traverse", "n=3"], "traversals.png", figure_px(3, 9, (1.7, 1.3))),
    ("plain2", ["mode=traverse"], "traversals.png", figure_px(2, 9, (1.7, 1.3))),  # n=10 > latent_dim: 2 rows
    ("cond5", ["mode=latent_scatter"], "latent_scatter_val.png", (900, 700)),
    ("plain2", ["mode=manifold", "n=5"], "manifold.png", figure_px(5, 5, (1.0, 1.3))),
]


@pytest.mark.parametrize("run,overrides,name,size", CASES, ids=[f"{c[0]}-{'-'.join(c[1])}" for c in CASES])
def test_every_mode_writes_a_png_of_the_expected_size(runs, tmp_path, capsys, run, overrides, name, size):
    paths = run_sample(runs[run], tmp_path, *overrides)
    assert paths == [tmp_path / name]
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / name)]  # the path is printed
    image = Image.open(paths[0])
    assert image.size == size
    assert image.mode == ("L" if "traversals" not in name and "latent" not in name and "manifold" not in name
                          else "RGB")  # grids keep the data's grey channel; figures are RGB


def test_samples_are_fixed_by_seed_and_identical_from_a_ckpt_or_an_artifact(runs, tmp_path):
    run = runs["plain2"]
    first = run_sample(run, tmp_path / "a", "n=8")[0]
    again = run_sample(run / "checkpoints" / "last.ckpt", tmp_path / "b", "n=8")[0]
    other_seed = run_sample(run, tmp_path / "c", "n=8", "seed=1")[0]
    artifact = tmp_path / "artifact"
    load_model(run).model.save_pretrained(artifact)  # config.json + model.safetensors
    from_artifact = run_sample(artifact, tmp_path / "d", "n=8")[0]
    pixels = lambda p: np.asarray(Image.open(p))  # noqa: E731
    assert np.array_equal(pixels(first), pixels(again))  # one epoch: the best checkpoint holds last.ckpt's weights
    assert np.array_equal(pixels(first), pixels(from_artifact))
    assert not np.array_equal(pixels(first), pixels(other_seed))


def test_output_defaults_to_the_run_images_folder_and_out_may_name_the_file(runs, tmp_path):
    run = shutil.copytree(runs["plain2"], tmp_path / "run")  # the default out= writes into the run
    written = run_sample(run / "checkpoints" / "last.ckpt", None, "mode=reconstruct", "n=2")
    assert written == [run / "images" / "reconstructions.png"] and written[0].is_file()
    named = run_sample(run, None, "n=4", f"out={tmp_path / 'mine.png'}")
    assert named == [tmp_path / "mine.png"] and Image.open(named[0]).size == grid_px(1, 4)


@pytest.mark.parametrize("run,overrides,message", [
    ("plain2", ["class=3"], "class=3 needs a conditional model"),
    ("plain2", ["mode=manifold", "class=3"], "class=3 needs a conditional model"),
    ("cond5", ["mode=manifold", "class=1"], "needs a model trained with model.latent_dim=2"),
    ("cond5", ["class=10"], r"class=10 is invalid: must be an integer in \[0, 9\]"),
    ("cond5", ["mode=interpolate", "pair=[7,9]"], "interpolates within one class"),
    ("plain2", ["mode=interpolate", "pair=[7,9]", "class=1"], "give one of them"),
    ("plain2", ["mode=nope"], "mode='nope' is invalid: must be one of: export, group_kl, interpolate, keep_groups, latent_scatter, manifold"),
    ("plain2", ["mode=reconstruct", "split=test"], "has no test split; use split=val"),
    ("plain2", ["n=0"], "n=0 is invalid: must be an integer >= 1"),
    ("plain2", ["mode=interpolate", "pair=[1]"], r"pair=\[1\] is invalid"),
])
def test_bad_requests_are_one_clear_error(runs, tmp_path, run, overrides, message):
    with pytest.raises(ConfigError, match=message):
        run_sample(runs[run], tmp_path, *overrides)
    assert not list(tmp_path.glob("*.png"))


def test_data_modes_need_the_run_config(runs, tmp_path):
    artifact = tmp_path / "artifact"
    load_model(runs["plain2"]).model.save_pretrained(artifact)
    with pytest.raises(ConfigError, match="has no training config .* name its data with dataset=<name>"):
        run_sample(artifact, tmp_path, "mode=reconstruct")


def test_many_class_samples_wrap_into_rows_showing_every_class(tmp_path, capsys):
    """101 classes: 20 columns per band, one row per band (64 // 101 < 1 sample per class), 6 bands."""
    from vae_lab.model import VAE

    artifact = tmp_path / "artifact"
    VAE(in_shape=[1, 8, 8], latent_dim=2, net={"hidden_dims": [16]}, conditional=True,
        num_classes=101).save_pretrained(artifact)
    paths = run_sample(artifact, tmp_path, "n=64")
    assert Image.open(paths[0]).size == grid_px(6, 20)
    assert capsys.readouterr().err == ""  # every class shown: no note
