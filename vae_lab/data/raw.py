"""What a dataset loader returns (RawData) and the shared `image_size` option, for every source."""

from dataclasses import dataclass

import torch

from vae_lab.errors import ConfigError, DataError


@dataclass
class RawData:
    """A decoded dataset: images (N, C, H, W), int64 labels (N,) or None, optional official test split.

    Images are stored on a discrete scale of `levels` values 0..levels-1 (uint8 when levels == 256, the usual
    8-bit case, binary data included as 0/255; int32 when 256 < levels <= 65536, e.g. 16-bit PNGs), or as float32
    in [0, 1] when the data are continuous (levels is None: float arrays that are not on an 8-bit grid).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor | None
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None
    factors: torch.Tensor | None = None  # int64 (N, F) ground-truth factor classes of train_x (factor datasets)
    factor_names: tuple[str, ...] | None = None
    levels: int | None = 256  # discrete values per pixel on the storage scale; None: continuous float32 in [0, 1]
    summary: str | None = None  # one line: what the loader understood (dtype, levels, channels, labels)
    mapped: bool = False  # train_x is a view of a memory-mapped file: served by row, never copied whole

    def __post_init__(self):
        for x, y in ((self.train_x, self.train_y), (self.test_x, self.test_y)):
            if x is None:
                continue
            # Loader bugs, not user errors: the loaders below are responsible for these invariants.
            assert x.dtype == storage_dtype(self.levels) and x.ndim == 4, (x.dtype, self.levels, tuple(x.shape))
            assert y is None or (y.dtype == torch.int64 and y.shape == (len(x),)), None if y is None else y.shape
        if len(self.train_x) == 0:
            raise DataError("the dataset has no training examples")
        if self.factors is not None:
            shape = (len(self.train_x), len(self.factor_names))
            assert self.factors.dtype == torch.int64 and self.factors.shape == shape, self.factors.shape


def image_size_option(image_size) -> tuple[int, int] | None:
    """None, an int or [H, W] -> (H, W)."""
    if image_size is None:
        return None
    size = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ConfigError(f"dataset.options.image_size={image_size!r}: expected a positive int or [H, W]")
    return size[0], size[1]


def storage_dtype(levels: int | None) -> torch.dtype:
    """The tensor dtype RawData stores images in, for a scale of `levels` values (None: continuous)."""
    if levels is None:
        return torch.float32
    assert 2 <= levels <= 65536, levels
    return torch.uint8 if levels <= 256 else torch.int32
