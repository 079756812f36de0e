"""KL(q(z|x) || p(z)) in closed form where it has one: two diagonal Gaussians, per latent dimension."""

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence

ANALYTIC, MONTE_CARLO = "analytic_kl", "monte_carlo"


def is_diagonal_gaussian(dist: Distribution) -> bool:
    """Whether `dist` is a product of univariate Normals over its event (Independent(Normal, 1))."""
    return isinstance(dist, Independent) and isinstance(dist.base_dist, Normal) and dist.reinterpreted_batch_ndims == 1


def rate_estimator(q_z: Distribution, p_z: Distribution) -> str:
    """'analytic_kl' when KL(q || p) has a closed form per latent dimension here, else 'monte_carlo'."""
    return ANALYTIC if is_diagonal_gaussian(q_z) and is_diagonal_gaussian(p_z) else MONTE_CARLO


def rate_per_dim(q_z: Distribution, p_z: Distribution) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per latent dimension, analytic: (B, D). Only for two diagonal Gaussians."""
    if rate_estimator(q_z, p_z) != ANALYTIC:
        raise ValueError("KL per latent dimension needs two diagonal Gaussians (a factorised rate); "
                         f"got q: {type(q_z).__name__}, p: {type(p_z).__name__}")
    return kl_divergence(q_z.base_dist, p_z.base_dist)
