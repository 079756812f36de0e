"""Pictures of a VAE from tensors: image grids and latent-space figures (no model, no Lightning, no pyplot).

Images are float tensors (N, C, H, W) in the data's range [0, 1] and channel order: grey data stays one channel,
colour data stays RGB. Figures are drawn on matplotlib's Agg canvas directly, so no global backend is touched.
"""

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torchvision.utils import make_grid

from vae_lab.io import atomic_write_bytes

DPI = 100  # figures are figsize * DPI pixels (saved without tight cropping, so sizes are predictable)
TILE_PX = 64  # on-screen size of the longer side of one image cell inside a figure (pixels shown as squares)
MAX_LEGEND_CLASSES = 20  # beyond this a colour bar replaces the legend


# ---------------------------------------------------------------- image grids


def upscale(images: torch.Tensor, min_size: int) -> torch.Tensor:
    """Nearest-neighbour upscale by the smallest integer factor that makes H and W at least `min_size`."""
    factor = max(1, math.ceil(min_size / min(images.shape[-2:])))
    if factor == 1:
        return images
    return images.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)  # (N, C, fH, fW)


def image_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> one (C, H', W') grid, `nrow` images per row, in the images' own channels.

    H' = rows * (H + padding) + padding and W' = min(nrow, N) * (W + padding) + padding, rows = ceil(N / nrow).
    """
    x = images.detach().float().cpu().clamp(0, 1)
    if len(x) == 1:  # make_grid returns a lone image unpadded; keep the geometry uniform
        return F.pad(x[0], [padding] * 4, value=pad_value)
    grid = make_grid(x, nrow=nrow, padding=padding, pad_value=pad_value)
    return grid[: x.shape[1]]  # make_grid repeats a grey channel three times; keep the data's channels


def reconstruction_grid(x: torch.Tensor, x_hat: torch.Tensor, nrow: int, padding: int = 2,
                        pad_value: float = 1.0) -> torch.Tensor:
    """Originals above their reconstructions: rows alternate x[k:k+nrow] / x_hat[k:k+nrow] (blank tiles pad)."""
    nrow = min(nrow, len(x))
    rows = []
    for start in range(0, len(x), nrow):
        for part in (x[start:start + nrow], x_hat[start:start + nrow]):
            blank = part.new_full((nrow - len(part), *part.shape[1:]), pad_value)
            rows.append(torch.cat([part.detach().float(), blank]))
    return image_grid(torch.cat(rows), nrow, padding, pad_value)  # (C, 2 * rows * (H + p) + p, ...)


def strip_grid(strips: torch.Tensor, padding: int = 2, pad_value: float = 1.0) -> torch.Tensor:
    """(R, S, C, H, W) -> a grid with one row of S images per strip (interpolations, traversals)."""
    return image_grid(strips.flatten(0, 1), strips.shape[1], padding, pad_value)


def grid_to_array(grid: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> uint8 (H, W, C), rounded to the nearest of 256 levels."""
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def array_to_image(array: np.ndarray) -> Image.Image:
    """uint8 (H, W, C) -> a PIL image: mode L for one channel, RGB for three."""
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


# ---------------------------------------------------------------- figures -> pixels and files


def figure_to_array(fig: Figure) -> np.ndarray:
    """The figure rendered on an Agg canvas (figsize * DPI pixels, never cropped): uint8 RGB (H, W, 3)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def to_array(picture: torch.Tensor | Figure) -> np.ndarray:
    """uint8 (H, W, C) pixels of a grid tensor (C, H, W) or a figure: what TensorBoard's add_image takes as HWC."""
    return figure_to_array(picture) if isinstance(picture, Figure) else grid_to_array(picture)


def save_png(picture: torch.Tensor | Figure | np.ndarray, path: str | Path) -> Path:
    """Write a grid tensor (C, H, W), a figure or uint8 pixels (H, W, C) as a PNG, atomically; returns the path."""
    array = picture if isinstance(picture, np.ndarray) else to_array(picture)
    buffer = io.BytesIO()
    array_to_image(array).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def _image_figure(grid: torch.Tensor, cell: tuple[int, int],
                  margins: tuple[float, float, float, float]) -> tuple[Figure, object]:
    """A figure showing `grid` (C, H, W) of cells (height, width) whose larger side is TILE_PX on screen, inside
    absolute margins (left, right, bottom, top) in inches (room for tick labels and the title). The axes' data
    coordinates are the grid's pixels, so a tick at `_tile_centres(...)` sits on a cell centre."""
    scale = TILE_PX / max(cell)
    width, height = grid.shape[2] * scale / DPI, grid.shape[1] * scale / DPI  # inches
    left, right, bottom, top = margins
    fig = Figure(figsize=(width + left + right, height + bottom + top), dpi=DPI)
    fig_w, fig_h = fig.get_size_inches()
    ax = fig.add_axes((left / fig_w, bottom / fig_h, width / fig_w, height / fig_h))
    array = grid_to_array(grid)
    grey = array.shape[-1] == 1
    ax.imshow(array[..., 0] if grey else array, cmap="gray" if grey else None, vmin=0, vmax=255,
              interpolation="nearest", extent=(0, grid.shape[2], grid.shape[1], 0))
    return fig, ax


