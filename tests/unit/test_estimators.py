"""The fast IWAE estimator (vae_lab.estimators) against a straightforward loop on the same noise, the linear-Gaussian
oracle, and the likelihoods' fused log-probabilities against their Distributions."""

import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from oracles import LinearGaussian
from vae_lab.distributions import LIKELIHOODS, POSTERIORS, PRIORS
from vae_lab.distributions.posterior import rsample_with_log_prob
from vae_lab.distributions.prior import gaussian_mixture, prior_log_prob
from vae_lab.estimators import decoded_bytes_per_sample, iwae_log_px, samples_per_chunk
from vae_lab.model import VAE

K = 300


def straightforward_iwae(model, x, y, k: int, per_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop a user writes: chunks of q.rsample, decode, log w, one logsumexp; (L_k, mean log p(x|z)), float64."""
    with torch.no_grad():
        q_z, p_z = model.encode(x, y), model.prior()
        log_w, log_px_given_z = [], []
        for start in range(0, k, per_chunk):
            z = q_z.rsample((min(per_chunk, k - start),))  # (S, B, D)
            log_px = model.decode(z, y).log_prob(x)  # (S, B)
            log_w.append(log_px + p_z.log_prob(z) - q_z.log_prob(z))
            log_px_given_z.append(log_px)
        log_w, log_px_given_z = torch.cat(log_w).double(), torch.cat(log_px_given_z).double()
    return torch.logsumexp(log_w, 0) - math.log(k), log_px_given_z.mean(0)


def fast_and_loop(model, x, y=None, per_chunk: int = 70, **kwargs):
    """Both estimators from the same seed with the same chunk of samples: the same draws z."""
    torch.manual_seed(3)
    # max_decoded = per_chunk images x B and an ample budget: chunks of exactly per_chunk samples
    fast = iwae_log_px(model, x, y, K, memory_mb=1024, max_decoded=per_chunk * x.shape[0], **kwargs)
    torch.manual_seed(3)
    return fast, straightforward_iwae(model, x, y, K, per_chunk)


def images(shape, n: int = 5, seed: int = 0, binary: bool = False) -> torch.Tensor:
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))
    return x.round() if binary else x


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("architecture, net, shape", [
    ("mlp", {"hidden_dims": [32, 16]}, (1, 6, 6)),
    ("conv", {"channels": [4, 8]}, (3, 8, 8)),  # 4-D weights: the channels_last path
])
def test_fast_estimator_equals_the_straightforward_loop(likelihood, architecture, net, shape):
    torch.manual_seed(0)
    model = VAE(shape, latent_dim=4, architecture=architecture, net=net, likelihood=likelihood).eval()
    x = images(shape)
    fast, (bound, mean_log_px) = fast_and_loop(model, x)
    assert fast.num_samples == K
    torch.testing.assert_close(fast.bound(), bound, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(fast.mean_log_px_given_z(), mean_log_px, rtol=1e-6, atol=1e-4)
    assert all(p.is_contiguous() for p in model.parameters())  # the NHWC layout is undone after the call


def spread_prior(model: VAE) -> VAE:
    """Prior weights off their initial values (a mixture's components apart, some narrow; pseudo-inputs random)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.prior_module.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g) if name == "pseudo_inputs" else torch.randn(p.shape, generator=g))
        if hasattr(model.prior_module, "raw_scale"):
            model.prior_module.raw_scale[0] = -4.0  # a component of scale ~0.02
    return model


@pytest.mark.parametrize("posterior", sorted(POSTERIORS))
@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_learned"])
def test_fast_estimator_equals_the_loop_for_every_prior_and_posterior(prior, posterior, likelihood):
    torch.manual_seed(0)
    model = VAE((1, 6, 6), latent_dim=4, net={"hidden_dims": [32, 16]}, likelihood=likelihood, prior=prior,
                prior_components=5, prior_init="random", posterior=posterior, posterior_steps=2,
                posterior_hidden_dim=16, posterior_context_dim=8)
    model = spread_prior(model).eval()
    x = images((1, 6, 6), binary=likelihood == "bernoulli")
    fast, (bound, mean_log_px) = fast_and_loop(model, x)
    torch.testing.assert_close(fast.bound(), bound, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(fast.mean_log_px_given_z(), mean_log_px, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "tanh"])  # relu: fused into oneDNN's linear; tanh: applied after it
def test_onednn_linears_give_the_same_bound_and_leave_the_model_as_it_was(activation):
    torch.manual_seed(0)
    model = VAE((1, 8, 8), latent_dim=5, net={"hidden_dims": [48, 24], "activation": activation}).eval()
    x = images((1, 8, 8), binary=True)
    torch.manual_seed(4)
    with_layout = iwae_log_px(model, x, None, 200).bound()
    torch.manual_seed(4)
    without = iwae_log_px(model, x, None, 200, cpu_layout=False).bound()
    torch.testing.assert_close(with_layout, without, rtol=1e-6, atol=1e-4)
    assert not any("forward" in vars(m) for m in model.modules())  # every instance forward removed after the call


def test_onednn_swap_leaves_a_linear_subclass_its_own_forward():
    """The MADE's MaskedLinear (an nn.Linear subclass) in a Sequential keeps its mask inside the oneDNN context."""
    from vae_lab.estimators import _onednn_linears
    from vae_lab.nets.made import MaskedLinear

    masked = MaskedLinear(4, 3, torch.tensor([[True, False, False, False]] * 3))
    net, h = nn.Sequential(masked, nn.ReLU()), torch.randn(5, 4)
    expected = net(h)
    with _onednn_linears(net):
        assert "forward" not in vars(masked) and torch.equal(net(h), expected)


@pytest.mark.parametrize("name", ["standard_normal", "mog", "vamp"])
def test_prior_log_prob_equals_the_distributions(name):
    torch.manual_seed(0)
    model = spread_prior(VAE((1, 5, 5), latent_dim=3, net={"hidden_dims": [8]}, prior=name, prior_components=6,
                             prior_init="random")).eval()
    p_z = model.prior()
    z = torch.randn(7, 4, 3) * 2
    if name == "mog":  # samples on top of the narrow component: the quadratic expansion's worst case
        z[0] = p_z.component_distribution.base_dist.loc[0] + 1e-3 * torch.randn(4, 3)
    torch.testing.assert_close(prior_log_prob(p_z, z).double(), p_z.log_prob(z).double(), rtol=1e-6, atol=1e-4)


def test_mixture_log_prob_far_from_every_component():
    """Large quadratic forms: the float64 expansion keeps the log-density to float32 precision."""
    p_z = gaussian_mixture(torch.randn(4), torch.randn(4, 10) * 3, torch.rand(4, 10) * 0.5 + 0.01)
    z = torch.randn(50, 10) * 20
    torch.testing.assert_close(prior_log_prob(p_z, z).double(), p_z.log_prob(z).double(), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("posterior", [*sorted(POSTERIORS), "full_covariance"])
def test_rsample_with_log_prob_draws_rsample_and_its_log_prob(posterior):
    torch.manual_seed(0)
    if posterior == "full_covariance":  # any other Distribution: rsample, then log_prob
        q_z = MultivariateNormal(torch.randn(3, 4), scale_tril=torch.eye(4) * 0.5)
    else:
        model = VAE((1, 5, 5), latent_dim=4, net={"hidden_dims": [8]}, posterior=posterior, posterior_steps=2,
                    posterior_hidden_dim=8, posterior_context_dim=4).eval()
        q_z = model.encode(images((1, 5, 5), n=3))
    torch.manual_seed(9)
    z, log_q = rsample_with_log_prob(q_z, (6,))
    torch.manual_seed(9)
    expected = q_z.rsample((6,))
    assert z.shape == (6, 3, 4) and torch.equal(z, expected)
    torch.testing.assert_close(log_q, q_z.log_prob(expected.clone()), rtol=1e-5, atol=1e-5)  # clone: no IAF cache


def test_fast_estimator_equals_the_loop_for_a_conditional_model():
    torch.manual_seed(1)
    model = VAE((1, 5, 5), latent_dim=3, net={"hidden_dims": [16]}, conditional=True, num_classes=3).eval()
    x, y = images((1, 5, 5), n=6, binary=True), torch.tensor([0, 1, 2, 2, 1, 0])
    fast, (bound, mean_log_px) = fast_and_loop(model, x, y, per_chunk=45)
    torch.testing.assert_close(fast.bound(), bound, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(fast.mean_log_px_given_z(), mean_log_px, rtol=1e-6, atol=1e-4)
    # the labels matter: another labelling gives another bound
    torch.manual_seed(3)
    other = iwae_log_px(model, x, torch.tensor([2, 2, 0, 1, 0, 1]), K).bound()
    assert not torch.allclose(other, bound, atol=1e-2)


class OracleVAE(nn.Module):
    """The linear-Gaussian model behind the VAE interface, with the exact, full-covariance posterior as q(z|x)."""

    def __init__(self, oracle: LinearGaussian):
        super().__init__()
        self.oracle = oracle

    def encode(self, x, y=None):
        m, S = self.oracle.exact_posterior(x)
        return MultivariateNormal(m, covariance_matrix=S)

    def decode(self, z, y=None):
        return self.oracle.likelihood(z)

    def prior(self):
        return self.oracle.prior()


def test_exact_posterior_makes_every_weight_log_px_linear_gaussian_oracle():
    """With q = p(z|x), every log w_k = log p(x) (Burda et al. 2016, Sec. 3): the bound is exact for any k and chunk,
    also for a posterior that is not a diagonal Gaussian and a model without a `likelihood` attribute."""
    oracle = LinearGaussian.random(data_dim=5, latent_dim=3, seed=2)
    x = oracle.sample_x(8)
    torch.manual_seed(0)
    est = iwae_log_px(OracleVAE(oracle), x, None, 1000, max_decoded=8 * 64)  # 16 chunks
    torch.testing.assert_close(est.bound(), oracle.log_px(x), rtol=0, atol=1e-9)


def test_bf16_decoder_stays_near_float32_with_float32_log_probs():
    """bf16 decoder matmuls (the GPU opt-in) move the bound by the rounding of the logits only (here, on CPU)."""
    torch.manual_seed(0)
    model = VAE((1, 8, 8), latent_dim=4, net={"hidden_dims": [32]}).eval()
    x = images((1, 8, 8), binary=True)
    torch.manual_seed(5)
    fp32 = iwae_log_px(model, x, None, 200).bound()
    torch.manual_seed(5)
    bf16 = iwae_log_px(model, x, None, 200, decoder_dtype=torch.bfloat16).bound()
    assert bf16.dtype == torch.float64 and not torch.equal(bf16, fp32)
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0.5)  # 64 pixels x ~2^-8 relative error of each logit


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 5, 7), (3, 32, 32)])  # 784 = 7 x 112; 105 < 112; 3072 = 27 x 112 + 48
def test_likelihood_log_prob_equals_its_distribution(name, shape):
    """Each likelihood's (fused, where it has one) log_prob gives its Distribution's numbers, extreme logits too."""
    likelihood = LIKELIHOODS[name]
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(4, 3, likelihood.out_channels(shape[0], 10), *shape[1:], generator=g) * 8  # (S, B, K, H, W)
    raw.view(-1)[:6] = torch.tensor([-60.0, 60.0, 0.0, 30.0, -30.0, 1e-6])
    x = torch.rand(3, *shape, generator=g)
    x[0] = x[0].round()  # binary and grey-level targets
    p_x = likelihood(raw, channels=shape[0], components=10)
    expected = p_x.log_prob(x).double()
    got = likelihood.log_prob(p_x, x)
    assert got.shape == (4, 3)
    torch.testing.assert_close(got.double(), expected, rtol=2e-6, atol=1e-3)


@pytest.mark.parametrize("name", ["bernoulli", "gaussian", "gaussian_learned"])
def test_likelihoods_with_a_fused_log_prob(name):
    """These take the fused path (otherwise the test above compares log_prob with itself)."""
    assert LIKELIHOODS[name].fused_log_prob is not None


def test_chunk_size_follows_the_memory_budget_and_max_decoded():
    torch.manual_seed(0)
    model = VAE((1, 28, 28), latent_dim=8, net={"hidden_dims": [400, 100]}).eval()
    x = images((1, 28, 28), n=10)
    per_sample = decoded_bytes_per_sample(model, model.encode(x), x, None)
    # the decoder's outputs (100 + 100 + 400 + 400 + 784 + 784 floats) and the Bernoulli's logits (784 floats)
    assert per_sample == 4 * (2 * 100 + 2 * 400 + 3 * 784)
    assert samples_per_chunk(10, per_sample, memory_mb=1, max_decoded=None) == 2**20 // per_sample // 10
    assert samples_per_chunk(10, per_sample, memory_mb=1024, max_decoded=500) == 50
    assert samples_per_chunk(10, per_sample, memory_mb=1e-6, max_decoded=None) == 1  # at least one sample
