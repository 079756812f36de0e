"""The importance-weighted bound (Burda et al. 2016)."""

import math

import torch
from torch.distributions import Distribution

from vae_lab.model.interface import ANALYTIC, Terms
from vae_lab.objectives.elbo import ObjectiveOutput


def log_weights(q_z: Distribution, p_z: Distribution, z: torch.Tensor, log_px_given_z: torch.Tensor):
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x): (K, B), for any prior and posterior with log_prob."""
    return log_px_given_z + p_z.log_prob(z) - q_z.log_prob(z)


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """L_K = log (1/K) sum_k w_k, computed stably: (K, B) -> (B,). Eq. 8, Burda et al. 2016."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def iwae(t: Terms, kl_weight: float = 1.0, step: int = 0) -> ObjectiveOutput:
    """Loss = -L_K averaged over the batch; gradients flow through every normalised weight (no detaching).

    `kl_weight` and `step` are accepted (and ignored) so the training loop treats all objectives alike; the IWAE bound
    has no separate KL term to warm up. The terms' log q and log p are summed over every latent group.
    """
    log_w = t.log_weights()  # (K, B)
    bound = iwae_bound(log_w)  # (B,)
    distortion = t.distortion
    # the rate: analytic, or its Monte Carlo estimate at the same K samples, log q - log p = log p(x|z) - log w
    kl = t.rate.sum(-1) if t.rate_estimator == ANALYTIC else (t.log_px_given_z - log_w).mean(0)
    terms = {"elbo": -(distortion + kl), "distortion": distortion, "rate": kl, "iwae": bound}
    return ObjectiveOutput(-bound.mean(), terms)
