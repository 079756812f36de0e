"""FactorVAE (Kim & Mnih 2018): the ELBO plus gamma x a discriminator's estimate of the total correlation."""

import torch
import torch.nn.functional as F

from vae_lab.model.interface import Terms
from vae_lab.objectives.elbo import ObjectiveOutput


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each latent dimension shuffled independently across the batch: a sample of prod_d q(z_d) (Alg. 1). (B, D)."""
    b, d = z.shape
    order = torch.argsort(torch.rand((b, d), generator=generator, device=z.device), dim=0)
    return torch.gather(z, 0, order)


def discriminator_loss(logits_q: torch.Tensor, logits_permuted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of D telling q(z) samples (class 0) from permuted ones (class 1), and its accuracy.

    logits: (B, 2). Kim & Mnih 2018, Alg. 1: minimise -(1/2B) sum [log D(z) + log(1 - D(z_perm))].
    """
    zeros = torch.zeros(len(logits_q), dtype=torch.long, device=logits_q.device)
    ones = torch.ones(len(logits_permuted), dtype=torch.long, device=logits_permuted.device)
    loss = 0.5 * (F.cross_entropy(logits_q.float(), zeros) + F.cross_entropy(logits_permuted.float(), ones))
    correct = torch.cat([logits_q.argmax(-1) == 0, logits_permuted.argmax(-1) == 1])
    return loss, correct.float().mean()


def factor_vae(
    t: Terms,
    density_ratio_logit: torch.Tensor | None = None,
    gamma: float = 35.0,
    beta: float = 1.0,
    kl_weight: float = 1.0,
    step: int = 0,
) -> ObjectiveOutput:
    """-ELBO + gamma TC, TC(z) ~ log D(z) / (1 - D(z)) = logit_q - logit_perm (Kim & Mnih 2018, Eq. 3).

    density_ratio_logit: (B,) the discriminator's log-ratio at the examples' z (computed by the training loop,
    which owns the discriminator and its optimizer).
    """
    if density_ratio_logit is None:
        raise ValueError("factor_vae needs the discriminator's density_ratio_logit")
    distortion = t.distortion  # (B,)
    rate = t.rate.sum(-1)  # (B,) analytic
    tc = density_ratio_logit.float()
    loss = distortion.mean() + beta * kl_weight * rate.mean() + gamma * tc.mean()
    return ObjectiveOutput(loss, {"elbo": -(distortion + rate), "distortion": distortion, "rate": rate,
                                  "tc": tc.detach()})
