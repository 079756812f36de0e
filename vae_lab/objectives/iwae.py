"""The importance-weighted bound (Burda et al. 2016)."""

import math

import torch
from torch.distributions import Distribution

from vae_lab.objectives.elbo import ObjectiveOutput, rate_per_dim


def log_weights(q_z: Distribution, p_z: Distribution, z: torch.Tensor, log_px_given_z: torch.Tensor):
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x): (K, B)."""
    return log_px_given_z + p_z.log_prob(z) - q_z.log_prob(z)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_K = log (1/K) sum_k w_k, computed stably: (K, B) -> (B,). Eq. 8, Burda et al. 2016."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def iwae(
    q_z: Distribution, p_z: Distribution, z: torch.Tensor, p_x: Distribution, x: torch.Tensor, kl_weight: float = 1.0,
    step: int = 0,
) -> ObjectiveOutput:
    """Loss = -L_K averaged over the batch; gradients flow through every normalised weight (no detaching).

    `kl_weight` and `step` are accepted (and ignored) so the training loop treats all objectives alike; the IWAE bound
    has no separate KL term to warm up.
    """
    log_px_given_z = p_x.log_prob(x)  # (K, B)
    bound = iwae_bound(log_weights(q_z, p_z, z, log_px_given_z))  # (B,)
    distortion = -log_px_given_z.mean(0)
    rate = rate_per_dim(q_z, p_z).sum(-1)
    terms = {"elbo": -(distortion + rate), "distortion": distortion, "rate": rate, "iwae": bound}
    return ObjectiveOutput(-bound.mean(), terms)
