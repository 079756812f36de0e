"""Controlled capacity increase (Burgess et al. 2018): gamma |KL - C| with C raised linearly to C_max."""

import torch

from vae_lab.model.interface import Terms
from vae_lab.objectives.elbo import ObjectiveOutput


def capacity_at(step: int, capacity_max: float, capacity_steps: int) -> float:
    """C(step) = C_max min(1, step / capacity_steps), in nats (Burgess et al. 2018, Sec. 5)."""
    if capacity_steps <= 0:
        return float(capacity_max)
    return float(capacity_max) * min(1.0, step / capacity_steps)


def capacity(
    t: Terms,
    gamma: float = 1000.0,
    capacity_max: float = 25.0,
    capacity_steps: int = 100000,
    kl_weight: float = 1.0,
    step: int = 0,
) -> ObjectiveOutput:
    """-E_q[log p(x|z)] + gamma kl_weight |E_x KL(q(z|x) || p(z)) - C(step)| (Burgess et al. 2018, Eq. 8)."""
    distortion = t.distortion  # (B,)
    rate = t.rate.sum(-1)  # (B,) analytic
    target = capacity_at(step, capacity_max, capacity_steps)
    loss = distortion.mean() + gamma * kl_weight * (rate.mean() - target).abs()
    terms = {"elbo": -(distortion + rate), "distortion": distortion, "rate": rate,
             "capacity": torch.full_like(rate, target)}
    return ObjectiveOutput(loss, terms)
