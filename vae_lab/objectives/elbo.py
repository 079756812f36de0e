"""The evidence lower bound, with beta, free bits and a KL warm-up factor."""

from typing import NamedTuple

import torch

from vae_lab.model.interface import Terms
from vae_lab.objectives.kl_balancing import kl_balancing as balance

__all__ = ["ObjectiveOutput", "elbo"]


class ObjectiveOutput(NamedTuple):
    loss: torch.Tensor  # scalar to minimise; the only weighted number
    terms: dict[str, torch.Tensor]  # per-example values in nats, shape (B,)


def elbo(t: Terms, beta: float = 1.0, free_bits: float = 0.0, kl_balancing: bool = False, kl_weight: float = 1.0,
         step: int = 0) -> ObjectiveOutput:
    """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), from a model's terms (K samples of z per example).

    The rate is the sum of the per-group rates (each analytic, or a Monte Carlo estimate at z). The reported terms
    are the true (unweighted, unclamped) ones. The loss weights the rate by beta * kl_weight (beta-VAE, Higgins et al.
    2017; warm-up, Bowman et al. 2016) and applies free bits per unit of the analytic KL (a latent dimension of a
    flat code, a group of a hierarchy) on the batch-averaged KL (Kingma et al. 2016, Eq. 15): max(lambda, E_x[KL_j]).
    kl_balancing: during the KL warm-up each group's rate is weighted by NVAE's coefficient (objectives/kl_balancing.py,
    Vahdat & Kautz 2020, App. A): a model with one group is unchanged.
    """
    distortion = t.distortion  # (B,): Monte Carlo over the K samples
    kl = t.rate.sum(-1)  # (B,)
    if free_bits > 0:
        if t.kl_units is None:
            raise ValueError("free bits need a factorised rate (analytic KL per latent dimension or group)")
        units = t.kl_units.mean(0).clamp(min=free_bits)  # (U,)
    else:
        units = None
    if kl_balancing and t.rate.shape[-1] > 1:
        gamma = balance(t.rate, t.group_sizes or [1] * t.rate.shape[-1], kl_weight)  # (G,), no gradient
        per_group = t.rate.mean(0) if units is None or units.shape[0] != gamma.shape[0] else units  # (G,)
        penalised_rate = (gamma * per_group).sum()
    elif units is not None:
        penalised_rate = units.sum()
    else:
        penalised_rate = kl.mean()
    loss = distortion.mean() + beta * kl_weight * penalised_rate
    return ObjectiveOutput(loss, {"elbo": -(distortion + kl), "distortion": distortion, "rate": kl})
