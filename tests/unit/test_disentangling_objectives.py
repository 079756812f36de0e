"""beta-TCVAE, DIP-VAE, capacity, FactorVAE's pieces and cyclical annealing against brute force and closed forms
(cyclical annealing in a real fit: tests/integration/test_kl_annealing_training.py)."""

import math

import numpy as np
import pytest
import torch

from vae_lab.model.interface import flat_terms
from torch.distributions import Bernoulli, Independent, Normal

from vae_lab.distributions import diagonal_gaussian, standard_normal
from vae_lab.objectives import build_objective, elbo
from vae_lab.objectives.beta_tcvae import beta_tcvae, log_importance_weights, tc_decomposition
from vae_lab.objectives.capacity import capacity, capacity_at
from vae_lab.objectives.dip_vae import aggregate_covariance, dip_penalty, dip_vae
from vae_lab.objectives.factor_vae import discriminator_loss, factor_vae, permute_dims
from vae_lab.schedules import kl_cyclical_factor


def _batch(b=5, d=3, n_pix=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = diagonal_gaussian(torch.randn(b, 2 * d, generator=g))
    z = q.rsample((1,))  # (1, B, D)
    p_x = Independent(Bernoulli(logits=torch.randn(1, b, n_pix, generator=g)), 1)
    x = torch.bernoulli(torch.full((b, n_pix), 0.5), generator=g)
    return q, standard_normal(d), z, p_x, x


def _brute_force(q, z, n, sampling):
    """float64 loops: log q(z_i) and sum_d log q(z_i,d) from the explicit weighted sums over the batch."""
    loc, scale = q.base_dist.loc.double(), q.base_dist.scale.double()
    b, d = loc.shape
    zz = z.double()
    log_qz, log_qz_dims = torch.zeros(b, dtype=torch.float64), torch.zeros(b, dtype=torch.float64)
    for i in range(b):
        weights = [1 / (n * b)] * b if sampling == "mws" else [(n - 1) / (n * (b - 1))] * b
        if sampling == "mss":
            weights[i] = 1 / n
        joint = sum(w * math.exp(Normal(loc[j], scale[j]).log_prob(zz[i]).sum()) for j, w in enumerate(weights))
        log_qz[i] = math.log(joint)
        for k in range(d):
            marginal = sum(w * math.exp(Normal(loc[j, k], scale[j, k]).log_prob(zz[i, k]))
                           for j, w in enumerate(weights))
            log_qz_dims[i] += math.log(marginal)
    log_qz_x = Normal(loc, scale).log_prob(zz).sum(-1)
    log_pz = Normal(0.0, 1.0).log_prob(zz).sum(-1)
    return {"mi": log_qz_x - log_qz, "tc": log_qz - log_qz_dims, "dimwise_kl": log_qz_dims - log_pz}


@pytest.mark.parametrize("sampling", ["mws", "mss"])
def test_tc_decomposition_matches_brute_force_and_sums_to_the_sampled_kl(sampling):
    q, p, z, _, _ = _batch()
    parts = tc_decomposition(q, p, z[0], dataset_size=50, sampling=sampling)
    reference = _brute_force(q, z[0], 50, sampling)
    for name in ("mi", "tc", "dimwise_kl"):
        torch.testing.assert_close(parts[name].double(), reference[name], rtol=1e-4, atol=1e-4)
    sampled_kl = q.log_prob(z[0]) - p.log_prob(z[0])  # the single-sample estimate of KL(q(z|x) || p(z))
    torch.testing.assert_close(parts["mi"] + parts["tc"] + parts["dimwise_kl"], sampled_kl, rtol=1e-5, atol=1e-5)


def test_tc_terms_average_to_the_analytic_kl_within_estimator_error():
    # a batch of 256 with N = 256: E[MI + TC + DWKL] = E_x KL(q(z|x) || p(z)); 8 sample draws average the noise
    g = torch.Generator().manual_seed(1)
    q = diagonal_gaussian(torch.randn(256, 4, generator=g) * 0.5)
    p = standard_normal(2)
    totals = [sum(v.mean() for v in tc_decomposition(q, p, q.sample(), 256, "mss").values()) for _ in range(8)]
    analytic = torch.distributions.kl_divergence(q, p).mean()
    assert abs(torch.stack(totals).mean() - analytic) < 0.05 * analytic + 0.02


def test_importance_weights():
    # mws: every pair 1 / (N B) (Chen et al. 2018, Sec. 4.1); mss: own 1 / N, others (N - 1) / (N (B - 1)): sum 1
    torch.testing.assert_close(log_importance_weights(6, 100, "mws", "cpu").exp(), torch.full((6, 6), 1 / 600))
    w = log_importance_weights(6, 100, "mss", "cpu").exp()
    torch.testing.assert_close(w.diagonal(), torch.full((6,), 0.01))
    torch.testing.assert_close(w.sum(1), torch.ones(6))


def test_beta_tcvae_with_unit_weights_is_the_elbo_loss_and_reports_true_terms():
    q, p, z, p_x, x = _batch()
    ours = beta_tcvae(flat_terms(q, p, z, p_x, x), dataset_size=50, alpha=1, beta=1, gamma=1, kl_weight=0.3)
    reference = elbo(flat_terms(q, p, z, p_x, x), kl_weight=0.3)
    torch.testing.assert_close(ours.loss, reference.loss)
    for name in ("elbo", "distortion", "rate"):
        torch.testing.assert_close(ours.terms[name], reference.terms[name])
    for sampling in ("mws", "mss"):  # the loss uses `sampling`'s estimates; the terms reported are mss's
        weighted = beta_tcvae(flat_terms(q, p, z, p_x, x), dataset_size=50, alpha=2, beta=6, gamma=3,
                              sampling=sampling)
        t = tc_decomposition(q, p, z[0], 50, sampling)
        penalty = (t["mi"] + 5 * t["tc"] + 2 * t["dimwise_kl"]).mean()
        expected = reference.loss + (1 - 0.3) * reference.terms["rate"].mean() + penalty
        torch.testing.assert_close(weighted.loss, expected)
        for name, value in tc_decomposition(q, p, z[0], 50, "mss").items():
            torch.testing.assert_close(weighted.terms[name], value)


def test_reported_tc_terms_match_a_brute_force_aggregate_posterior_whatever_the_sampling():
    """Issue 30: N = 200 known posteriors (two correlated dims), batches of 50: the terms reported against MI, TC and
    dimension-wise KL with q(z) = (1/N) sum_n q(z|x_n) summed over the whole data set; mws's own estimates are off by
    nats (log B .. log N), and its loss still has mws's gradients."""
    g = torch.Generator().manual_seed(0)
    n, b, d, sd = 200, 50, 3, 0.3
    loc = torch.randn(n, d, generator=g)
    loc[:, 1] = 0.9 * loc[:, 0] + 0.3 * loc[:, 1]  # correlated: a true TC of ~0.8 nats
    params = torch.cat([loc, torch.full((n, d), math.log(math.expm1(sd)))], 1)  # softplus^-1(0.3)
    p = standard_normal(d)
    every = Normal(loc.unsqueeze(0), sd)  # q(z|x_n) for all n: (1, N, D)
    sums = {k: torch.zeros(3) for k in ("reported", "mws", "truth")}
    for _ in range(100):
        q = diagonal_gaussian(params[torch.randperm(n, generator=g)[:b]])
        z = q.sample((1,))
        p_x = Independent(Bernoulli(logits=torch.zeros(1, b, 2)), 1)
        out = beta_tcvae(flat_terms(q, p, z, p_x, torch.zeros(b, 2)), dataset_size=n, sampling="mws")
        pairs = every.log_prob(z[0].unsqueeze(1))  # (B, N, D)
        log_qz = torch.logsumexp(pairs.sum(-1), 1) - math.log(n)
        log_qz_dims = (torch.logsumexp(pairs, 1) - math.log(n)).sum(-1)
        truth = (q.log_prob(z[0]) - log_qz, log_qz - log_qz_dims, log_qz_dims - p.log_prob(z[0]))
        mws = tc_decomposition(q, p, z[0], n, "mws")
        for key, values in (("reported", [out.terms[k] for k in ("mi", "tc", "dimwise_kl")]), ("truth", truth),
                            ("mws", [mws[k] for k in ("mi", "tc", "dimwise_kl")])):
            sums[key] += torch.stack([v.mean() for v in values]) / 100
    assert sums["truth"][1] > 0.5  # a real total correlation to find
    torch.testing.assert_close(sums["reported"], sums["truth"], atol=0.25, rtol=0)
    assert (sums["mws"] - sums["truth"]).abs().min() > 1.0  # what was logged before


def test_dip_covariances_and_penalty_match_hand_formulas():
    q, p, z, p_x, x = _batch(b=8, d=3)
    mu, sd = q.base_dist.loc, q.base_dist.scale
    cov_i = torch.cov(mu.T, correction=0)
    torch.testing.assert_close(aggregate_covariance(q, "i"), cov_i)
    torch.testing.assert_close(aggregate_covariance(q, "ii"), cov_i + torch.diag((sd**2).mean(0)))
    c = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    assert dip_penalty(c, 10.0, 100.0).item() == pytest.approx(10 * 2 * 0.25 + 100 * 1.0)
    out = dip_vae(flat_terms(q, p, z, p_x, x), dip_type="ii", lambda_od=3.0, lambda_d=7.0)
    base = elbo(flat_terms(q, p, z, p_x, x))
    torch.testing.assert_close(out.loss, base.loss + dip_penalty(aggregate_covariance(q, "ii"), 3.0, 7.0))
    torch.testing.assert_close(out.terms["elbo"], base.terms["elbo"])


def test_capacity_rises_linearly_and_penalises_the_distance():
    assert [capacity_at(s, 25.0, 100) for s in (0, 50, 100, 1000)] == [0.0, 12.5, 25.0, 25.0]
    q, p, z, p_x, x = _batch()
    out = capacity(flat_terms(q, p, z, p_x, x), gamma=10.0, capacity_max=4.0, capacity_steps=8, step=4)
    base = elbo(flat_terms(q, p, z, p_x, x))
    expected = base.terms["distortion"].mean() + 10.0 * (base.terms["rate"].mean() - 2.0).abs()
    torch.testing.assert_close(out.loss, expected)
    assert torch.all(out.terms["capacity"] == 2.0)


def test_factor_vae_pieces():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4, generator=g)
    perm = permute_dims(z, g)
    for d in range(4):  # each dimension keeps its values (its marginal) ...
        torch.testing.assert_close(perm[:, d].sort().values, z[:, d].sort().values)
    assert not torch.equal(perm, z)  # ... but the rows are mixed
    logits_q, logits_p = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    loss, acc = discriminator_loss(logits_q, logits_p)
    log_sig = lambda t: -math.log1p(math.exp(-t))  # noqa: E731  log softmax of two logits = log sigmoid of the gap
    expected = -0.5 * ((log_sig(2) + log_sig(-1)) / 2 + (log_sig(3) + log_sig(-1)) / 2)
    assert loss.item() == pytest.approx(expected, rel=1e-6) and acc.item() == 0.5
    q, p, zz, p_x, x = _batch()
    ratio = torch.randn(5, generator=g)
    out = factor_vae(flat_terms(q, p, zz, p_x, x), density_ratio_logit=ratio, gamma=7.0)
    torch.testing.assert_close(out.loss, elbo(flat_terms(q, p, zz, p_x, x)).loss + 7.0 * ratio.mean())
    torch.testing.assert_close(out.terms["tc"], ratio)


def test_cyclical_annealing_follows_fu_et_al():
    # 4 cycles over 100 steps, ratio 0.5: each 25-step cycle rises 0 -> 1 over 12.5 steps, then holds at 1
    values = [kl_cyclical_factor(s, 100, 4, 0.5) for s in range(100)]
    assert values[0] == 0.0 and values[25] == 0.0 and values[50] == 0.0
    assert values[5] == pytest.approx(5 / 12.5) and values[13] == 1.0 and values[24] == 1.0
    assert np.all(np.diff(values[:12]) > 0)


def test_build_objective_rejects_per_step_arguments_and_other_objectives_keys():
    with pytest.raises(Exception, match="loss.num_samples is not an option|loss.step is not an option"):
        build_objective("factor_vae", step=3)
    with pytest.raises(Exception, match="loss.lambda_od is not an option of loss.name=beta_tcvae"):
        build_objective("beta_tcvae", dataset_size=10, lambda_od=1.0)
