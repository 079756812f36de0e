"""The prior p(z)."""

import torch
from torch.distributions import Independent, Normal


def standard_normal(latent_dim: int, device=None) -> Independent:
    """p(z) = N(0, I) over latent_dim dimensions, event shape (latent_dim,)."""
    zeros = torch.zeros(latent_dim, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)
