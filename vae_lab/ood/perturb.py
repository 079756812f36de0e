"""Training data for the likelihood ratio's background model: inputs with a share of their pixels replaced by noise.

Ren et al. 2019 (Sec. 3.1) train the background model on inputs where each pixel is, with probability `rate`
(their mutation rate mu, 0.1-0.3), replaced by a value drawn uniformly from the data's levels: the local
statistics (population level) survive, the semantics do not. Here the perturbation is drawn once (a fixed copy
of the training split, written as an .npz that dataset=array_file reads), not afresh every epoch as in the paper.
"""

import torch


def perturb(x: torch.Tensor, rate: float, levels: int, seed: int) -> torch.Tensor:
    """x (N, C, H, W) of stored levels 0..levels-1, each pixel replaced by a uniform level with probability `rate`."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate={rate} must lie in [0, 1]")
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(x.shape, generator=g) < rate
    noise = torch.randint(0, levels, x.shape, generator=g, dtype=torch.int64).to(x.dtype)
    return torch.where(mask, noise, x)
