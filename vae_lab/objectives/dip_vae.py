"""DIP-VAE (Kumar et al. 2018): the ELBO plus a penalty matching the covariance of the aggregate posterior to I."""

import torch
from torch.distributions import Distribution

from vae_lab.model.interface import Terms
from vae_lab.objectives.elbo import ObjectiveOutput

DIP_TYPES = ("i", "ii")


def aggregate_covariance(q_z: Distribution, dip_type: str) -> torch.Tensor:
    """(D, D) covariance over the minibatch: Cov[mu(x)] (DIP-VAE-I, Eq. 5) or + E[diag sigma^2(x)] (II, Eq. 6)."""
    loc = q_z.base_dist.loc.float()  # (B, D)
    centred = loc - loc.mean(0, keepdim=True)
    cov = centred.T @ centred / loc.shape[0]  # the biased (1/B) estimate, as an expectation over p(x)
    if dip_type == "ii":
        cov = cov + torch.diag(q_z.base_dist.scale.float().pow(2).mean(0))
    return cov


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    """lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2 (Kumar et al. 2018, Eq. 5/6)."""
    diag = torch.diagonal(cov)
    off = cov - torch.diag(diag)
    return lambda_od * off.pow(2).sum() + lambda_d * (diag - 1).pow(2).sum()


def dip_vae(
    t: Terms,
    dip_type: str = "i",
    lambda_od: float = 10.0,
    lambda_d: float = 100.0,
    beta: float = 1.0,
    kl_weight: float = 1.0,
    step: int = 0,
) -> ObjectiveOutput:
    """-ELBO (KL weighted by beta x warm-up) + the DIP penalty on the minibatch's aggregate posterior covariance."""
    distortion = t.distortion  # (B,)
    rate = t.rate.sum(-1)  # (B,) analytic
    penalty = dip_penalty(aggregate_covariance(t.q_z, dip_type), lambda_od, lambda_d)
    loss = distortion.mean() + beta * kl_weight * rate.mean() + penalty
    terms = {"elbo": -(distortion + rate), "distortion": distortion, "rate": rate,
             "dip_penalty": penalty.detach().expand_as(rate)}  # one number per batch, repeated per example
    return ObjectiveOutput(loss, terms)
