"""The evidence lower bound, with beta, free bits and a KL warm-up factor."""

from typing import NamedTuple

import torch
from torch.distributions import Distribution

from vae_lab.objectives.rate import ANALYTIC, rate, rate_estimator, rate_per_dim

__all__ = ["ObjectiveOutput", "elbo", "rate_per_dim"]


class ObjectiveOutput(NamedTuple):
    loss: torch.Tensor  # scalar to minimise; the only weighted number
    terms: dict[str, torch.Tensor]  # per-example values in nats, shape (B,)


def elbo(
    q_z: Distribution,
    p_z: Distribution,
    z: torch.Tensor,
    p_x: Distribution,
    x: torch.Tensor,
    beta: float = 1.0,
    free_bits: float = 0.0,
    kl_weight: float = 1.0,
    step: int = 0,
) -> ObjectiveOutput:
    """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), estimated with the K samples z: (K, B, D).

    The rate is the analytic KL for two diagonal Gaussians, else its Monte Carlo estimate at z (objectives/rate.py).
    The reported terms are the true (unweighted, unclamped) ones. The loss weights the rate by
    beta * kl_weight (beta-VAE, Higgins et al. 2017; warm-up, Bowman et al. 2016) and applies free bits
    per latent dimension on the batch-averaged KL (Kingma et al. 2016, Eq. 15): max(lambda, E_x[KL_j]).
    """
    distortion = -p_x.log_prob(x).mean(0)  # (B,): Monte Carlo over the K samples
    if free_bits > 0:
        if rate_estimator(q_z, p_z) != ANALYTIC:
            raise ValueError("free bits need a factorised rate (analytic KL per latent dimension)")
        kl_dims = rate_per_dim(q_z, p_z)  # (B, D)
        kl = kl_dims.sum(-1)  # (B,)
        penalised_rate = kl_dims.mean(0).clamp(min=free_bits).sum()
    else:
        kl = rate(q_z, p_z, z)  # (B,)
        penalised_rate = kl.mean()
    loss = distortion.mean() + beta * kl_weight * penalised_rate
    return ObjectiveOutput(loss, {"elbo": -(distortion + kl), "distortion": distortion, "rate": kl})
