"""The IWAE bound (Burda et al. 2016) against the linear-Gaussian oracle, a hand-written ELBO and Eq. 14's gradient
(loss=iwae in a real fit: tests/integration/test_iwae_training.py)."""

import math

import pytest
import torch

from vae_lab.model.interface import flat_terms
from torch.distributions import Normal, kl_divergence

from oracles import LinearGaussian, diagonal_posterior
from vae_lab.estimators import ChunkedIWAE
from vae_lab.objectives import iwae
from vae_lab.objectives.iwae import iwae_bound, log_weights

K_LARGE = 5000
TOLERANCE_K5000 = 0.02  # nats: |E[L_5000] - log p(x)| for the perturbed posterior below (gap at k=1: ~1 nat)


def orthogonal_model(seed: int = 0) -> LinearGaussian:
    """A linear-Gaussian model whose W has orthogonal columns, so the exact posterior is diagonal (W^T W diagonal)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(6, 3, generator=g, dtype=torch.float64))  # (D, d) orthonormal columns
    W = q * torch.tensor([1.5, 0.8, 0.4], dtype=torch.float64)
    return LinearGaussian(W, torch.randn(6, generator=g, dtype=torch.float64), s=0.6)


def exact_diagonal_posterior(model: LinearGaussian, x: torch.Tensor):
    m, S = model.exact_posterior(x)
    assert torch.allclose(S, torch.diag(S.diagonal()), atol=1e-12)  # the oracle's posterior is diagonal here
    return diagonal_posterior(m, S.diagonal().sqrt().expand_as(m))


def perturbed_posterior(model: LinearGaussian, x: torch.Tensor):
    """q(z|x) off the exact posterior: mean shifted by half a std, scale x1.5: KL(q || p(z|x)) = 1.03 nats.

    A q wider than p(z|x) keeps the importance weights bounded, so L_k converges at the O(1/k) rate.
    """
    m, S = model.exact_posterior(x)
    sd = S.diagonal().sqrt()  # (d,)
    return diagonal_posterior(m + 0.5 * sd, 1.5 * sd.expand_as(m))


def closed_form_elbo(model: LinearGaussian, q, x: torch.Tensor) -> torch.Tensor:
    """ELBO of a diagonal Gaussian q in closed form: E_q log N(x; Wz + b, s^2) - KL(q || N(0, I))."""
    loc, var = q.base_dist.loc, q.base_dist.scale**2  # (B, d)
    trace = (var * (model.W**2).sum(0)).sum(-1)  # tr(W diag(var) W^T)
    return model.likelihood(loc).log_prob(x) - trace / (2 * model.s**2) - kl_divergence(q, model.prior())


def iwae_estimates(model, q, x, k: int, replicates: int, chunk: int = 1000) -> torch.Tensor:
    """L_k for `replicates` independent sets of k samples, through ChunkedIWAE: (replicates, B)."""
    out = []
    for _ in range(replicates):
        acc = ChunkedIWAE()
        for start in range(0, k, chunk):
            z = q.sample((min(chunk, k - start),))  # (S, B, d)
            log_px_given_z = model.likelihood(z).log_prob(x)
            acc.update(log_weights(q, model.prior(), z, log_px_given_z), log_px_given_z)
        assert acc.num_samples == k
        out.append(acc.bound())
    return torch.stack(out)


@pytest.mark.parametrize("k", [1, 2, 10, 100, K_LARGE])
def test_exact_posterior_gives_elbo_equal_iwae_equal_log_px(k):
    model = orthogonal_model()
    x = model.sample_x(4)
    q = exact_diagonal_posterior(model, x)
    torch.manual_seed(k)
    z = q.rsample((k,))  # (k, B, d)
    out = iwae(flat_terms(q, model.prior(), z, model.likelihood(z), x, with_log_q=True))
    log_px = model.log_px(x)
    # With q = p(z|x) every weight is p(x): L_k = log p(x) exactly, whatever the samples.
    torch.testing.assert_close(out.terms["iwae"], log_px, atol=1e-9, rtol=0)
    torch.testing.assert_close(closed_form_elbo(model, q, x), log_px, atol=1e-9, rtol=0)
    torch.testing.assert_close(out.loss, -log_px.mean(), atol=1e-9, rtol=0)


def test_perturbed_posterior_orders_elbo_iwae_and_log_px():
    model = orthogonal_model(seed=1)
    x = model.sample_x(4, seed=2)
    q = perturbed_posterior(model, x)
    log_px = model.log_px(x)
    elbo = closed_form_elbo(model, q, x)
    assert (log_px - elbo > 0.5).all()  # the posterior is far enough off for the bounds to differ
    torch.manual_seed(0)

    means, stderrs = {}, {}
    for k, replicates in ((1, 2000), (5, 500), (20, 200), (100, 50), (1000, 20), (K_LARGE, 10)):
        est = iwae_estimates(model, q, x, k, replicates)  # (R, B)
        means[k], stderrs[k] = est.mean(0), est.std(0) / math.sqrt(replicates)

    # E[L_1] is the ELBO (Burda et al. 2016, Sec. 3): within Monte Carlo error of the closed form.
    assert ((means[1] - elbo).abs() < 4 * stderrs[1]).all()
    ks = sorted(means)
    for small, large in zip(ks, ks[1:]):  # Theorem 1: L_k non-decreasing in k
        slack = 4 * torch.sqrt(stderrs[small] ** 2 + stderrs[large] ** 2)
        assert (means[large] >= means[small] - slack).all(), (small, large)
    assert (means[20] - means[1] > 0.3).all()  # and strictly increasing where the gaps exceed the noise
    # L_k <= log p(x) for every k, and L_5000 is within the stated tolerance of it.
    for k in ks:
        assert (means[k] <= log_px + 4 * stderrs[k]).all(), k
    assert ((log_px - means[K_LARGE]).abs() < TOLERANCE_K5000).all()


def test_chunked_iwae_equals_one_logsumexp():
    g = torch.Generator().manual_seed(0)
    log_w = 50 * torch.randn(1000, 3, generator=g, dtype=torch.float64)  # weights spanning many orders of magnitude
    log_px_given_z = torch.randn(1000, 3, generator=g, dtype=torch.float64)
    acc = ChunkedIWAE()
    for part_w, part_p in zip(log_w.split(333), log_px_given_z.split(333)):  # uneven chunks: 333, 333, 333, 1
        acc.update(part_w, part_p)
    torch.testing.assert_close(acc.bound(), iwae_bound(log_w))
    torch.testing.assert_close(acc.bound(), torch.log(torch.exp(log_w - 200).mean(0)) + 200)
    torch.testing.assert_close(acc.mean_log_px_given_z(), log_px_given_z.mean(0))


def test_iwae_with_one_sample_is_the_monte_carlo_elbo_for_the_same_noise():
    model = LinearGaussian.random(data_dim=5, latent_dim=2, seed=4)
    x = model.sample_x(6)
    g = torch.Generator().manual_seed(1)
    loc, scale = torch.randn(6, 2, generator=g, dtype=torch.float64), torch.rand(6, 2, generator=g, dtype=torch.float64) + 0.2
    q = diagonal_posterior(loc, scale)
    z = q.rsample((1,))  # (1, B, d)
    out = iwae(flat_terms(q, model.prior(), z, model.likelihood(z), x, with_log_q=True))
    # By hand, one Normal per coordinate: log p(x|z) + log p(z) - log q(z|x) at the same z.
    zz = z[0]
    mean_x = zz @ model.W.T + model.b
    by_hand = (Normal(mean_x, model.s).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(zz).sum(-1)
               - Normal(loc, scale).log_prob(zz).sum(-1))
    torch.testing.assert_close(out.terms["iwae"], by_hand)
    torch.testing.assert_close(out.loss, -by_hand.mean())


def test_iwae_gradient_is_the_normalised_weight_average_of_eq_14():
    """grad L_K = sum_k w~_k grad log w_k (Burda et al. 2016, Eq. 14): weights normalised, not detached or uniform."""
    model = LinearGaussian.random(data_dim=5, latent_dim=2, seed=7)
    x = model.sample_x(3)
    loc = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    raw_scale = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(8, 3, 2, dtype=torch.float64)

    def log_w_and_loss():
        q = diagonal_posterior(loc, raw_scale.exp())
        z = q.base_dist.loc + eps * q.base_dist.scale  # reparameterised, fixed noise
        out = iwae(flat_terms(q, model.prior(), z, model.likelihood(z), x, with_log_q=True))
        return log_weights(q, model.prior(), z, model.likelihood(z).log_prob(x)), out.loss

    _, loss = log_w_and_loss()
    ours = torch.autograd.grad(loss, (loc, raw_scale))
    log_w, _ = log_w_and_loss()
    w_tilde = torch.softmax(log_w, dim=0).detach()  # (K, B)
    reference = torch.autograd.grad(-(w_tilde * log_w).sum(0).mean(), (loc, raw_scale))
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b)
    log_w, _ = log_w_and_loss()
    uniform = torch.autograd.grad(-log_w.mean(0).mean(), (loc, raw_scale))  # the K-sample ELBO's gradient
    assert not torch.allclose(ours[0], uniform[0])  # the importance weights do change the update
