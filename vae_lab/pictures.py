"""Pictures of a VAE from the model and tensors already loaded (no Lightning, no Hydra, no files).

Sample, reconstruction and interpolation grids, latent scatter, 2-D manifold, traversals and KL per dimension.
The callbacks (vae_lab/callbacks/images.py, latent.py) decide when to draw and where to log; vae_lab.sampling
draws on demand. A picture the data cannot support (PCA of fewer than 3 points, say) raises PictureSkipped, whose
message is the one-line note shown instead; pictures that leave something out say so in a note too.
"""

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn
from torch.distributions import Distribution

from vae_lab import plots
from vae_lab.distributions import posterior_code
from vae_lab.distributions.kl import ANALYTIC, rate_per_dim
from vae_lab.errors import ConfigError, DataError
from vae_lab.model import VAE, ModelFamily

PAIR_POOL = 1024  # examples searched for interpolation pairs (only the chosen ones are kept)
MIN_PCA_POINTS = 3  # PCA to 2-D of fewer points has no second direction worth plotting
CLASS_COLUMNS = 20  # conditional samples: one column per class up to this many classes; more wrap into bands
MAX_SAMPLE_CLASSES = 200  # conditional samples of more classes show the first ones, with a note


class PictureSkipped(DataError):
    """A picture that cannot be drawn from what was given; the message says why, in one line."""


# ---------------------------------------------------------------- a model in eval mode


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no_grad inside; every submodule's own train/eval flag restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def device_of(model: VAE) -> torch.device:
    return next(model.parameters()).device


