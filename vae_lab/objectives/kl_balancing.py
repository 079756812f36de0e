"""KL balancing of a hierarchy's latent groups during KL warm-up (NVAE, Vahdat & Kautz 2020, App. A)."""

from collections.abc import Sequence

import torch

EPS = 0.01  # nats added to each group's batch KL, as NVAE does: a collapsed group still gets a small coefficient


def kl_balancing(rate: torch.Tensor, group_sizes: torch.Tensor | Sequence[int], kl_weight: float,
                 eps: float = EPS) -> torch.Tensor:
    """Coefficients gamma (G,) for the rate's G groups (rate: (B, G) nats), constants (no gradient).

    While kl_weight < 1 (the warm-up), gamma_l is proportional to the group's size-normalised batch KL,
    (E_B |KL_l| + eps) / size_l, scaled so that sum_l gamma_l = G; afterwards every gamma_l is 1 (the true ELBO).
    A group whose KL per variable is small is penalised less, so no group collapses early. The loss then weights
    the rate as beta * kl_weight * sum_l gamma_l KL_l.
    """
    num_groups = rate.shape[-1]
    if kl_weight >= 1:
        return torch.ones(num_groups, dtype=rate.dtype, device=rate.device)
    sizes = torch.as_tensor(group_sizes, dtype=rate.dtype, device=rate.device)  # (G,) latent variables per group
    per_variable = (rate.detach().abs().mean(0) + eps) / sizes  # (G,)
    return num_groups * per_variable / per_variable.sum()
