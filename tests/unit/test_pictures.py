"""vae_lab.pictures: sample-grid layouts (many classes wrap, every class shown), skips instead of crashes on data
too small for a picture, odd image sizes (1x1, 28x20), and the guard that turns picture failures into one line."""

import pytest
import torch

from vae_lab import pictures, plots
from vae_lab.callbacks.images import guarded
from vae_lab.model import VAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def vae(in_shape=(1, 8, 8), latent_dim=3, conditional=False, num_classes=10, seed=0):
    torch.manual_seed(seed)
    return VAE(in_shape=list(in_shape), latent_dim=latent_dim, net={"hidden_dims": [16]}, conditional=conditional,
               num_classes=num_classes).eval()


def tile(grid, row, col, h, w, padding=2):
    top, left = padding + row * (h + padding), padding + col * (w + padding)
    return grid[:, top:top + h, left:left + w]


def decoded(model, z, label):
    with torch.no_grad():
        return model.decode(z.reshape(1, -1), torch.tensor([label]) if model.conditional else None).mean[0]


def test_unconditional_and_few_class_samples_keep_their_layout():
    model = vae()
    grid, note = pictures.sample_grid(model, 10, seed=3, nrow=4, min_image_size=8)
    z = pictures.prior_samples(model, 10, 3)
    assert note is None and grid.shape == (1, 3 * 10 + 2, 4 * 10 + 2)
    torch.testing.assert_close(tile(grid, 2, 1, 8, 8), decoded(model, z[9], 0))
    cond = vae(conditional=True, num_classes=5)
    grid, note = pictures.sample_grid(cond, 12, seed=3, nrow=8, min_image_size=8)  # one column per class
    assert note is None and grid.shape[2] == 5 * 10 + 2 and grid.shape[1] == 3 * 10 + 2
    z = pictures.prior_samples(cond, 12, 3)
    for k in range(12):
        torch.testing.assert_close(tile(grid, k // 5, k % 5, 8, 8), decoded(cond, z[k], k % 5))


@pytest.mark.parametrize("num", [64, 250])
def test_many_class_samples_wrap_into_bands_and_show_every_class(num):
    classes, cols = 101, pictures.CLASS_COLUMNS
    model = vae(latent_dim=2, conditional=True, num_classes=classes)
    grid, note = pictures.sample_grid(model, num, seed=0, min_image_size=8, pad_value=1.0)
    per_class, bands = max(1, num // classes), -(-classes // cols)
    assert note is None and grid.shape == (1, bands * per_class * 10 + 2, cols * 10 + 2)
    z, k, seen = pictures.prior_samples(model, classes * per_class, 0), 0, set()
    for band in range(bands):  # oracle: walk the documented layout tile by tile
        for row in range(per_class):
            for col in range(cols):
                where = tile(grid, band * per_class + row, col, 8, 8)
                label = band * cols + col
                if label >= classes:
                    assert where.eq(1.0).all()  # blank after the last class
                    continue
                torch.testing.assert_close(where, decoded(model, z[k], label))
                seen.add(label)
                k += 1
    assert seen == set(range(classes))


def test_more_classes_than_the_cap_show_the_first_with_a_note(monkeypatch):
    monkeypatch.setattr(pictures, "MAX_SAMPLE_CLASSES", 30)
    model = vae(latent_dim=2, conditional=True, num_classes=45)
    grid, note = pictures.sample_grid(model, 8, seed=0, min_image_size=8)
    assert note == "samples show classes 0-29 of 45 (one column per class, wrapped into rows); class=K draws any " \
                   "one class"
    assert grid.shape == (1, 2 * 10 + 2, 20 * 10 + 2)
    z = pictures.prior_samples(model, 30, 0)
    torch.testing.assert_close(tile(grid, 1, 9, 8, 8), decoded(model, z[29], 29))
    assert tile(grid, 1, 10, 8, 8).eq(1.0).all()


def test_class_and_explicit_nrow_are_respected_for_many_classes():
    model = vae(latent_dim=2, conditional=True, num_classes=101)
    grid, _ = pictures.sample_grid(model, 6, seed=0, nrow=3, label=42, min_image_size=8)
    z = pictures.prior_samples(model, 6, 0)
    assert grid.shape == (1, 2 * 10 + 2, 3 * 10 + 2)
    torch.testing.assert_close(tile(grid, 1, 2, 8, 8), decoded(model, z[5], 42))
    grid, _ = pictures.sample_grid(model, 6, seed=0, nrow=3, by_class=False, min_image_size=8)
    torch.testing.assert_close(tile(grid, 1, 2, 8, 8), decoded(model, z[5], 5))


def codes(n, latent_dim, same=False):
    generator = torch.Generator().manual_seed(0)
    means = torch.ones(n, latent_dim) if same else torch.randn(n, latent_dim, generator=generator)
    return pictures.LatentCodes(means, torch.zeros(n, dtype=torch.long), torch.rand(latent_dim))


@pytest.mark.parametrize("n,latent_dim,message", [
    (1, 5, "needs at least 3 points for PCA to 2-D; 1 given"),
    (2, 5, "needs at least 3 points for PCA to 2-D; 2 given"),
])
def test_scatter_of_too_few_points_is_skipped_with_a_note(n, latent_dim, message):
    with pytest.raises(pictures.PictureSkipped, match=message):
        pictures.scatter_figure(codes(n, latent_dim), None, "t")


def test_scatter_of_identical_codes_is_skipped_and_raw_coordinates_need_one_point():
    with pytest.raises(pictures.PictureSkipped, match="all 4 codes are identical"):
        pictures.scatter_figure(codes(4, 6, same=True), None, "t")
    assert "nan" not in pictures.scatter_figure(codes(1, 2), None, "t").axes[0].get_title()  # raw: 1 point draws
    assert "PCA" in pictures.scatter_figure(codes(3, 5), None, "t").axes[0].get_title()


@pytest.mark.parametrize("in_shape", [(1, 1, 1), (3, 28, 20)])
def test_every_picture_of_a_one_example_split_and_odd_image_sizes(in_shape):
    """A 1-example validation split of 1x1 or 28x20 images: every picture draws, except the scatter (a note)."""
    model = vae(in_shape, latent_dim=4, conditional=True, num_classes=3)
    x, y = torch.rand(1, *in_shape), torch.tensor([2])
    batches = [(x, y)]
    first = pictures.first_examples(batches, 32)
    assert pictures.reconstruction_grid(model, *first, 8).shape[0] == in_shape[0]
    a, b = pictures.pick_pairs(first[1], 4, same_class=True)  # one example: pairs reuse it
    assert a.tolist() == b.tolist() == [0, 0, 0, 0]
    assert pictures.interpolation_grid(model, x[a], x[b], 8, y[a]).shape[0] == in_shape[0]
    assert pictures.sample_grid(model, 64, 0)[0].shape[0] == in_shape[0]
    drawers = pictures.latent_pictures(model, pictures.encode_codes(model, batches, 100), None, "val", 20,
                                       (0.05, 0.95), 10, 9, 3.0)
    assert set(drawers) == {"latent_scatter", "kl_per_dim", "latent_traversals"}
    with pytest.raises(pictures.PictureSkipped):
        drawers["latent_scatter"]()
    for name in ("kl_per_dim", "latent_traversals"):
        assert plots.to_array(drawers[name]()).ndim == 3


def test_guard_prints_one_line_and_lets_signals_through(capsys):
    def fail():
        raise RuntimeError("boom\nsecond line")

    def skip():
        raise pictures.PictureSkipped("too few points")

    assert guarded("latent_scatter", skip) is None and guarded("samples", fail) is None
    assert guarded("ok", lambda: 7) == 7
    assert capsys.readouterr().err.splitlines() == [
        "note: latent_scatter not drawn: too few points",
        "warning: picture samples not drawn (RuntimeError: boom); training, metrics and the artifact are unaffected"]
    with pytest.raises(KeyboardInterrupt):
        guarded("x", lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