def _tile_centres(count: int, size: int, padding: int) -> np.ndarray:
    """Pixel coordinates of the centres of `count` cells of `size` pixels along one axis of a padded grid."""
    return padding + np.arange(count) * (size + padding) + size / 2


# ---------------------------------------------------------------- latent space


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of latent codes and how they were obtained."""

    coords: np.ndarray  # (N, 2)
    method: str  # "raw": the latent coordinates themselves; "pca": the first two principal components; "tsne"
    axis_labels: tuple[str, str]
    explained_variance: tuple[float, float] | None  # share of the total variance on each axis (PCA only)


def project_2d(z: np.ndarray) -> Projection:
    """Raw coordinates for latent_dim <= 2 (a zero axis is added for 1-D); PCA to 2-D otherwise."""
    z = np.asarray(z, dtype=np.float64)  # (N, D)
    if z.shape[1] == 1:
        return Projection(np.column_stack([z[:, 0], np.zeros(len(z))]), "raw", ("z1", "(1-D latent)"), None)
    if z.shape[1] == 2:
        return Projection(z.copy(), "raw", ("z1", "z2"), None)
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(z)
    ratio = tuple(float(r) for r in pca.explained_variance_ratio_)
    labels = tuple(f"PC{k + 1} ({100 * r:.1f}% of variance)" for k, r in enumerate(ratio))
    return Projection(pca.transform(z), "pca", labels, ratio)


def latent_scatter(projection: Projection, labels: np.ndarray | None = None,
                   class_names: tuple[str, ...] | None = None, title: str = "Latent space") -> Figure:
    """Scatter of 2-D codes coloured by class, with a legend of class names (a colour bar for many classes)."""
    fig = Figure(figsize=(9, 7), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    xy = projection.coords
    size = float(np.clip(3000 / max(len(xy), 1), 4, 30))  # marker area: bigger points when there are few
    labelled = labels is not None and len(labels) and (np.asarray(labels) >= 0).all()
    if not labelled:
        ax.scatter(xy[:, 0], xy[:, 1], s=size, alpha=0.6, color="tab:blue", linewidths=0)
    else:
        labels = np.asarray(labels)
        num_classes = max(int(labels.max()) + 1, len(class_names or ()))
        names = list(class_names or ()) + [str(c) for c in range(len(class_names or ()), num_classes)]
        if num_classes <= MAX_LEGEND_CLASSES:
            import matplotlib

            cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
            for c in range(num_classes):
                mask = labels == c
                if mask.any():
                    ax.scatter(xy[mask, 0], xy[mask, 1], s=size, alpha=0.6, color=cmap(c), linewidths=0,
                               label=names[c])
            ax.legend(title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=3, frameon=False)
        else:
            points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="turbo", s=size, alpha=0.6, linewidths=0)
            fig.colorbar(points, ax=ax, label="class index")
    ax.set_xlabel(projection.axis_labels[0])
    ax.set_ylabel(projection.axis_labels[1])
    if projection.method == "pca":
        total = 100 * sum(projection.explained_variance)
        how = f"PCA to 2-D: {total:.1f}% of the variance explained"
    elif projection.method == "tsne":
        how = "t-SNE to 2-D (distances between clusters are not meaningful)"
    else:
        how = "raw latent coordinates"
    ax.set_title(f"{title}\n{len(xy)} posterior means, {how}")
    ax.grid(alpha=0.3)
    return fig


def manifold_latents(size: int, quantiles: tuple[float, float] = (0.05, 0.95)) -> tuple[torch.Tensor, torch.Tensor]:
    """A size x size grid of 2-D codes, row-major as displayed (top row: largest z2), and the per-axis values.

    Evenly spaced quantiles mapped through the inverse Gaussian CDF, so the grid covers the prior's mass evenly
    (Fig. 4, Kingma & Welling 2014). Returns z (size * size, 2) and values (size,) in increasing order.
    """
    q = torch.linspace(quantiles[0], quantiles[1], size, dtype=torch.float64)
    values = torch.distributions.Normal(0.0, 1.0).icdf(q).float()  # (G,)
    z2, z1 = torch.meshgrid(values.flip(0), values, indexing="ij")  # (G, G): rows top -> bottom, cols left -> right
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1), values


def manifold_figure(images: torch.Tensor, values: torch.Tensor, padding: int = 1,
                    title: str = "Decoded 2-D latent manifold") -> Figure:
    """Images (G*G, C, H, W) decoded from `manifold_latents(G)`, with z1 / z2 tick labels."""
    size, (height, width) = len(values), images.shape[-2:]
    grid = image_grid(images, size, padding, pad_value=1.0)
    fig, ax = _image_figure(grid, (height, width), margins=(0.8, 0.2, 0.7, 0.6))
    step = max(1, math.ceil(size / 10))  # at most ~10 labelled ticks per axis
    keep = np.arange(0, size, step)
    labels = [f"{v:.2f}" for v in values.tolist()]
    ax.set_xticks(_tile_centres(size, width, padding)[keep], [labels[k] for k in keep])
    ax.set_yticks(_tile_centres(size, height, padding)[keep], [labels[::-1][k] for k in keep])
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title(f"{title}\nmean of p(x|z) on a {size}x{size} grid of Gaussian quantiles")
    return fig


def traversal_latents(base: torch.Tensor, dims: list[int], values: torch.Tensor) -> torch.Tensor:
    """Codes that set one dimension of `base` (D,) to each of `values` (S,): (len(dims), S, D)."""
    z = base.reshape(1, 1, -1).repeat(len(dims), len(values), 1)  # (K, S, D)
    for row, d in enumerate(dims):
        z[row, :, d] = values
    return z


def traversal_figure(images: torch.Tensor, dims: list[int], kl: torch.Tensor, values: torch.Tensor,
                     padding: int = 1, title: str = "Latent traversals", score_name: str = "KL",
                     factor_labels: list[str] | None = None) -> Figure:
    """Images (K, S, C, H, W): row k varies latent dims[k] over `values`; rows labelled with their score `kl` (the
    mean KL in nats, or `score_name` = "Var": the variance of the codes where the KL is undefined) and, given
    `factor_labels` (one per latent dimension, e.g. from disentanglement.mig.dominant_factors), the ground-truth
    factor that dimension captures most."""
    height, width = images.shape[-2:]
    grid = strip_grid(images, padding, pad_value=1.0)
    fig, ax = _image_figure(grid, (height, width), margins=(1.5, 0.2, 0.7, 0.6))
    ax.set_xticks(_tile_centres(images.shape[1], width, padding), [f"{v:+.2f}" for v in values.tolist()])
    labels = [f"z{d + 1}  {score_name} {float(kl[d]):.2f}" + (f"\n{factor_labels[d]}" if factor_labels else "")
              for d in dims]
    ax.set_yticks(_tile_centres(len(dims), height, padding), labels)
    ax.set_xlabel("value of the traversed dimension (prior std units)")
    order = {"KL": "largest mean KL(q||p) (nats) first", "Var": "largest variance of the codes first"}
    ax.set_title(f"{title}\none row per latent dimension, {order.get(score_name, 'in order')}")
    return fig


def kl_bar_figure(kl: torch.Tensor, title: str = "KL per latent dimension", labels: list[str] | None = None) -> Figure:
    """Bar chart of the mean KL(q(z_d|x) || p(z_d)) per dimension d (or per latent group, named by `labels`), nats."""
    kl = np.asarray(kl, dtype=np.float64)  # (D,)
    fig = Figure(figsize=(min(16.0, max(6.0, 0.25 * len(kl) + 2)), 4.5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    dims = np.arange(1, len(kl) + 1)
    ax.bar(dims, kl, color="tab:blue")
    unit = "dimension" if labels is None else "group"
    ax.set_xlabel(f"latent {unit}")
    ax.set_ylabel("mean KL (nats)")
    if labels is not None:
        ax.set_xticks(dims, labels, rotation=45 if len(labels) > 8 else 0)
    elif len(kl) <= 32:
        ax.set_xticks(dims)
    ax.set_title(f"{title}\ntotal {kl.sum():.2f} nats over {len(kl)} {unit}s")
    ax.grid(axis="y", alpha=0.3)
    return fig


def mi_heatmap(mi: torch.Tensor | np.ndarray, factor_names: list[str],
               title: str = "Mutual information between latents and factors") -> Figure:
    """Heatmap of I(z_d; v_f) / H(v_f) (D, F): rows latent dimensions, columns ground-truth factors, values shown."""
    mi = np.asarray(mi, dtype=np.float64)
    fig = Figure(figsize=(1.2 * mi.shape[1] + 2.5, 0.4 * mi.shape[0] + 1.8), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(mi, cmap="viridis", vmin=0.0, vmax=max(1e-9, float(mi.max())), aspect="auto")
    ax.set_xticks(np.arange(mi.shape[1]), factor_names)
    ax.set_yticks(np.arange(mi.shape[0]), [f"z{d + 1}" for d in range(mi.shape[0])])
    for (d, f), value in np.ndenumerate(mi):
        ax.text(f, d, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="black" if value > 0.6 * mi.max() else "white")
    fig.colorbar(image, ax=ax, label="I(z_d; v_f) / H(v_f)")
    ax.set_title(title)
    return fig
