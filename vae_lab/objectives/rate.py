"""The rate KL(q(z|x) || p(z)): analytic when both are diagonal Gaussians, else a Monte Carlo estimate."""

import torch
from torch.distributions import Distribution

# KL per dimension, the estimator's name and the Gaussian test live in vae_lab.distributions.kl: import them there
from vae_lab.distributions.kl import ANALYTIC, rate_estimator, rate_per_dim


def rate(q_z: Distribution, p_z: Distribution, z: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) per example (B,): analytic when possible, else (1/K) sum_k log q(z_k|x) - log p(z_k)
    at the K samples z (K, B, D) the distortion used (an unbiased estimate; Kingma & Welling 2014, Eq. 6)."""
    if rate_estimator(q_z, p_z) == ANALYTIC:
        return rate_per_dim(q_z, p_z).sum(-1)
    return (q_z.log_prob(z) - p_z.log_prob(z)).mean(0)
