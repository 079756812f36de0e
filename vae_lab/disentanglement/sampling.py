"""Codes of sampled factor combinations: the ground-truth data and the representation the metrics share."""

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

# A representation: float images (N, C, H, W) in [0, 1] -> codes (N, D) numpy (the encoder's mean, as in
# disentanglement_lib, Locatello et al. 2019).
Representation = Callable[[torch.Tensor], np.ndarray]


class FactorSource(Protocol):
    """What the metrics sample from (vae_lab.data.factors.FactorGrid is one)."""

    sizes: tuple[int, ...]
    names: tuple[str, ...]

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray: ...

    def observations(self, codes: np.ndarray) -> torch.Tensor: ...


def encoder_mean(model, device: str | torch.device = "cpu", batch_size: int = 256) -> Representation:
    """The representation of a VAE: E[z|x] of its posterior, computed in batches without gradients."""

    @torch.no_grad()
    def represent(images: torch.Tensor) -> np.ndarray:
        model.eval()
        parts = [model.encode(images[i : i + batch_size].to(device)).mean.float().cpu()
                 for i in range(0, len(images), batch_size)]
        return torch.cat(parts).numpy()

    return represent


def sample_codes(source: FactorSource, represent: Representation, num: int, rng: np.random.Generator,
                 batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """`num` random factor combinations and their codes: (num, F) factors, (num, D) codes."""
    factors = source.sample_factors(num, rng)
    codes = np.concatenate([represent(source.observations(factors[i : i + batch_size]))
                            for i in range(0, num, batch_size)])
    return factors, codes
