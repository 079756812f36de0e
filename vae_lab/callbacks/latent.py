"""Latent-space plots at the end of training: scatter by class, 2-D manifold, traversals by KL, KL per dimension.

Rank zero only, once, in eval mode under no_grad. PNGs go to `<run dir>/images/`, figures to TensorBoard under
`latent/*`. The functions below take a VAE and batches, so scripts/sample.py draws the same figures.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import lightning as L
import torch
from matplotlib.figure import Figure
from torch.distributions import Distribution, Independent, kl_divergence

from vae_lab import plots
from vae_lab.callbacks.images import check_int, condition, decode_mean, evaluating, images_dir, publish, should_draw
from vae_lab.errors import ConfigError, DataError, choices_error
from vae_lab.model import VAE

SPLITS = {"val": "val_dataloader", "test": "test_dataloader"}  # split -> the datamodule method serving it
TAGS = {"latent_scatter": "latent/scatter", "latent_manifold": "latent/manifold",
        "latent_traversals": "latent/traversals", "kl_per_dim": "latent/kl_per_dim_nats"}


@dataclass
class LatentCodes:
    """Posterior means of a set of examples, their labels, and the mean KL per latent dimension."""

    means: torch.Tensor  # (N, D) E_q[z|x], CPU
    labels: torch.Tensor  # (N,) int64, -1 when unlabelled
    kl_per_dim: torch.Tensor  # (D,) mean over the N examples of KL(q(z_d|x) || p(z_d)), nats

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


def kl_per_dim(q_z: Independent, p_z: Independent) -> torch.Tensor:
    """KL(q(z_d|x) || p(z_d)) for each example and dimension (B, D); sums over d to KL(q || p) (factorised)."""
    return kl_divergence(q_z.base_dist, p_z.base_dist)


def encode_codes(model: VAE, batches: Iterable, max_points: int, only_class: int | None = None) -> LatentCodes:
    """Posterior means, labels and KL per dimension of the first `max_points` examples (of `only_class`, if set)."""
    device = next(model.parameters()).device
    means, labels, kl_sum, count = [], [], None, 0
    with evaluating(model):
        p_z: Distribution = model.prior()
        for x, y in batches:
            if only_class is not None:
                keep = y == only_class
                x, y = x[keep], y[keep]
            x, y = x[: max_points - count].to(device), y[: max_points - count].to(device)
            if not len(x):
                continue
            q_z = model.encode(x, condition(model, y))
            kl = kl_per_dim(q_z, p_z).sum(0)  # (D,)
            kl_sum = kl if kl_sum is None else kl_sum + kl
            means.append(q_z.mean.cpu())
            labels.append(y.cpu())
            count += len(x)
            if count >= max_points:
                break
    if not count:
        which = "" if only_class is None else f" of class {only_class}"
        raise DataError(f"no examples{which} to encode")
    return LatentCodes(torch.cat(means), torch.cat(labels), (kl_sum / count).cpu())


def scatter_figure(codes: LatentCodes, class_names: tuple[str, ...] | None, title: str) -> Figure:
    """Latent scatter coloured by class: raw coordinates for latent_dim <= 2, PCA to 2-D otherwise."""
    projection = plots.project_2d(codes.means.numpy())
    labels = codes.labels.numpy() if codes.labelled else None
    return plots.latent_scatter(projection, labels, class_names, title)


def manifold_figure(model: VAE, size: int, quantiles: tuple[float, float], label: int | None = None,
                    title: str = "Decoded 2-D latent manifold") -> Figure:
    """The decoder's images over a size x size grid of 2-D codes (latent_dim 2 only)."""
    if model.latent_dim != 2:
        raise ConfigError(f"the latent manifold needs a model trained with model.latent_dim=2; this one has "
                          f"latent_dim={model.latent_dim}")
    device = next(model.parameters()).device
    z, values = plots.manifold_latents(size, tuple(quantiles))  # (G*G, 2), (G,)
    y = None if label is None else torch.full((len(z),), label, device=device)
    with evaluating(model):
        images = decode_mean(model, z.to(device), y)  # (G*G, C, H, W)
    return plots.manifold_figure(images, values, title=title)


def traversal_figure(model: VAE, base: torch.Tensor, kl: torch.Tensor, num_dims: int, steps: int, span: float,
                     label: int | None = None, title: str = "Latent traversals",
                     factor_labels: list[str] | None = None) -> Figure:
    """Rows vary the `num_dims` dimensions of largest KL of `base` (D,) over [-span, span] (prior std units);
    `factor_labels` (one per latent dimension) name the ground-truth factor each captures most."""
    device = next(model.parameters()).device
    dims = torch.argsort(kl, descending=True)[:num_dims].tolist()
    values = torch.linspace(-span, span, steps)
    z = plots.traversal_latents(base.cpu().float(), dims, values)  # (K, S, D)
    y = None if label is None else torch.full((z.shape[0] * z.shape[1],), label, device=device)
    with evaluating(model):
        images = decode_mean(model, z.flatten(0, 1).to(device), y)  # (K*S, C, H, W)
    return plots.traversal_figure(images.unflatten(0, z.shape[:2]), dims, kl, values, title=title,
                                  factor_labels=factor_labels)


