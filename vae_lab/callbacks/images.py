"""Image grids during training: reconstructions, prior samples and interpolations, every N epochs.

Rank zero only, on the epochs it fires, on small inputs fixed at the start of training (the same validation images
and the same prior noise every time, so epochs are comparable). Each grid goes to TensorBoard (when a TensorBoard
logger is attached) and to `<run dir>/images/<name>_epoch<NNN>.png`. vae_lab.pictures draws; this module says when
and where. A picture that fails is a one-line warning: it never stops training or costs the run its results.
"""

import sys
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure

from vae_lab import pictures, plots
from vae_lab.errors import ConfigError
from vae_lab.model import ModelFamily


def publish(trainer: "L.Trainer", tag: str, picture: torch.Tensor | Figure, path: Path) -> Path:
    """Save a grid (C, H, W) or a figure as a PNG and add it to every TensorBoard logger at the current step."""
    pixels = plots.to_array(picture)  # (H, W, C) uint8, rendered once for both
    plots.save_png(pixels, path)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, pixels, global_step=trainer.global_step, dataformats="HWC")
    return path


def guarded(name: str, draw: Callable[[], object]) -> object | None:
    """draw(), or None with one line on stderr: a note when the data cannot support the picture (PictureSkipped),
    a warning for any other failure. Pictures are extras: they never cost a run its metrics or artifact.
    KeyboardInterrupt and SystemExit (signals) are not caught."""
    try:
        return draw()
    except pictures.PictureSkipped as skipped:
        print(f"note: {name} not drawn: {skipped}", file=sys.stderr, flush=True)
    except Exception as err:  # noqa: BLE001 - any failure of a picture, by design
        first = (str(err).strip().splitlines() or [""])[0]
        print(f"warning: picture {name} not drawn ({type(err).__name__}: {first}); training, metrics and the "
              f"artifact are unaffected", file=sys.stderr, flush=True)
    return None


def check_int(key: str, value, lo: int) -> None:
    """ConfigError unless `value` is an int >= lo (errors surface at fit start, not inside Hydra's instantiate)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{key}={value!r} is invalid: must be an integer >= {lo}")


def images_dir(trainer: "L.Trainer", dirpath: str | None) -> Path:
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "images"


def stopping(trainer: "L.Trainer") -> bool:
    """A signal asked the run to stop (SIGTERM, or Ctrl-C through the Resumable callback): draw nothing more, so the
    final checkpoint is saved and the run ends promptly."""
    return bool(getattr(trainer, "received_sigterm", False))


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
        self._notes: set[str] = set()
        self._last_step: int | None = None  # global step of the latest drawing
        self.written: list[Path] = []

    def setup(self, trainer: "L.Trainer", pl_module: "L.LightningModule", stage: str) -> None:
        for key, lo in (("every_n_epochs", 0), ("num_images", 0), ("num_samples", 0), ("num_pairs", 0),
                        ("interpolation_steps", 2), ("nrow", 1), ("min_image_size", 1), ("seed", 0)):
            check_int(f"{self.config_key}.{key}", getattr(self, key), lo)
        if not isinstance(self.pad_value, (int, float)) or not 0 <= self.pad_value <= 1:
            raise ConfigError(f"{self.config_key}.pad_value={self.pad_value!r} is invalid: must be a number in [0, 1]")

    def _fixed_inputs(self, trainer: "L.Trainer", model: ModelFamily) -> dict[str, torch.Tensor]:
        """Validation images and pairs, chosen once (CPU) and reused at every drawing (the noise is seeded)."""
        if self._fixed is None:
            source = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else trainer.val_dataloaders
            pool = max(self.num_images, pictures.PAIR_POOL if self.num_pairs else 0)
            x, y = pictures.first_examples(source, pool) if pool else (torch.empty(0), torch.empty(0))
            fixed = {"x": x[: self.num_images], "y": y[: self.num_images]}
            if self.num_pairs:
                a, b = pictures.pick_pairs(y, self.num_pairs, same_class=model.conditional)
                fixed.update(x_a=x[a], x_b=x[b], y_pair=y[a])
            self._fixed = fixed
        return self._fixed

    def drawers(self, trainer: "L.Trainer", model: ModelFamily) -> dict[str, Callable[[], torch.Tensor]]:
        """name -> a function drawing that grid (C, H, W) of the model as it is when called."""
        fixed = self._fixed_inputs(trainer, model)
        on = {k: v.to(pictures.device_of(model)) for k, v in fixed.items()}
        size, pad = self.min_image_size, self.pad_value
        out = {}
        if self.num_images:
            out["reconstructions"] = lambda: pictures.reconstruction_grid(model, on["x"], on["y"], self.nrow, size,
                                                                          pad)
        if self.num_samples:
            out["samples"] = lambda: self._noted(pictures.sample_grid(model, self.num_samples, self.seed, self.nrow,
                                                                      min_image_size=size, pad_value=pad))
        if self.num_pairs and model.flat_code:  # an interpolation between two codes of one flat latent vector
            out["interpolations"] = lambda: pictures.interpolation_grid(
                model, on["x_a"], on["x_b"], self.interpolation_steps, on["y_pair"], size, pad)
        return out

    def _noted(self, drawn: tuple[torch.Tensor, str | None]) -> torch.Tensor:
        """The grid; its note printed once per run (not at every drawing)."""
        grid, note = drawn
        if note and note not in self._notes:
            self._notes.add(note)
            print(f"note: {note}", file=sys.stderr, flush=True)
        return grid

    def _draw(self, trainer: "L.Trainer", pl_module: "L.LightningModule", label: str) -> None:
        if not should_draw(trainer) or stopping(trainer):
            return
        folder = images_dir(trainer, self.dirpath)
        model = pl_module.model
        for name, draw in (guarded("image grids", lambda: self.drawers(trainer, model)) or {}).items():
            if stopping(trainer):
                break
            path = folder / f"{name}_{label}.png"
            if guarded(name, lambda: publish(trainer, f"images/{name}", draw(), path)) is not None:
                self.written.append(path)
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
