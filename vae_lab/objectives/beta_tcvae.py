"""beta-TCVAE (Chen et al. 2018): the KL term split into index-code MI, total correlation and dimension-wise KL."""

import math

import torch
from torch.distributions import Distribution

from vae_lab.model.interface import Terms
from vae_lab.objectives.elbo import ObjectiveOutput

SAMPLING = ("mws", "mss")


def log_q_pairs(q_z: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z_i,d | x_j) for every pair of examples (i, j) and latent dimension d: z (B, D) -> (B, B, D)."""
    loc, scale = q_z.base_dist.loc.float(), q_z.base_dist.scale.float()  # (B, D)
    return torch.distributions.Normal(loc.unsqueeze(0), scale.unsqueeze(0)).log_prob(z.float().unsqueeze(1))


def log_importance_weights(batch_size: int, dataset_size: int, sampling: str, device) -> torch.Tensor:
    """log w_ij: the weight of q(z_i|x_j) in the estimate q(z_i) ~ sum_j w_ij q(z_i|x_j), (B, B); rows sum to 1.

    mws (minibatch-weighted sampling, Chen et al. 2018, Sec. 4.1): every pair weighs 1 / (N B).
    mss (minibatch-stratified sampling, Appendix C.2): the example's own posterior stands for itself (1 / N) and
    the B - 1 others for the remaining N - 1 examples ((N - 1) / (N (B - 1)) each), an unbiased estimate of
    q(z_i) = (1/N) sum_n q(z_i|n) given that z_i was drawn from q(z|x_i).
    """
    n, b = float(dataset_size), batch_size
    if sampling == "mws":
        return torch.full((b, b), -math.log(n * b), device=device)
    other = math.log(n - 1) - math.log(n * (b - 1)) if b > 1 else -math.inf
    w = torch.full((b, b), other, device=device)
    return w.fill_diagonal_(-math.log(n))


def tc_decomposition(q_z: Distribution, p_z: Distribution, z: torch.Tensor, dataset_size: int,
                     sampling: str = "mws") -> dict[str, torch.Tensor]:
    """Per-example estimates (B,) of MI, TC and dimension-wise KL; their sum is log q(z|x) - log p(z) exactly.

    Chen et al. 2018, Eq. 2: E_x KL(q(z|x) || p(z))
        = I_q(x; z) + KL(q(z) || prod_d q(z_d)) + sum_d KL(q(z_d) || p(z_d)),
    with log q(z) and log q(z_d) estimated over the minibatch (log_importance_weights).
    """
    log_w = log_importance_weights(z.shape[0], dataset_size, sampling, z.device)  # (B, B)
    pairs = log_q_pairs(q_z, z)  # (B, B, D)
    log_qz = torch.logsumexp(pairs.sum(-1) + log_w, dim=1)  # (B,): log q(z_i)
    log_qz_dims = torch.logsumexp(pairs + log_w.unsqueeze(-1), dim=1).sum(-1)  # (B,): sum_d log q(z_i,d)
    log_qz_x = q_z.log_prob(z).float()  # (B,)
    log_pz = p_z.log_prob(z).float()  # (B,)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_qz_dims, "dimwise_kl": log_qz_dims - log_pz}


def beta_tcvae(
    t: Terms,
    dataset_size: int,
    alpha: float = 1.0,
    beta: float = 6.0,
    gamma: float = 1.0,
    sampling: str = "mws",
    kl_weight: float = 1.0,
    step: int = 0,
) -> ObjectiveOutput:
    """-ELBO + (alpha - 1) MI + (beta - 1) TC + (gamma - 1) dimension-wise KL, the KL term warmed up by kl_weight.

    Chen et al. 2018, Eq. 4 penalises alpha MI + beta TC + gamma DWKL; written as the ELBO's analytic KL plus the
    deviations from 1 it has the same expectation, and with alpha = beta = gamma = 1 it is exactly the ELBO loss.
    z: (1, B, D), one sample per example (the minibatch estimators pair the examples' samples).

    The terms reported are always the mss estimates: mws underestimates log q(z) by between log B and log N (its
    weight 1 / (N B) gives the example's own posterior 1 / B of its due), a shift constant in the parameters, so
    its gradients are right but its MI / TC / DWKL values are not (TC 11.6 nats for a true 0.8 in
    tests/unit/test_disentangling_objectives.py). The loss uses `sampling`.
    """
    distortion = t.distortion  # (B,)
    rate = t.rate.sum(-1)  # (B,) analytic
    parts = tc_decomposition(t.q_z, t.p_z, t.z[0], dataset_size, sampling)
    extra = (alpha - 1) * parts["mi"] + (beta - 1) * parts["tc"] + (gamma - 1) * parts["dimwise_kl"]
    loss = distortion.mean() + kl_weight * (rate.mean() + extra.mean())
    reported = parts
    if sampling != "mss":
        with torch.no_grad():  # for the log only
            reported = tc_decomposition(t.q_z, t.p_z, t.z[0], dataset_size, "mss")
    return ObjectiveOutput(loss, {"elbo": -(distortion + rate), "distortion": distortion, "rate": rate, **reported})
