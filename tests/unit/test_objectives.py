"""ELBO maths against oracles: torch.distributions' KL, and the linear-Gaussian model's closed-form log p(x)."""

import math

import pytest
import torch

from vae_lab.model.interface import flat_terms
from torch.distributions import Independent, Normal, kl_divergence

from oracles import LinearGaussian, diagonal_posterior
from vae_lab.distributions import LIKELIHOODS, diagonal_gaussian, standard_normal
from vae_lab.objectives import build_objective, elbo
from vae_lab.distributions.kl import rate_per_dim


def test_analytic_kl_matches_torch_distributions_and_hand_formula():
    g = torch.Generator().manual_seed(0)
    params = torch.randn(7, 2 * 4, generator=g)
    q = diagonal_gaussian(params)
    p = standard_normal(4)
    ours = rate_per_dim(q, p).sum(-1)
    torch.testing.assert_close(ours, kl_divergence(q, p))
    mu, sd = q.base_dist.loc, q.base_dist.scale
    by_hand = 0.5 * (mu**2 + sd**2 - 1 - 2 * sd.log()).sum(-1)  # the seeds' -0.5 * sum(1 + logvar - mu^2 - e^logvar)
    torch.testing.assert_close(ours, by_hand)


def test_posterior_scale_is_soft_and_floored():
    q = diagonal_gaussian(torch.tensor([[0.0, -1e4]]), min_scale=1e-4)
    assert q.base_dist.scale.item() == pytest.approx(1e-4)
    params = torch.tensor([[0.0, -50.0]], requires_grad=True)
    diagonal_gaussian(params).base_dist.scale.sum().backward()
    assert params.grad[0, 1] > 0  # no hard clamp: the gradient survives far in the tail


def test_importance_weights_under_the_exact_posterior_all_equal_log_px():
    """With q(z|x) = p(z|x), every log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) is exactly log p(x), so vae_lab's
    log_weights and IWAE bound return the closed-form log p(x) for any K, and its ELBO does too (rate by Monte Carlo)."""
    from torch.distributions import MultivariateNormal

    from vae_lab.objectives.iwae import iwae_bound, log_weights

    model = LinearGaussian.random(data_dim=6, latent_dim=3, s=0.7)
    x = model.sample_x(4)
    m, S = model.exact_posterior(x)
    q = MultivariateNormal(m, covariance_matrix=S.expand(m.shape[0], *S.shape))
    z = q.sample((5,))  # (K, B, d)
    log_w = log_weights(q, model.prior(), z, model.likelihood(z).log_prob(x))  # (K, B)
    torch.testing.assert_close(log_w, model.log_px(x).expand_as(log_w), atol=1e-4, rtol=0)
    torch.testing.assert_close(iwae_bound(log_w), model.log_px(x), atol=1e-4, rtol=0)


def test_elbo_objective_matches_closed_form_for_diagonal_posterior():
    # A diagonal q (the family vae_lab uses) against the closed-form ELBO of the linear-Gaussian model.
    model = LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5, seed=3)
    x = model.sample_x(3)
    m, S = model.exact_posterior(x)
    q = diagonal_posterior(m, S.diagonal().sqrt().expand_as(m))
    torch.manual_seed(0)
    z = q.rsample((200_000,))  # (K, B, d)
    out = elbo(flat_terms(q, model.prior(), z, model.likelihood(z), x))
    Sd = torch.diag(S.diagonal())
    closed = (model.likelihood(m).log_prob(x) - torch.trace(model.W @ Sd @ model.W.T) / (2 * model.s**2)
              - kl_divergence(q, model.prior()))
    torch.testing.assert_close(out.terms["elbo"], closed, atol=0.02, rtol=0)
    assert (out.terms["elbo"] <= model.log_px(x) + 0.02).all()  # a lower bound


def test_loss_weights_rate_by_beta_and_warmup_but_terms_stay_true():
    model = LinearGaussian.random(seed=5)
    x = model.sample_x(8)
    q = diagonal_posterior(torch.randn(8, 2, dtype=torch.float64), torch.rand(8, 2, dtype=torch.float64) + 0.1)
    z = q.rsample((1,))
    plain = elbo(flat_terms(q, model.prior(), z, model.likelihood(z), x))
    weighted = elbo(flat_terms(q, model.prior(), z, model.likelihood(z), x), beta=4.0, kl_weight=0.25)
    torch.testing.assert_close(weighted.terms["elbo"], plain.terms["elbo"])
    expected = plain.terms["distortion"].mean() + 4.0 * 0.25 * plain.terms["rate"].mean()
    torch.testing.assert_close(weighted.loss, expected)


def test_free_bits_clamp_batch_mean_kl_per_dim():
    model = LinearGaussian.random(seed=6)
    x = model.sample_x(4)
    loc = torch.zeros(4, 2, dtype=torch.float64)
    loc[:, 0] = 3.0  # dim 0 carries ~4.5 nats, dim 1 none
    q = diagonal_posterior(loc, torch.ones(4, 2, dtype=torch.float64))
    z = q.rsample((1,))
    out = elbo(flat_terms(q, model.prior(), z, model.likelihood(z), x), free_bits=1.0)
    per_dim = kl_divergence(q.base_dist, model.prior().base_dist).mean(0)  # (d,)
    expected = out.terms["distortion"].mean() + per_dim.clamp(min=1.0).sum()
    torch.testing.assert_close(out.loss, expected)
    assert per_dim[1] == 0 and out.terms["rate"].mean() == pytest.approx(per_dim.sum().item())


def test_build_objective_rejects_unknown_names_and_coefficients():
    from vae_lab.errors import ConfigError

    with pytest.raises(ConfigError, match="valid choices: beta_tcvae, capacity, dip_vae, elbo, factor_vae, iwae"):
        build_objective("nope")
    with pytest.raises(ConfigError, match="loss.beta is not an option of loss.name=iwae"):
        build_objective("iwae", beta=2.0)


@pytest.mark.parametrize("name", sorted(n for n, lik in LIKELIHOODS.items() if lik.kind != "discrete"))
def test_likelihoods_are_normalised_log_densities(name):  # discretised ones: tests/test_likelihoods.py
    torch.manual_seed(0)
    lik = LIKELIHOODS[name]
    raw = torch.randn(3, lik.out_channels(2, 1), 4, 4)
    x = torch.rand(3, 2, 4, 4)
    p_x = lik(raw, scale=0.3, min_scale=1e-3)
    assert p_x.batch_shape == (3,) and p_x.event_shape == (2, 4, 4)
    logp = p_x.log_prob(x)
    if name == "bernoulli":
        ref = -torch.nn.functional.binary_cross_entropy_with_logits(raw, x, reduction="none").sum((1, 2, 3))
    elif name == "gaussian":
        mu = torch.sigmoid(raw)
        ref = (-0.5 * ((x - mu) / 0.3) ** 2 - math.log(0.3) - 0.5 * math.log(2 * math.pi)).sum((1, 2, 3))
    elif name == "gaussian_learned":
        a, r = raw.chunk(2, dim=1)
        ref = Normal(torch.sigmoid(a), torch.nn.functional.softplus(r) + 1e-3).log_prob(x).sum((1, 2, 3))
    else:
        ref = torch.distributions.ContinuousBernoulli(logits=raw).log_prob(x).sum((1, 2, 3))
    torch.testing.assert_close(logp, ref)
