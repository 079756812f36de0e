"""vae_lab.plots: grid geometry and pixels, PNG files, PCA against an SVD oracle, latent grids, figures."""

from statistics import NormalDist

import numpy as np
import pytest
import torch
from PIL import Image

from vae_lab import plots


def tiles(n, c, h, w, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def tile_at(grid, row, col, h, w, padding=2):
    """The (C, h, w) tile at grid position (row, col), by the documented geometry."""
    top, left = padding + row * (h + padding), padding + col * (w + padding)
    return grid[:, top:top + h, left:left + w]


def test_upscale_repeats_pixels_by_the_smallest_sufficient_integer_factor():
    x = tiles(2, 1, 8, 8)
    big = plots.upscale(x, 28)  # ceil(28 / 8) = 4
    assert big.shape == (2, 1, 32, 32)
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    assert torch.equal(big, x[:, :, rows // 4, cols // 4])
    assert plots.upscale(x, 8) is x and plots.upscale(tiles(1, 3, 32, 32), 28).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("n,nrow", [(10, 4), (8, 8), (1, 8), (3, 8)])
def test_image_grid_geometry_channels_and_placement(channels, n, nrow):
    x = tiles(n, channels, 5, 7)
    grid = plots.image_grid(x, nrow, padding=2, pad_value=1.0)
    cols, rows = min(nrow, n), -(-n // nrow)
    assert grid.shape == (channels, rows * 7 + 2, cols * 9 + 2)  # the data's own channels: grey stays grey
    for k in range(n):
        assert torch.equal(tile_at(grid, k // nrow, k % nrow, 5, 7), x[k])
    assert grid[:, 0, :].eq(1.0).all() and grid[:, :, 0].eq(1.0).all()  # padding


def test_image_grid_clamps_to_the_data_range():
    grid = plots.image_grid(torch.tensor([-1.0, 0.5, 2.0]).reshape(3, 1, 1, 1), nrow=3, padding=0)
    assert grid.flatten().tolist() == [0.0, 0.5, 1.0]


def test_reconstruction_grid_puts_originals_above_their_reconstructions():
    x, x_hat = tiles(5, 1, 4, 4, seed=1), tiles(5, 1, 4, 4, seed=2)
    grid = plots.reconstruction_grid(x, x_hat, nrow=3, padding=2, pad_value=1.0)
    assert grid.shape == (1, 4 * 6 + 2, 3 * 6 + 2)  # rows: x[0:3], x_hat[0:3], x[3:5] + blank, x_hat[3:5] + blank
    for k in range(5):
        pair_row, col = 2 * (k // 3), k % 3
        assert torch.equal(tile_at(grid, pair_row, col, 4, 4), x[k])
        assert torch.equal(tile_at(grid, pair_row + 1, col, 4, 4), x_hat[k])
    assert tile_at(grid, 2, 2, 4, 4).eq(1.0).all() and tile_at(grid, 3, 2, 4, 4).eq(1.0).all()


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_grid_png_has_the_grid_size_mode_and_pixels(tmp_path, channels, mode):
    grid = plots.image_grid(tiles(6, channels, 8, 8), nrow=3)
    path = plots.save_png(grid, tmp_path / "sub" / "grid.png")
    image = Image.open(path)
    assert image.mode == mode and image.size == (grid.shape[2], grid.shape[1])
    expected = np.rint(grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(image).reshape(expected.shape), expected)


def test_project_2d_keeps_raw_coordinates_up_to_two_dimensions():
    z = np.random.default_rng(0).normal(size=(50, 2))
    p = plots.project_2d(z)
    assert p.method == "raw" and p.explained_variance is None and p.axis_labels == ("z1", "z2")
    assert np.array_equal(p.coords, z)
    one = plots.project_2d(z[:, :1])
    assert one.method == "raw" and np.array_equal(one.coords[:, 0], z[:, 0]) and not one.coords[:, 1].any()


def test_project_2d_is_pca_beyond_two_dimensions_against_an_svd_oracle():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 2.0
    p = plots.project_2d(z)
    centred = z - z.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    oracle = centred @ vt[:2].T
    signs = np.sign((p.coords * oracle).sum(0))  # principal axes are defined up to sign
    assert p.method == "pca"
    np.testing.assert_allclose(p.coords * signs, oracle, atol=1e-8)
    np.testing.assert_allclose(p.explained_variance, (s**2 / (s**2).sum())[:2], rtol=1e-8)
    assert p.axis_labels[0].startswith("PC1 (") and "% of variance" in p.axis_labels[1]


def _texts(fig):
    ax = fig.axes[0]
    legend = ax.get_legend()
    names = [t.get_text() for t in legend.get_texts()] if legend else []
    return ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), names


def test_latent_scatter_names_the_projection_and_the_classes(tmp_path):
    rng = np.random.default_rng(2)
    names = ("T-shirt/top", "Trouser", "Pullover")
    labels = np.arange(90) % 3
    pca = plots.latent_scatter(plots.project_2d(rng.normal(size=(90, 8))), labels, names, "Latent space")
    title, xlabel, _, legend = _texts(pca)
    assert "PCA to 2-D" in title and "% of the variance explained" in title and xlabel.startswith("PC1")
    assert legend == list(names)
    z = rng.normal(size=(90, 2))
    raw = plots.latent_scatter(plots.project_2d(z), labels, names)
    title, xlabel, ylabel, _ = _texts(raw)
    assert "raw latent coordinates" in title and (xlabel, ylabel) == ("z1", "z2")
    plotted = np.concatenate([c.get_offsets() for c in raw.axes[0].collections])
    assert sorted(map(tuple, plotted)) == sorted(map(tuple, z))  # every point, at its own coordinates
    unlabelled = plots.latent_scatter(plots.project_2d(z), None)
    assert unlabelled.axes[0].get_legend() is None
    path = plots.save_png(pca, tmp_path / "scatter.png")
    assert Image.open(path).size == (900, 700)  # figsize (9, 7) at DPI 100, never cropped


def test_manifold_latents_are_gaussian_quantiles_laid_out_as_displayed():
    z, values = plots.manifold_latents(5, (0.05, 0.95))
    oracle = [NormalDist().inv_cdf(q) for q in np.linspace(0.05, 0.95, 5)]
    np.testing.assert_allclose(values.numpy(), oracle, atol=1e-6)
    grid = z.reshape(5, 5, 2)  # (row, col, [z1, z2])
    assert torch.equal(grid[0, :, 0], values) and torch.equal(grid[:, 0, 1], values.flip(0))  # top row: largest z2


def test_traversal_latents_change_one_dimension_per_row():
    base = torch.arange(4.0)
    values = torch.tensor([-1.0, 0.5, 2.0])
    z = plots.traversal_latents(base, [2, 0], values)
    assert z.shape == (2, 3, 4)
    assert torch.equal(z[0, :, 2], values) and torch.equal(z[1, :, 0], values)
    keep = torch.ones(2, 3, 4, dtype=torch.bool)
    keep[0, :, 2] = keep[1, :, 0] = False
    assert torch.equal(z[keep], base.expand(2, 3, 4)[keep])


def test_image_figures_show_each_tile_at_tile_px(tmp_path):
    images = tiles(2 * 3, 1, 8, 8).reshape(2, 3, 1, 8, 8)
    fig = plots.traversal_figure(images, [4, 1], torch.tensor([0.1, 2.0, 0, 0, 3.5]), torch.tensor([-1.0, 0, 1.0]))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z5  KL 3.50", "z2  KL 2.00"]
    width_px = ax.get_position().width * fig.get_size_inches()[0] * plots.DPI
    assert width_px == pytest.approx((3 * 9 + 1) * plots.TILE_PX / 8)  # 3 tiles + padding 1, scaled 8 -> TILE_PX
    size = Image.open(plots.save_png(fig, tmp_path / "t.png")).size
    assert size == tuple(round(v * plots.DPI) for v in fig.get_size_inches())


def test_kl_bar_figure_draws_one_bar_per_dimension():
    kl = torch.tensor([0.0, 1.5, 0.25, 3.0])
    fig = plots.kl_bar_figure(kl, "KL")
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == kl.tolist()
    assert "total 4.75 nats over 4 dimensions" in fig.axes[0].get_title()
    assert fig.axes[0].get_ylabel() == "mean KL (nats)"


def _label_and_cell_centres(fig, axis):
    """Where the ticks of `axis` are and where their text labels are centred, in rendered-image pixels (rows for
    y, columns for x), and the rendered grey pixels (H, W) to find the cells in."""
    pixels = plots.figure_to_array(fig)[..., 0].astype(int)  # (H, W) grey
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    height = pixels.shape[0]
    if axis == "y":
        ticks = height - np.array([ax.transData.transform((0, t))[1] for t in ax.get_yticks()])
        texts = [height - (e.y0 + e.y1) / 2 for e in (t.get_window_extent(renderer) for t in ax.get_yticklabels())]
    else:
        ticks = np.array([ax.transData.transform((t, 0))[0] for t in ax.get_xticks()])
        texts = [(e.x0 + e.x1) / 2 for e in (t.get_window_extent(renderer) for t in ax.get_xticklabels())]
    assert np.abs(np.array(texts) - ticks).max() < 4  # each text label is centred on its tick (font metrics aside)
    box = ax.get_window_extent(renderer)
    inside = np.full_like(pixels, -99)  # only the image area: no tick label or title pixel can match a grey level
    rows, cols = slice(int(height - box.y1), int(np.ceil(height - box.y0))), slice(int(box.x0), int(np.ceil(box.x1)))
    inside[rows, cols] = pixels[rows, cols]
    return ticks, inside


@pytest.mark.parametrize("shape", [(28, 20), (20, 16), (8, 8)])
def test_traversal_row_labels_sit_on_their_rows_for_non_square_cells(shape):
    h, w = shape
    levels = torch.tensor([0.2, 0.5, 0.8])  # row k of cells is grey level levels[k]
    images = levels.reshape(3, 1, 1, 1, 1).expand(3, 4, 1, h, w).clone()  # (K, S, C, H, W)
    fig = plots.traversal_figure(images, [0, 1, 2], torch.ones(3), torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    label_y, pixels = _label_and_cell_centres(fig, "y")
    column = int(_label_and_cell_centres(fig, "x")[0][1])  # through the second column of cells
    for k, level in enumerate(levels.tolist()):
        rows = np.flatnonzero(np.abs(pixels[:, column] - round(level * 255)) <= 1)
        assert rows.size and abs(label_y[k] - rows.mean()) < 1.5, (k, label_y[k], rows.mean())


def test_manifold_tick_labels_sit_on_their_cells_for_28x20_images():
    size = 3
    _, values = plots.manifold_latents(size)
    levels = torch.tensor([0.2, 0.4, 0.6])  # 51, 102, 153 of 255: exact grey levels
    row_of, col_of = torch.arange(size * size) // size, torch.arange(size * size) % size
    images = torch.zeros(size * size, 1, 28, 20)
    images[:, :, :14] = levels[row_of].reshape(-1, 1, 1, 1)  # top half of a cell: its row's level
    images[:, :, 14:] = levels[col_of].reshape(-1, 1, 1, 1)  # bottom half: its column's level
    fig = plots.manifold_figure(images, values)
    label_y, pixels = _label_and_cell_centres(fig, "y")
    label_x, _ = _label_and_cell_centres(fig, "x")
    # each label's line is the boundary of its cells' two halves: the row's level above, the column's below
    for k in range(size):
        y = int(round(label_y[k]))
        above, below = pixels[y - 3, int(label_x[1])], pixels[y + 3, int(label_x[1])]
        assert (above, below) == (round(levels[k].item() * 255), round(levels[1].item() * 255))
    line = pixels[int(round(label_y[1])) + 3]  # through the bottom halves of the middle row: the columns' levels
    for c in range(size):
        cols = np.flatnonzero(line == round(levels[c].item() * 255))
        assert cols.size and abs(label_x[c] - cols.mean()) < 1.5, (c, label_x[c], cols.mean())
