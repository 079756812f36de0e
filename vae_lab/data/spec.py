"""What the model needs to know about a dataset, as values (never as its name)."""

from dataclasses import dataclass
from math import prod


@dataclass(frozen=True)
class DataSpec:
    """Shape, classes and pixel kind of a dataset; pixels reach the model as float32 in [0, 1]: k / (levels - 1) for
    discrete data (k / 255 for 8-bit), (k + u) / levels dequantised, or as stored for continuous data."""

    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int | None  # None when unlabelled
    class_names: tuple[str, ...] | None
    has_test: bool  # an official test split exists
    binary: bool = False  # every pixel of every split is 0 or levels - 1 (binarised, or binary as stored)
    factor_names: tuple[str, ...] | None = None  # ground-truth factors (sprites, dsprites); None: no factors
    num_train: int | None = None  # examples in the training split
    levels: int | None = 256  # grey levels of the stored pixels (RawData.levels); None: continuous float data

    @property
    def num_dims(self) -> int:
        """D = C * H * W, the number of data dimensions (for bits/dim)."""
        return prod(self.shape)
