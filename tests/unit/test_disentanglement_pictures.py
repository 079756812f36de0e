"""The latent-factor MI heatmap, traversals labelled with the factor each latent captures, and the evaluation hook."""

from pathlib import Path

import numpy as np
import torch

from vae_lab.data import VAEDataModule
from vae_lab.disentanglement.mig import dominant_factors
from vae_lab.evaluation import disentanglement_report
from vae_lab.plots import mi_heatmap, save_png, traversal_figure

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["shape", "scale", "orientation", "pos_x", "pos_y"]


def test_dominant_factors_name_the_most_informative_factor_per_latent():
    mi = np.array([[0.1, 0.0, 0.0, 0.7, 0.0], [0.0, 0.0, 0.01, 0.02, 0.0], [0.3, 0.4, 0.0, 0.0, 0.0]])
    assert dominant_factors(mi, NAMES) == ["pos_x 0.70", "-", "scale 0.40"]


def test_mi_heatmap_and_labelled_traversals_render():
    mi = np.abs(np.random.default_rng(0).standard_normal((4, 5))) / 3
    fig = mi_heatmap(mi, NAMES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z1", "z2", "z3", "z4"]
    assert len(ax.texts) == 20  # every cell's value is written
    save_png(fig, ROOT / "outputs" / "test_pictures" / "mi_heatmap.png")
    labels = dominant_factors(mi, NAMES)
    images = torch.rand(2, 3, 1, 8, 8)
    fig = traversal_figure(images, [2, 0], torch.tensor([0.5, 0.1, 2.0, 0.3]), torch.linspace(-2, 2, 3),
                           factor_labels=labels)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == [f"z3  KL 2.00\n{labels[2]}", f"z1  KL 0.50\n{labels[0]}"]


def test_evaluation_skips_the_scores_with_a_note_when_the_data_has_no_factors(tmp_path):
    dm = VAEDataModule("digits", str(tmp_path))
    assert disentanglement_report(None, dm) == {"skipped": "dataset 'digits' has no ground-truth factors"}
