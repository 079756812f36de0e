"""Latent-space plots at the end of training: scatter by class, 2-D manifold, traversals by KL, KL per dimension.

Rank zero only, once. PNGs go to `<run dir>/images/`, figures to TensorBoard under `latent/*`. vae_lab.pictures
draws; this callback says when and where. Each figure is drawn on its own: one the data cannot support is a note,
one that fails is a warning, and neither costs the run its metrics.json or artifact (they are written after fit).
"""

import sys

import lightning as L

from vae_lab import group_pictures, pictures
from vae_lab.callbacks.images import check_int, guarded, images_dir, publish, should_draw, stopping
from vae_lab.errors import ConfigError, choices_error

SPLIT_LOADERS = {"val": "val_dataloader", "test": "test_dataloader"}  # split -> the datamodule method serving it
TAGS = {"latent_scatter": "latent/scatter", "latent_manifold": "latent/manifold",
        "latent_traversals": "latent/traversals", "kl_per_dim": "latent/kl_per_dim_nats",
        "kl_per_group": "latent/kl_per_group_nats", "keep_groups": "latent/keep_top_groups"}


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
        if self.split not in SPLIT_LOADERS:
            raise choices_error(f"{key}.split", self.split, SPLIT_LOADERS)
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
        if not should_draw(trainer) or trainer.datamodule is None or stopping(trainer):
            return
        datamodule, model = trainer.datamodule, pl_module.model
        spec = getattr(datamodule, "spec", None)
        batches = getattr(datamodule, SPLIT_LOADERS[self.split])
        if not model.flat_code:  # latent groups: their rates and what each level encodes (no flat-code pictures)
            print(f"note: latent scatter, manifold and traversals need one flat code; a {type(model).__name__} "
                  "gets its per-group KL and top-k-group reconstructions instead", file=sys.stderr, flush=True)
            drawers = group_pictures.group_pictures(model, batches, self.split, self.max_points)
        else:
            drawers = guarded("latent plots", lambda: pictures.latent_pictures(
                model, pictures.encode_codes(model, batches(), self.max_points),
                getattr(spec, "class_names", None), self.split, self.manifold_size, self.manifold_quantiles,
                self.traversal_dims, self.traversal_steps, self.traversal_range))
        folder = images_dir(trainer, self.dirpath)
        for name, draw in (drawers or {}).items():
            if stopping(trainer):  # a signal while drawing: the rest are skipped
                break
            path = folder / f"{name}.png"
            if guarded(name, lambda: publish(trainer, TAGS[name], draw(), path)) is not None:
                self.written.append(path)
