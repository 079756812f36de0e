"""Figures of per-example scores: a histogram per source, and the most / least typical examples (tensors in)."""

import numpy as np
import torch
from matplotlib.figure import Figure

from vae_lab import plots

DPI = plots.DPI


def score_histogram(values: dict[str, np.ndarray], name: str, unit: str) -> Figure:
    """One histogram per source (shared bins, densities) of score `name`."""
    fig = Figure(figsize=(7, 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    finite = [v[np.isfinite(v)] for v in values.values()]
    both = np.concatenate(finite) if finite else np.zeros(1)
    lo, hi = np.percentile(both, [0.5, 99.5]) if len(both) else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 60)
    for source, v in zip(values, finite):
        ax.hist(np.clip(v, lo, hi), bins=bins, density=True, alpha=0.5, label=f"{source} ({len(v)})")
    ax.set_xlabel(f"{name} ({unit}); higher: less typical")
    ax.set_ylabel("density")
    ax.set_title(f"{name}\n0.5-99.5 percentile range (outliers clipped to its ends)", fontsize=10)
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    return fig


def extremes_grid(x: torch.Tensor, scores: torch.Tensor, count: int, min_image_size: int = 28) -> torch.Tensor:
    """Top row(s): the `count` lowest scores (most typical), then a blank row, then the `count` highest: (C, H, W)."""
    order = torch.argsort(scores, stable=True)
    count = min(count, len(order))
    low, high = x[order[:count]], x[order.flip(0)[:count]]
    blank = torch.ones_like(low)
    images = torch.cat([low, blank, high]).float()
    return plots.image_grid(plots.upscale(images, min_image_size), count)
