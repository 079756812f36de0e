"""Pictures of a model with latent groups (vae_lab.model families other than the VAE): the rate per group, and
reconstructions that keep the top k groups and sample the rest (what each level encodes). No Lightning."""

from collections.abc import Callable, Iterable

import torch
from matplotlib.figure import Figure

from vae_lab import plots
from vae_lab.errors import DataError
from vae_lab.model import ModelFamily
from vae_lab.pictures import PictureSkipped, device_of, evaluating, first_examples

def group_rates(model: ModelFamily, batches: Iterable, max_points: int, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """(group names, mean rate per latent group (G,) in nats) over the first `max_points` examples: one seeded
    sample of z per example (analytic KLs per group where the family has them)."""
    device, total, count = device_of(model), None, 0
    with evaluating(model):
        for x, y in batches:
            x, y = x[: max_points - count].to(device), y[: max_points - count].to(device)
            if not len(x):
                continue
            rate = model.terms(x, model.labels(y), 1, seed=seed).rate.double().sum(0)  # (G,)
            total = rate if total is None else total + rate
            count += len(x)
            if count >= max_points:
                break
    if not count:
        raise DataError("no examples to encode")
    return [g.name for g in model.latent_groups()], (total / count).cpu()


def group_rate_figure(names: list[str], rates: torch.Tensor, title: str) -> Figure:
    """Bars of the mean rate (KL) per latent group, top group first."""
    return plots.kl_bar_figure(rates, title, labels=names)


def keep_groups_grid(model: ModelFamily, x: torch.Tensor, y: torch.Tensor | None, seed: int = 0,
                     temperature: float = 1.0, min_image_size: int = 28, pad_value: float = 1.0) -> torch.Tensor:
    """Row 0 the originals; row k (1..G) keeps the top k latent groups from the posterior and samples the rest from
    the prior: what each level of a hierarchy encodes. Families without `reconstruct_keep`: PictureSkipped."""
    if not hasattr(model, "reconstruct_keep"):
        raise PictureSkipped(f"reconstructions keeping the top groups need latent groups; a {type(model).__name__} "
                             "has one: skipped")
    device, groups = device_of(model), len(model.latent_groups())
    rows = [x]
    with evaluating(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for keep in range(1, groups + 1):
            rows.append(model.reconstruct_keep(x, model.labels(y), keep=keep, temperature=temperature))
    images = torch.stack(rows)  # (G + 1, N, C, H, W)
    big = plots.upscale(images.flatten(0, 1), min_image_size)
    return plots.image_grid(big, x.shape[0], pad_value=pad_value)


def group_pictures(model: ModelFamily, batches_fn: Callable[[], Iterable], split: str, max_points: int,
                   num_images: int = 8) -> dict[str, Callable[[], Figure | torch.Tensor]]:
    """The end-of-training pictures of a model with latent groups: rate per group, and reconstructions keeping the
    top k groups (k = 1..G) of the first `num_images` examples."""
    def rates() -> Figure:
        names, values = group_rates(model, batches_fn(), max_points)
        return group_rate_figure(names, values, f"KL(q||p) per latent group, {split} split")

    def keep() -> torch.Tensor:
        x, y = first_examples(batches_fn(), num_images)
        return keep_groups_grid(model, x.to(device_of(model)), y.to(device_of(model)))

    return {"kl_per_group": rates, "keep_groups": keep}