def latent_figures(model: VAE, codes: LatentCodes, class_names: tuple[str, ...] | None, split: str,
                   manifold_size: int, manifold_quantiles: tuple[float, float], traversal_dims: int,
                   traversal_steps: int, traversal_range: float) -> dict[str, Figure]:
    """Every end-of-training figure: name -> Figure (the manifold only for latent_dim 2)."""
    first = int(codes.labels[0])  # the class of the traversals' base image (-1: unlabelled)
    first_name = "" if first < 0 else f" (class {class_names[first] if class_names else first})"
    label = first if model.conditional else None  # a conditional decoder needs a class
    named = first_name if model.conditional else ""
    figures = {
        "latent_scatter": scatter_figure(codes, class_names, f"Latent space of the {split} split"),
        "kl_per_dim": plots.kl_bar_figure(codes.kl_per_dim, f"KL(q||p) per latent dimension, {split} split "
                                                            f"({len(codes.means)} examples)"),
    }
    if model.latent_dim == 2 and manifold_size:
        figures["latent_manifold"] = manifold_figure(model, manifold_size, manifold_quantiles, label,
                                                     title=f"Decoded 2-D latent manifold{named}")
    if traversal_dims:
        figures["latent_traversals"] = traversal_figure(
            model, codes.means[0], codes.kl_per_dim, traversal_dims, traversal_steps, traversal_range, label,
            title=f"Latent traversals around the first {split} image{first_name}")
    return figures


class LatentPlots(L.Callback):
    """At the end of training: latent scatter, 2-D manifold (latent_dim 2), traversals and KL bars of a split.

    Args:
        dirpath: where PNGs go (default `<default_root_dir>/images`).
        split: val | test: the examples encoded.
        max_points: at most this many examples encoded (the first ones of the split).
        manifold_size: the manifold is a size x size grid (0: none).
        manifold_quantiles: range of Gaussian quantiles the manifold grid spans on each axis.
        traversal_dims: rows of the traversal figure, the dimensions of largest KL (0: none).
        traversal_steps: values per traversed dimension.
        traversal_range: each traversed dimension goes from -range to +range.
    """

    config_key = "callbacks.latent_plots"

    def __init__(self, dirpath: str | None = None, split: str = "val", max_points: int = 5000,
                 manifold_size: int = 20, manifold_quantiles: tuple[float, float] = (0.05, 0.95),
                 traversal_dims: int = 10, traversal_steps: int = 9, traversal_range: float = 3.0):
        super().__init__()
        self.dirpath = dirpath
        self.split = split
        self.max_points = max_points
        self.manifold_size = manifold_size
        self.manifold_quantiles = tuple(manifold_quantiles)
        self.traversal_dims = traversal_dims
        self.traversal_steps = traversal_steps
        self.traversal_range = traversal_range
        self.written: list = []

    def setup(self, trainer: "L.Trainer", pl_module: "L.LightningModule", stage: str) -> None:
        key = self.config_key
        if self.split not in SPLITS:
            raise choices_error(f"{key}.split", self.split, SPLITS)
        for name, lo in (("max_points", 1), ("manifold_size", 0), ("traversal_dims", 0), ("traversal_steps", 2)):
            check_int(f"{key}.{name}", getattr(self, name), lo)
        lo, hi = self.manifold_quantiles if len(self.manifold_quantiles) == 2 else (None, None)
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo < hi < 1):
            raise ConfigError(f"{key}.manifold_quantiles={list(self.manifold_quantiles)!r} is invalid: "
                              "must be [low, high] with 0 < low < high < 1")
        if not isinstance(self.traversal_range, (int, float)) or self.traversal_range <= 0:
            raise ConfigError(f"{key}.traversal_range={self.traversal_range!r} is invalid: must be a number > 0")
        spec = getattr(trainer.datamodule, "spec", None)
        if self.split == "test" and spec is not None and not spec.has_test:
            raise ConfigError(f"{key}.split=test is invalid: this dataset has no test split; use split=val")

    def on_train_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if not should_draw(trainer) or trainer.datamodule is None:
            return
        datamodule = trainer.datamodule
        model = pl_module.model
        codes = encode_codes(model, getattr(datamodule, SPLITS[self.split])(), self.max_points)
        spec = getattr(datamodule, "spec", None)
        figures = latent_figures(model, codes, getattr(spec, "class_names", None), self.split, self.manifold_size,
                                 self.manifold_quantiles, self.traversal_dims, self.traversal_steps,
                                 self.traversal_range)
        folder = images_dir(trainer, self.dirpath)
        for name, figure in figures.items():
            self.written.append(publish(trainer, TAGS[name], figure, folder / f"{name}.png"))
