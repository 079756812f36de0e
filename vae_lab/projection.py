"""t-SNE of latent codes (scikit-learn), drawn as plots.latent_scatter draws PCA."""

import numpy as np
from matplotlib.figure import Figure

from vae_lab import plots
from vae_lab.pictures import LatentCodes, PictureSkipped


def tsne_2d(z: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> plots.Projection:
    """t-SNE to 2-D (van der Maaten & Hinton 2008): PCA initialisation, perplexity capped below the point count."""
    from sklearn.manifold import TSNE

    z = np.asarray(z, dtype=np.float64)
    if len(z) < 5:
        raise PictureSkipped(f"t-SNE needs at least 5 points; {len(z)} given")
    perplexity = min(perplexity, (len(z) - 1) / 3)
    coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    return plots.Projection(coords, "tsne", ("t-SNE 1", "t-SNE 2"), None)


def tsne_scatter(codes: LatentCodes, class_names, title: str, seed: int = 0, perplexity: float = 30.0) -> Figure:
    projection = tsne_2d(codes.means.numpy(), seed, perplexity)
    labels = codes.labels.numpy() if codes.labelled else None
    return plots.latent_scatter(projection, labels, class_names, f"{title} (t-SNE, perplexity {perplexity:g})")