def decode_mean(model: VAE, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of p(x|z) for codes (N, D): images (N, C, H, W) in [0, 1]."""
    return model.decode(z, model.labels(y)).mean


def reconstructions(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of p(x|z) at z = E_q[z|x]: (N, C, H, W)."""
    return model.reconstruct(x, model.labels(y))


def flat_only(model: ModelFamily, picture: str) -> None:
    """PictureSkipped unless the model's latent is one flat vector (what `picture` is drawn in)."""
    if not getattr(model, "flat_code", False):
        raise PictureSkipped(f"{picture} needs one flat latent code (model.family=vae); a {type(model).__name__} "
                             f"has latent groups {', '.join(g.name for g in model.latent_groups())}: skipped")


def family_samples(model: ModelFamily, num: int, seed: int, y: torch.Tensor | None = None,
                   temperature: float = 1.0) -> torch.Tensor:
    """model.sample(num, y, temperature) with the random stream of `seed`, global RNG state left as it was:
    (num, C, H, W), the mean of p(x|z) at z from the prior (each prior scale times `temperature`)."""
    device = device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.sample(num, y, temperature=temperature)


def prior_samples(model: VAE, num: int, seed: int) -> torch.Tensor:
    """z ~ p(z) of the model's prior as it is now (num, latent_dim), on the model's device: the same random stream
    for a seed (a fixed prior gives the same codes every time), global RNG state left as it was."""
    device = device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.prior().sample((num,))


# ---------------------------------------------------------------- examples from batches


def first_examples(batches: Iterable, n: int, only_class: int | None = None,
                   split: str = "validation") -> tuple[torch.Tensor, torch.Tensor]:
    """The first n (x, y) examples of an iterable of (x, y) batches (of one class, if given; fewer if it runs out),
    on the CPU. No example at all is a DataError naming the split."""
    xs, ys, got = [], [], 0
    for x, y in batches:
        if only_class is not None:
            x, y = x[y == only_class], y[y == only_class]
        xs.append(x.cpu())
        ys.append(y.cpu())
        got += len(x)
        if got >= n:
            break
    if not got:
        which = "" if only_class is None else f" of class {only_class}"
        raise DataError(f"the {split} split has no examples{which}")
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def pick_pairs(labels: torch.Tensor, num_pairs: int, same_class: bool = False,
               class_pairs: list[tuple[int, int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (start, end) of `num_pairs` pairs of distinct examples (an example is reused only when too few).

    Labelled data: pair k goes from class c_k to class c_{k+1} (c_k -> c_k when `same_class`, as a conditional
    model needs), or through the given (start class, end class) pairs; unlabelled data: consecutive examples.
    """
    labels = labels.cpu()
    n = len(labels)
    if n == 0:
        raise DataError("no examples to interpolate between")
    if (labels < 0).any() and class_pairs is None:
        a = torch.arange(0, 2 * num_pairs, 2) % n
        return a, (a + 1) % n
    if class_pairs is None:
        classes = labels.unique().tolist()
        class_pairs = [(c, c if same_class else classes[(k + 1) % len(classes)]) for k, c in enumerate(classes)]
    used: set[int] = set()

    def take(c: int) -> int:
        where = (labels == c).nonzero().flatten().tolist()
        if not where:
            raise DataError(f"no example of class {c} among the {n} examples searched")
        index = next((i for i in where if i not in used), where[0])  # reuse only when the class runs out
        used.add(index)
        return index

    pairs = [(take(a), take(b)) for a, b in (class_pairs[k % len(class_pairs)] for k in range(num_pairs))]
    start, end = zip(*pairs)
    return torch.tensor(start), torch.tensor(end)


# ---------------------------------------------------------------- image grids


def sample_grid(model: ModelFamily, num: int, seed: int, nrow: int = 8, label: int | None = None,
                by_class: bool = True, min_image_size: int = 28, pad_value: float = 1.0,
                temperature: float = 1.0) -> tuple[torch.Tensor, str | None]:
    """`num` samples (mean of p(x|z), z from the prior as `family_samples(seed, temperature)` draws it) as a grid
    (C, H, W), and a note or None.

    A conditional model draws class `label`, else (`by_class`) one column per class: up to CLASS_COLUMNS classes
    in one band of ceil(num / classes) rows; more classes wrap into bands of CLASS_COLUMNS columns, class k in
    column k mod CLASS_COLUMNS of band k // CLASS_COLUMNS, max(1, num // classes) rows each, so every class shows
    (the first MAX_SAMPLE_CLASSES, with a note, beyond that).
    """
    device = device_of(model)
    classes, note = model.num_classes if model.conditional else 0, None
    if not classes:
        y = None
    elif label is not None:
        y = torch.full((num,), label)
    elif not by_class:
        y = torch.arange(num) % classes
    elif classes <= CLASS_COLUMNS:
        y, nrow = torch.arange(num) % classes, classes
    else:
        shown = min(classes, MAX_SAMPLE_CLASSES)
        if shown < classes:
            note = (f"samples show classes 0-{shown - 1} of {classes} (one column per class, wrapped into rows); "
                    f"class=K draws any one class")
        bands, per_class = math.ceil(shown / CLASS_COLUMNS), max(1, num // shown)
        y = torch.arange(bands * CLASS_COLUMNS).reshape(bands, 1, -1).repeat(1, per_class, 1).flatten()
        y[y >= shown] = -1  # a blank tile after the last class
        nrow = CLASS_COLUMNS
    with evaluating(model):  # drawn anew each time: a learned prior (mog, vamp) moves during training
        labels = None if y is None else y[y >= 0].to(device)
        images = family_samples(model, num if y is None else int((y >= 0).sum()), seed, labels,
                                temperature)  # (N, C, H, W)
    if y is not None and (y < 0).any():
        tiles = images.new_full((len(y), *images.shape[1:]), pad_value)
        tiles[y >= 0] = images
        images = tiles
    return plots.image_grid(plots.upscale(images, min_image_size), nrow, pad_value=pad_value), note


def reconstruction_grid(model: VAE, x: torch.Tensor, y: torch.Tensor | None, nrow: int, min_image_size: int = 28,
                        pad_value: float = 1.0) -> torch.Tensor:
    """Rows of originals `x` (N, C, H, W) above their reconstructions: (C, H', W')."""
    with evaluating(model):
        x_hat = reconstructions(model, x, y)
    big = lambda images: plots.upscale(images, min_image_size)  # noqa: E731
    return plots.reconstruction_grid(big(x), big(x_hat), nrow, pad_value=pad_value)


def interpolation_latents(z_a: torch.Tensor, z_b: torch.Tensor, steps: int) -> torch.Tensor:
    """Straight lines z_a -> z_b (P, D) at `steps` evenly spaced points, ends included: (P, steps, D)."""
    t = torch.linspace(0, 1, steps, device=z_a.device).reshape(1, -1, 1)  # (1, S, 1)
    return (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)


def interpolation_strips(model: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int,
                         y: torch.Tensor | None = None) -> torch.Tensor:
    """Original a, decoded points from E_q[z|a] to E_q[z|b], original b: (P, steps + 2, C, H, W).

    A conditional model interpolates within one class: `y` (P,) labels both ends.
    """
    y = model.labels(y)
    z = interpolation_latents(posterior_code(model.encode(x_a, y)), posterior_code(model.encode(x_b, y)),
                              steps)  # (P, S, D)
    y_flat = None if y is None else y.repeat_interleave(steps)  # (P*S,), matches z.flatten(0, 1)
    decoded = model.decode(z.flatten(0, 1), y_flat).mean.reshape(*z.shape[:2], *x_a.shape[1:])  # (P, S, C, H, W)
    return torch.cat([x_a.unsqueeze(1), decoded, x_b.unsqueeze(1)], dim=1)


def interpolation_grid(model: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int, y: torch.Tensor | None,
                       min_image_size: int = 28, pad_value: float = 1.0) -> torch.Tensor:
    """One row per pair: original a, `steps` decoded points, original b: (C, H', W')."""
    flat_only(model, "an interpolation between codes")
    with evaluating(model):
        strips = interpolation_strips(model, x_a, x_b, steps, y)  # (P, S + 2, C, H, W)
    big = plots.upscale(strips.flatten(0, 1), min_image_size).unflatten(0, strips.shape[:2])
    return plots.strip_grid(big, pad_value=pad_value)


# ---------------------------------------------------------------- latent space


@dataclass
class LatentCodes:
    """Posterior means of a set of examples, their labels, and the mean KL per latent dimension."""

    means: torch.Tensor  # (N, D) E_q[z|x], CPU
    labels: torch.Tensor  # (N,) int64, -1 when unlabelled
    kl_per_dim: torch.Tensor | None  # (D,) mean over the N examples of KL(q(z_d|x) || p(z_d)), nats; None where
    # KL(q || p) does not factorise over dimensions (a mixture or VampPrior, an IAF posterior)

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


def encode_codes(model: VAE, batches: Iterable, max_points: int, only_class: int | None = None) -> LatentCodes:
    """Posterior means, labels and KL per dimension of the first `max_points` examples (of `only_class`, if set)."""
    flat_only(model, "a picture of the latent codes (scatter, traversals, KL per dimension)")
    device = device_of(model)
    means, labels, kl_sum, count = [], [], None, 0
    with evaluating(model):
        p_z: Distribution = model.prior()
        factorised = model.rate_estimator == ANALYTIC
        for x, y in batches:
            if only_class is not None:
                keep = y == only_class
                x, y = x[keep], y[keep]
            x, y = x[: max_points - count].to(device), y[: max_points - count].to(device)
            if not len(x):
                continue
            q_z = model.encode(x, model.labels(y))
            if factorised:
                kl = rate_per_dim(q_z, p_z).sum(0)  # (D,)
                kl_sum = kl if kl_sum is None else kl_sum + kl
            means.append(posterior_code(q_z).cpu())
            labels.append(y.cpu())
            count += len(x)
            if count >= max_points:
                break
    if not count:
        which = "" if only_class is None else f" of class {only_class}"
        raise DataError(f"no examples{which} to encode")
    return LatentCodes(torch.cat(means), torch.cat(labels), (kl_sum / count).cpu() if factorised else None)


def dimension_scores(codes: LatentCodes) -> tuple[torch.Tensor, str]:
    """What orders the traversal rows: the mean KL per dimension, or, where it is undefined, the variance of the
    codes across examples (Burda et al. 2016's activity statistic)."""
    if codes.kl_per_dim is not None:
        return codes.kl_per_dim, "KL"
    return codes.means.var(0) if len(codes.means) > 1 else torch.zeros(codes.means.shape[1]), "Var"


def scatter_figure(codes: LatentCodes, class_names: tuple[str, ...] | None, title: str) -> Figure:
    """Latent scatter coloured by class: raw coordinates for latent_dim <= 2, PCA to 2-D otherwise."""
    means = codes.means.double()  # (N, D)
    if means.shape[1] > 2:
        if len(means) < MIN_PCA_POINTS:
            raise PictureSkipped(f"the latent scatter needs at least {MIN_PCA_POINTS} points for PCA to 2-D; "
                                 f"{len(means)} given")
        if not (means - means.mean(0)).abs().max() > 0:  # PCA of identical codes: 0/0 explained variance
            raise PictureSkipped(f"the latent scatter has nothing to show: all {len(means)} codes are identical")
    projection = plots.project_2d(codes.means.numpy())
    labels = codes.labels.numpy() if codes.labelled else None
    return plots.latent_scatter(projection, labels, class_names, title)


def manifold_figure(model: VAE, size: int, quantiles: tuple[float, float], label: int | None = None,
                    title: str = "Decoded 2-D latent manifold") -> Figure:
    """The decoder's images over a size x size grid of 2-D codes (latent_dim 2 only)."""
    flat_only(model, "the 2-D latent manifold")
    if model.latent_dim != 2:
        raise ConfigError(f"the latent manifold needs a model trained with model.latent_dim=2; this one has "
                          f"latent_dim={model.latent_dim}")
    device = device_of(model)
    z, values = plots.manifold_latents(size, tuple(quantiles))  # (G*G, 2), (G,)
    y = None if label is None else torch.full((len(z),), label, device=device)
    with evaluating(model):
        images = decode_mean(model, z.to(device), y)  # (G*G, C, H, W)
    return plots.manifold_figure(images, values, title=title)


def traversal_figure(model: VAE, base: torch.Tensor, kl: torch.Tensor, num_dims: int, steps: int, span: float,
                     label: int | None = None, title: str = "Latent traversals", score_name: str = "KL",
                     factor_labels: list[str] | None = None) -> Figure:
    """Rows vary the `num_dims` dimensions of largest score `kl` (D,) of `base` (D,) over [-span, span];
    `factor_labels` (one per latent dimension) name the ground-truth factor each captures most."""
    device = device_of(model)
    dims = torch.argsort(kl, descending=True, stable=True)[:num_dims].tolist()
    values = torch.linspace(-span, span, steps)
    z = plots.traversal_latents(base.cpu().float(), dims, values)  # (K, S, D)
    y = None if label is None else torch.full((z.shape[0] * z.shape[1],), label, device=device)
    with evaluating(model):
        images = decode_mean(model, z.flatten(0, 1).to(device), y)  # (K*S, C, H, W)
    return plots.traversal_figure(images.unflatten(0, z.shape[:2]), dims, kl, values, title=title,
                                  score_name=score_name, factor_labels=factor_labels)


def latent_pictures(model: VAE, codes: LatentCodes, class_names: tuple[str, ...] | None, split: str,
                    manifold_size: int, manifold_quantiles: tuple[float, float], traversal_dims: int,
                    traversal_steps: int, traversal_range: float) -> dict[str, Callable[[], Figure]]:
    """Every end-of-training figure as name -> a function drawing it (the manifold only for latent_dim 2), so
    the caller draws each on its own and one that fails or is skipped costs no other."""
    first = int(codes.labels[0])  # the class of the traversals' base image (-1: unlabelled)
    first_name = "" if first < 0 else f" (class {class_names[first] if class_names else first})"
    label = model.labels(first)  # a conditional decoder needs a class
    named = first_name if model.conditional else ""
    drawers = {"latent_scatter": lambda: scatter_figure(codes, class_names, f"Latent space of the {split} split")}
    if codes.kl_per_dim is not None:  # omitted where KL(q || p) does not factorise over dimensions
        drawers["kl_per_dim"] = lambda: plots.kl_bar_figure(
            codes.kl_per_dim, f"KL(q||p) per latent dimension, {split} split ({len(codes.means)} examples)")
    if model.latent_dim == 2 and manifold_size:
        drawers["latent_manifold"] = lambda: manifold_figure(model, manifold_size, manifold_quantiles, label,
                                                             title=f"Decoded 2-D latent manifold{named}")
    if traversal_dims:
        scores, score_name = dimension_scores(codes)
        drawers["latent_traversals"] = lambda: traversal_figure(
            model, codes.means[0], scores, traversal_dims, traversal_steps, traversal_range, label,
            title=f"Latent traversals around the first {split} image{first_name}", score_name=score_name)
    return drawers
