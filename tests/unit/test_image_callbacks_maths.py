"""The maths the image-grid and latent-plot callbacks draw (interpolations, pairs, KL per dimension, codes, the
latent scatter) and their bad knobs, each one clear config error (the fits and PNG files are in
tests/integration/test_image_callbacks.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vae_lab.callbacks.images import ImageGrids
from vae_lab.callbacks.latent import LatentPlots
from vae_lab.distributions.kl import rate_per_dim
from vae_lab.errors import ConfigError, DataError
from vae_lab.model import VAE
from vae_lab.pictures import (encode_codes, interpolation_latents, interpolation_strips, pick_pairs,
                              reconstructions, scatter_figure)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_vae(latent_dim=3, conditional=False, seed=0):
    torch.manual_seed(seed)
    return VAE(in_shape=[1, 8, 8], latent_dim=latent_dim, net={"hidden_dims": [16]}, conditional=conditional,
               num_classes=10).eval()


# ---------------------------------------------------------------- the maths of the pictures


def test_interpolation_latents_are_straight_lines_between_the_ends():
    z_a, z_b = torch.randn(3, 4), torch.randn(3, 4)
    z = interpolation_latents(z_a, z_b, 5)
    assert z.shape == (3, 5, 4)
    torch.testing.assert_close(z[:, 0], z_a)
    torch.testing.assert_close(z[:, -1], z_b)
    torch.testing.assert_close(z[:, 2], (z_a + z_b) / 2)


@pytest.mark.parametrize("conditional", [False, True])
def test_interpolation_strips_frame_decoded_points_with_the_originals(conditional):
    model = small_vae(conditional=conditional)
    x_a, x_b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    y = torch.tensor([3, 5])
    strips = interpolation_strips(model, x_a, x_b, 4, y)
    assert strips.shape == (2, 6, 1, 8, 8)
    assert torch.equal(strips[:, 0], x_a) and torch.equal(strips[:, -1], x_b)
    cond = y if conditional else None
    with torch.no_grad():  # oracle: decode each point on its own, with its pair's label
        for p in range(2):
            z_a, z_b = model.encode(x_a[p:p + 1], cond[p:p + 1] if conditional else None).mean, \
                model.encode(x_b[p:p + 1], cond[p:p + 1] if conditional else None).mean
            for s, t in enumerate(torch.linspace(0, 1, 4)):
                expected = model.decode((1 - t) * z_a + t * z_b, cond[p:p + 1] if conditional else None).mean[0]
                torch.testing.assert_close(strips[p, s + 1], expected)
        # the ends of the decoded part are the reconstructions
        torch.testing.assert_close(strips[:, 1], reconstructions(model, x_a, y))


def test_pick_pairs_walks_classes_and_never_reuses_an_example():
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 1])
    a, b = pick_pairs(labels, 3)
    assert [(int(labels[i]), int(labels[j])) for i, j in zip(a, b)] == [(0, 1), (1, 2), (2, 0)]
    assert len(set(a.tolist() + b.tolist())) == 6
    a, b = pick_pairs(labels, 2, same_class=True)
    assert torch.equal(labels[a], labels[b]) and not (a == b).any()
    a, b = pick_pairs(labels, 1, class_pairs=[(2, 1)])
    assert (int(labels[a]), int(labels[b])) == (2, 1)
    a, b = pick_pairs(torch.full((5,), -1), 2)  # unlabelled: consecutive examples
    assert a.tolist() == [0, 2] and b.tolist() == [1, 3]
    with pytest.raises(DataError, match="class 7"):
        pick_pairs(labels, 1, class_pairs=[(7, 0)])


def test_kl_per_dim_sums_to_the_kl_and_matches_the_closed_form():
    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    q_z = Independent(Normal(loc, scale), 1)
    p_z = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    per_dim = rate_per_dim(q_z, p_z)
    closed_form = 0.5 * (loc**2 + scale**2 - 1) - scale.log()  # KL(N(m, s^2) || N(0, 1)) per dimension
    torch.testing.assert_close(per_dim, closed_form)
    torch.testing.assert_close(per_dim.sum(-1), kl_divergence(q_z, p_z))


def test_encode_codes_keeps_the_first_points_of_a_class_and_averages_kl():
    model = small_vae()
    x = torch.rand(12, 1, 8, 8)
    y = torch.arange(12) % 3
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    codes = encode_codes(model, batches, max_points=7)
    with torch.no_grad():
        q_z = model.encode(x[:7])
        torch.testing.assert_close(codes.means, q_z.mean)
        torch.testing.assert_close(codes.kl_per_dim, rate_per_dim(q_z, model.prior()).mean(0))
    only = encode_codes(model, batches, max_points=3, only_class=1)
    assert only.labels.tolist() == [1, 1, 1]
    with torch.no_grad():
        torch.testing.assert_close(only.means, model.encode(x[[1, 4, 7]]).mean)


@pytest.mark.parametrize("latent_dim,method", [(2, "raw"), (5, "pca")])
def test_latent_scatter_of_a_vae_is_raw_in_2d_and_pca_beyond(latent_dim, method):
    model = small_vae(latent_dim)
    x, y = torch.rand(40, 1, 8, 8), torch.arange(40) % 4
    codes = encode_codes(model, [(x, y)], max_points=40)
    fig = scatter_figure(codes, ("a", "b", "c", "d"), "Latent space")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c", "d"]
    if method == "raw":
        assert "raw latent coordinates" in ax.get_title() and ax.get_xlabel() == "z1"
        plotted = np.concatenate([c.get_offsets() for c in ax.collections])
        expected = np.concatenate([codes.means[y == c].numpy() for c in range(4)])
        np.testing.assert_allclose(plotted, expected, rtol=1e-6)
    else:
        assert "PCA to 2-D" in ax.get_title() and "% of the variance explained" in ax.get_title()
        assert ax.get_xlabel().startswith("PC1")


# ---------------------------------------------------------------- bad knobs


@pytest.mark.parametrize("callback,key", [
    (lambda: ImageGrids(every_n_epochs=-1), "callbacks.image_grids.every_n_epochs=-1"),
    (lambda: ImageGrids(interpolation_steps=1), "callbacks.image_grids.interpolation_steps=1"),
    (lambda: ImageGrids(pad_value=2), "callbacks.image_grids.pad_value=2"),
    (lambda: LatentPlots(split="train"), "callbacks.latent_plots.split='train'"),
    (lambda: LatentPlots(manifold_quantiles=(0.9, 0.1)), "callbacks.latent_plots.manifold_quantiles"),
    (lambda: LatentPlots(traversal_range=0), "callbacks.latent_plots.traversal_range=0"),
])
def test_bad_knobs_are_one_clear_config_error(callback, key):
    with pytest.raises(ConfigError, match=f"^{key}".replace("[", r"\[").replace("(", r"\(")):
        callback().setup(SimpleNamespace(datamodule=None), None, "fit")
