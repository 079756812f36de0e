"""Ground-truth factors of a dataset that holds every combination of its factor classes exactly once."""

import numpy as np
import torch

from vae_lab.errors import DataError


class FactorGrid:
    """Images looked up by their factor classes: what the disentanglement metrics sample from.

    Args:
        images: uint8 (N, C, H, W).
        factors: int64 (N, F) class indices; the kept classes of factor f are any N_f distinct integers.
        names: the F factor names.
    """

    def __init__(self, images: torch.Tensor, factors: torch.Tensor, names: tuple[str, ...]):
        factors = np.asarray(factors.cpu(), dtype=np.int64)
        self.images = images
        self.names = tuple(names)
        self.classes = [np.unique(factors[:, f]) for f in range(factors.shape[1])]  # the kept class indices
        self.sizes = tuple(len(c) for c in self.classes)
        codes = np.stack([np.searchsorted(c, factors[:, f]) for f, c in enumerate(self.classes)], axis=1)
        flat = np.ravel_multi_index(codes.T, self.sizes)
        if len(flat) != int(np.prod(self.sizes)) or len(np.unique(flat)) != len(flat):
            raise DataError(f"the factors do not form a full grid {self.sizes} with each combination once "
                            f"({len(flat)} examples, {len(np.unique(flat))} distinct combinations)")
        self._row = np.empty(len(flat), np.int64)
        self._row[flat] = np.arange(len(flat))

    @property
    def num_factors(self) -> int:
        return len(self.sizes)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """(num, F) factor codes 0..N_f-1, each factor uniform and independent."""
        return np.stack([rng.integers(0, size, num) for size in self.sizes], axis=1)

    def observations(self, codes: np.ndarray) -> torch.Tensor:
        """float32 images in [0, 1] (num, C, H, W) of factor codes (num, F)."""
        rows = self._row[np.ravel_multi_index(np.asarray(codes).T, self.sizes)]
        return self.images[torch.from_numpy(rows)].float().div_(255)
