"""Image grids during training: reconstructions, prior samples and interpolations, every N epochs.

Rank zero only, on the epochs it fires, in eval mode under no_grad, on small inputs fixed at the start of training
(the same validation images and the same prior noise every time, so epochs are comparable). Each grid goes to
TensorBoard (when a TensorBoard logger is attached) and to `<run dir>/images/<name>_epoch<NNN>.png`.
The rendering functions are plain functions of a VAE so scripts/sample.py draws the same pictures.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import nn

from vae_lab import plots
from vae_lab.distributions import posterior_code
from vae_lab.errors import ConfigError, DataError
from vae_lab.model import VAE

PAIR_POOL = 1024  # validation examples searched for interpolation pairs (only the chosen ones are kept)


# ---------------------------------------------------------------- rendering from a model


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


def condition(model: VAE, y: torch.Tensor | None) -> torch.Tensor | None:
    """Labels for a conditional model, None for an unconditional one (which must not see them)."""
    return y if model.conditional else None


def decode_mean(model: VAE, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of p(x|z) for codes (N, D): images (N, C, H, W) in [0, 1]."""
    return model.decode(z, condition(model, y)).mean


def reconstructions(model: VAE, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of p(x|z) at the posterior code (E_q[z|x]; an IAF's flow of the base mean): (N, C, H, W)."""
    return model.reconstruct(x, condition(model, y))


def fixed_noise(num: int, latent_dim: int, seed: int) -> torch.Tensor:
    """z ~ N(0, I) (num, latent_dim) from its own generator: the same codes every epoch, global RNG untouched."""
    return torch.randn(num, latent_dim, generator=torch.Generator().manual_seed(seed))


def prior_samples(model: VAE, num: int, seed: int) -> torch.Tensor:
    """z ~ p(z) of the model's prior as it is now (num, latent_dim), on the model's device: the same random
    stream for a seed, so a fixed prior gives the same codes every epoch; global RNG state left as it was."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return model.prior().sample((num,))


def interpolation_latents(z_a: torch.Tensor, z_b: torch.Tensor, steps: int) -> torch.Tensor:
    """Straight lines z_a -> z_b (P, D) at `steps` evenly spaced points, ends included: (P, steps, D)."""
    t = torch.linspace(0, 1, steps, device=z_a.device).reshape(1, -1, 1)  # (1, S, 1)
    return (1 - t) * z_a.unsqueeze(1) + t * z_b.unsqueeze(1)


def interpolation_strips(model: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int,
                         y: torch.Tensor | None = None) -> torch.Tensor:
    """Original a, decoded points from E_q[z|a] to E_q[z|b], original b: (P, steps + 2, C, H, W).

    A conditional model interpolates within one class: `y` (P,) labels both ends.
    """
    y = condition(model, y)
    z = interpolation_latents(posterior_code(model.encode(x_a, y)), posterior_code(model.encode(x_b, y)),
                              steps)  # (P, S, D)
    y_flat = None if y is None else y.repeat_interleave(steps)  # (P*S,), matches z.flatten(0, 1)
    decoded = model.decode(z.flatten(0, 1), y_flat).mean.reshape(*z.shape[:2], *x_a.shape[1:])  # (P, S, C, H, W)
    return torch.cat([x_a.unsqueeze(1), decoded, x_b.unsqueeze(1)], dim=1)


def pick_pairs(labels: torch.Tensor, num_pairs: int, same_class: bool = False,
               class_pairs: list[tuple[int, int]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (start, end) of `num_pairs` pairs of distinct examples.

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


def publish(trainer: "L.Trainer", tag: str, picture: torch.Tensor | Figure, path: Path) -> Path:
    """Save a grid (C, H, W) or a figure as a PNG and add it to every TensorBoard logger at the current step."""
    pixels = plots.to_array(picture)  # (H, W, C) uint8, rendered once for both
    plots.save_png(pixels, path)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, pixels, global_step=trainer.global_step, dataformats="HWC")
    return path


def check_int(key: str, value, lo: int) -> None:
    """ConfigError unless `value` is an int >= lo (errors surface at fit start, not inside Hydra's instantiate)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{key}={value!r} is invalid: must be an integer >= {lo}")


def images_dir(trainer: "L.Trainer", dirpath: str | None) -> Path:
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "images"


def should_draw(trainer: "L.Trainer") -> bool:
    """Rank zero only; not under fast_dev_run (a smoke test of the loop: Lightning skips checkpoints there too)."""
    return trainer.is_global_zero and not trainer.fast_dev_run


# ---------------------------------------------------------------- the callback


class ImageGrids(L.Callback):
    """Reconstruction, prior-sample and interpolation grids every `every_n_epochs` epochs and after the last one.

    Args:
        dirpath: where PNGs go (default `<default_root_dir>/images`).
        every_n_epochs: draw after epochs e with (e + 1) % N == 0; 0: only after the last epoch.
        num_images: fixed validation images in the reconstruction grid (0: no reconstruction grid).
        num_samples: prior samples from fixed noise (0: none); a conditional model draws one column per class.
        num_pairs: interpolation strips between fixed validation pairs (0: none).
        interpolation_steps: decoded points per strip, both ends included (the originals frame the strip).
        nrow: images per row of the reconstruction and sample grids.
        min_image_size: smaller images are upscaled (nearest) to at least this many pixels, so 8x8 digits show.
        pad_value: grey level of the padding between images, in [0, 1].
        seed: seeds the fixed prior noise (its own generator: training's random streams are untouched).
        log_before_training: also draw the untrained model (`*_init.png`), a baseline to compare epochs with.
    """

    config_key = "callbacks.image_grids"

    def __init__(self, dirpath: str | None = None, every_n_epochs: int = 5, num_images: int = 32,
                 num_samples: int = 64, num_pairs: int = 4, interpolation_steps: int = 8, nrow: int = 8,
                 min_image_size: int = 28, pad_value: float = 1.0, seed: int = 0, log_before_training: bool = False):
        super().__init__()
        self.dirpath = dirpath
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.num_samples = num_samples
        self.num_pairs = num_pairs
        self.interpolation_steps = interpolation_steps
        self.nrow = nrow
        self.min_image_size = min_image_size
        self.pad_value = pad_value
        self.seed = seed
        self.log_before_training = log_before_training
        self._fixed: dict[str, torch.Tensor] | None = None
        self._last_step: int | None = None  # global step of the latest drawing
        self.written: list[Path] = []

    def setup(self, trainer: "L.Trainer", pl_module: "L.LightningModule", stage: str) -> None:
        for key, lo in (("every_n_epochs", 0), ("num_images", 0), ("num_samples", 0), ("num_pairs", 0),
                        ("interpolation_steps", 2), ("nrow", 1), ("min_image_size", 1), ("seed", 0)):
            check_int(f"{self.config_key}.{key}", getattr(self, key), lo)
        if not isinstance(self.pad_value, (int, float)) or not 0 <= self.pad_value <= 1:
            raise ConfigError(f"{self.config_key}.pad_value={self.pad_value!r} is invalid: must be a number in [0, 1]")

    def _fixed_inputs(self, trainer: "L.Trainer", model: VAE) -> dict[str, torch.Tensor]:
        """Validation images, pairs and prior noise, chosen once (CPU) and reused at every drawing."""
        if self._fixed is None:
            source = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else trainer.val_dataloaders
            x, y = first_examples(source, max(self.num_images, PAIR_POOL if self.num_pairs else 0))
            fixed = {"x": x[: self.num_images], "y": y[: self.num_images]}
            if self.num_pairs:
                a, b = pick_pairs(y, self.num_pairs, same_class=model.conditional)
                fixed.update(x_a=x[a], x_b=x[b], y_pair=y[a])
            fixed["y_sample"] = torch.arange(self.num_samples) % max(model.num_classes, 1)
            self._fixed = fixed
        return self._fixed

    def grids(self, trainer: "L.Trainer", model: VAE) -> dict[str, torch.Tensor]:
        """The grids of the model as it is now: name -> (C, H, W) in [0, 1]."""
        fixed = self._fixed_inputs(trainer, model)
        device = next(model.parameters()).device
        on = {k: v.to(device) for k, v in fixed.items()}
        big = lambda images: plots.upscale(images, self.min_image_size)  # noqa: E731
        out = {}
        with evaluating(model):
            if self.num_images:
                x_hat = reconstructions(model, on["x"], on["y"])
                out["reconstructions"] = plots.reconstruction_grid(big(on["x"]), big(x_hat), self.nrow,
                                                                   pad_value=self.pad_value)
            if self.num_samples:
                # drawn at each drawing: a learned prior (mog, vamp) moves during training
                samples = decode_mean(model, prior_samples(model, self.num_samples, self.seed), on["y_sample"])
                nrow = model.num_classes if model.conditional else self.nrow  # conditional: a column per class
                out["samples"] = plots.image_grid(big(samples), nrow, pad_value=self.pad_value)
            if self.num_pairs:
                strips = interpolation_strips(model, on["x_a"], on["x_b"], self.interpolation_steps, on["y_pair"])
                out["interpolations"] = plots.strip_grid(big(strips.flatten(0, 1)).unflatten(0, strips.shape[:2]),
                                                         pad_value=self.pad_value)
        return out

    def _draw(self, trainer: "L.Trainer", pl_module: "L.LightningModule", label: str) -> None:
        if not should_draw(trainer):
            return
        folder = images_dir(trainer, self.dirpath)
        for name, grid in self.grids(trainer, pl_module.model).items():
            self.written.append(publish(trainer, f"images/{name}", grid, folder / f"{name}_{label}.png"))
        self._last_step = trainer.global_step

    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if self.log_before_training:
            self._draw(trainer, pl_module, "init")
            self._last_step = None  # the end-of-training drawing still happens

    def on_train_epoch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        epoch = trainer.current_epoch
        if self.every_n_epochs and (epoch + 1) % self.every_n_epochs == 0:
            self._draw(trainer, pl_module, f"epoch{epoch:03d}")

    def on_train_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        # The last epoch, unless it was just drawn (current_epoch has advanced past it by now).
        if self._last_step != trainer.global_step:
            self._draw(trainer, pl_module, f"epoch{max(trainer.current_epoch - 1, 0):03d}")
