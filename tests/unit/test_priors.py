"""Priors p(z) against torch.distributions and hand-written references; the Monte Carlo rate against the closed
form; the linear-Gaussian oracle for every prior/posterior pair that can express it; models and artifacts."""

import json
import math

import pytest
import torch

from vae_lab.model.interface import flat_terms
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from oracles import LinearGaussian, diagonal_posterior
from vae_lab import publish
from vae_lab.loading import load_artifact
from vae_lab.distributions import prior as prior_module
from vae_lab.distributions.iaf import IAFDistribution
from vae_lab.distributions.prior import MixturePrior, VampPrior, gaussian_mixture, uniform_mixture
from vae_lab.model import VAE
from vae_lab.nets.made import MADE
from vae_lab.objectives import elbo, iwae
from vae_lab.objectives.iwae import iwae_bound, log_weights
from vae_lab.distributions.kl import ANALYTIC, MONTE_CARLO, rate_estimator
from vae_lab.objectives.rate import rate

COMBINATIONS = [(p, q) for p in ("standard_normal", "mog", "vamp") for q in ("gaussian", "iaf")]


def randomise_(module: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Every parameter to random values (zero-initialised outputs included), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(std * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- priors against references


def test_mixture_prior_log_prob_equals_mixture_same_family():
    torch.manual_seed(0)
    prior = MixturePrior(latent_dim=3, num_components=5)
    randomise_(prior, std=0.8)
    p_z = prior(None, torch.device("cpu"))
    scale = torch.nn.functional.softplus(prior.raw_scale) + prior_module.MIN_SCALE
    reference = MixtureSameFamily(Categorical(logits=prior.logits), Independent(Normal(prior.loc, scale), 1))
    z = 2 * torch.randn(4, 6, 3)
    torch.testing.assert_close(p_z.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(p_z.sample((7,)).shape, torch.Size([7, 3]))


def test_mixture_log_prob_in_chunks_equals_one_pass(monkeypatch):
    torch.manual_seed(1)
    p_z = gaussian_mixture(torch.randn(4), torch.randn(4, 3), torch.rand(4, 3) + 0.1)
    z = torch.randn(10, 5, 3)
    whole = p_z.log_prob(z)
    monkeypatch.setattr(prior_module, "LOG_PROB_CHUNK", 4 * 3 * 7)  # 7 rows per chunk: 50 rows in 8 chunks
    torch.testing.assert_close(p_z.log_prob(z), whole, rtol=0, atol=0)


def test_vamp_prior_log_prob_is_logsumexp_over_encoded_pseudo_inputs():
    torch.manual_seed(2)
    model = VAE([1, 6, 6], latent_dim=3, net={"hidden_dims": [8]}, prior="vamp", prior_components=4,
                prior_init="random")
    randomise_(model.prior_module, seed=3, std=1.0)
    z = torch.randn(5, 2, 3)  # (S, B, D)
    p_z = model.prior()
    # hand-written: log p(z) = logsumexp_k log N(z; mu(u_k), sigma(u_k)^2) - log K (Tomczak & Welling 2018, Eq. 9)
    params = model.encoder(model.prior_module.images())  # (K, 2D)
    loc, scale = params[:, :3], torch.nn.functional.softplus(params[:, 3:]) + model.posterior_min_scale
    log_n = (-0.5 * ((z[..., None, :] - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    expected = torch.logsumexp(log_n, dim=-1) - math.log(4)  # (S, B)
    torch.testing.assert_close(p_z.log_prob(z), expected)


def test_vamp_pseudo_inputs_start_from_data_unless_weights_are_loaded():
    torch.manual_seed(4)
    prior = VampPrior(latent_dim=2, num_components=5, in_shape=(1, 4, 4), activation="hardtanh", init="data")
    assert prior.pending_data_init
    x = torch.rand(3, 1, 4, 4)
    prior.init_from_data(x)
    torch.testing.assert_close(prior.images(), x[[0, 1, 2, 0, 1]])  # cycled when fewer images than K
    fresh = VampPrior(latent_dim=2, num_components=5, in_shape=(1, 4, 4), init="data")
    fresh.load_state_dict(prior.state_dict())
    assert not fresh.pending_data_init
    sig = VampPrior(latent_dim=2, num_components=3, in_shape=(1, 4, 4), activation="sigmoid", init="data")
    sig.init_from_data(x.clamp(0.01, 0.99))
    torch.testing.assert_close(sig.images(), x.clamp(0.01, 0.99), atol=1e-5, rtol=0)


def test_uniform_mixture_weights_are_one_over_k():
    comps = Independent(Normal(torch.randn(6, 2), torch.rand(6, 2) + 0.5), 1)
    z = torch.randn(3, 2)
    expected = torch.logsumexp(comps.log_prob(z[:, None, :]), dim=-1) - math.log(6)
    torch.testing.assert_close(uniform_mixture(comps).log_prob(z), expected)


# ---------------------------------------------------------------- the rate


def test_monte_carlo_rate_matches_analytic_kl_within_monte_carlo_error():
    torch.manual_seed(5)
    q = Independent(Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.3), 1)
    p = Independent(Normal(torch.randn(3), torch.rand(3) + 0.5), 1)
    # the same density as p, as a one-component mixture: not a diagonal Gaussian, so the rate is Monte Carlo
    as_mixture = gaussian_mixture(torch.zeros(1), p.base_dist.loc[None], p.base_dist.scale[None])
    assert rate_estimator(q, p) == ANALYTIC and rate_estimator(q, as_mixture) == MONTE_CARLO
    k = 20000
    z = q.rsample((k,))
    terms = q.log_prob(z) - as_mixture.log_prob(z)  # (K, B)
    stderr = terms.std(0) / math.sqrt(k)
    mc, exact = rate(q, as_mixture, z), kl_divergence(q, p)
    assert ((mc - exact).abs() < 4 * stderr).all(), (mc, exact, stderr)
    torch.testing.assert_close(rate(q, p, z), exact)  # analytic path ignores z


def test_free_bits_with_a_monte_carlo_rate_is_refused_by_the_objective():
    q = Independent(Normal(torch.zeros(2, 3), torch.ones(2, 3)), 1)
    p = gaussian_mixture(torch.zeros(2), torch.randn(2, 3), torch.ones(2, 3))
    z = q.rsample((1,))
    p_x = Independent(Normal(torch.zeros(1, 2, 4), 1.0), 1)
    with pytest.raises(ValueError, match="factorised rate"):
        elbo(flat_terms(q, p, z, p_x, torch.zeros(2, 4)), free_bits=0.5)


# ---------------------------------------------------------------- the linear-Gaussian oracle


def iaf_around(q: Independent, seed: int | None, steps: int = 2) -> IAFDistribution:
    """An IAF (float64) on base q: the identity when seed is None (zero-initialised outputs), random otherwise."""
    d = q.event_shape[0]
    orders = [list(range(d))[:: 1 if t % 2 == 0 else -1] for t in range(steps)]
    mades = torch.nn.ModuleList(MADE(d, 6, 1, 2, order) for order in orders)
    if seed is not None:
        randomise_(mades, seed=seed, std=0.2)
    return IAFDistribution(q, mades.double(), torch.randn(q.batch_shape[0], 2, dtype=torch.float64))


def oracle_prior(model: LinearGaussian, kind: str):
    """N(0, I) as each prior family can express it: itself, or a mixture whose components are all N(0, I)."""
    if kind == "standard_normal":
        return model.prior()
    zeros = torch.zeros(3, model.latent_dim, dtype=torch.float64)
    return MixtureSameFamily(Categorical(logits=torch.randn(3, dtype=torch.float64)),
                             Independent(Normal(zeros, torch.ones_like(zeros)), 1))


def exact_posterior(model: LinearGaussian, x: torch.Tensor) -> Independent:
    m, S = model.exact_posterior(x)
    return diagonal_posterior(m, S.diagonal().sqrt().expand_as(m))


def orthogonal_model() -> LinearGaussian:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 3, generator=g, dtype=torch.float64))
    return LinearGaussian(q * torch.tensor([1.5, 0.8, 0.4], dtype=torch.float64),
                          torch.randn(6, generator=g, dtype=torch.float64), s=0.6)


# VampPrior cannot express N(0, I) exactly (a mixture of posteriors): it is left out of the oracle.
@pytest.mark.parametrize("prior", ["standard_normal", "mog"])
@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_oracle_exact_posterior_gives_elbo_equal_iwae_equal_log_px(prior, posterior):
    model = orthogonal_model()
    x = model.sample_x(4)
    q = exact_posterior(model, x)
    q = iaf_around(q, seed=None) if posterior == "iaf" else q  # the identity flow: still the exact posterior
    torch.manual_seed(0)
    z = q.rsample((50,))
    p_z = oracle_prior(model, prior)
    out = iwae(flat_terms(q, p_z, z, model.likelihood(z), x, with_log_q=True))
    log_px = model.log_px(x)
    torch.testing.assert_close(out.terms["iwae"], log_px, atol=1e-9, rtol=0)
    log_w = log_weights(q, p_z, z, model.likelihood(z).log_prob(x))  # (K, B): each one equals log p(x)
    torch.testing.assert_close(log_w, log_px.expand_as(log_w), atol=1e-9, rtol=0)


@pytest.mark.parametrize("prior", ["standard_normal", "mog"])
@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
def test_oracle_bounds_order_and_rise_with_k(prior, posterior):
    model = orthogonal_model()
    x = model.sample_x(4, seed=2)
    m, S = model.exact_posterior(x)
    sd = S.diagonal().sqrt()
    q = diagonal_posterior(m + 0.5 * sd, 1.5 * sd.expand_as(m))
    q = iaf_around(q, seed=7) if posterior == "iaf" else q
    p_z, log_px = oracle_prior(model, prior), model.log_px(x)
    torch.manual_seed(1)
    means = {}
    for k, replicates in ((1, 4000), (10, 1000), (100, 200)):
        z = q.rsample((k, replicates))  # (k, R, B, D)
        log_w = log_weights(q, p_z, z, model.likelihood(z).log_prob(x))  # (k, R, B)
        means[k] = iwae_bound(log_w).mean(0)  # E[L_k] estimated over R replicates: (B,)
    z = q.rsample((4000,))
    elbo_mc = elbo(flat_terms(q, p_z, z, model.likelihood(z), x)).terms["elbo"]  # Monte Carlo rate for mog / iaf
    assert (elbo_mc < log_px).all() and (means[100] < log_px + 0.01).all()
    assert (means[1] - elbo_mc).abs().max() < 0.1  # L_1 is the ELBO
    assert (means[1] < means[10]).all() and (means[10] < means[100]).all()


# ---------------------------------------------------------------- models and artifacts


DEFAULT_KEYS_PREFIXES = ("encoder.", "decoder.")


def test_defaults_reproduce_todays_model_and_state_dict_keys():
    model = VAE([1, 8, 8], latent_dim=3)
    assert model.rate_estimator == "analytic_kl"
    assert all(k.startswith(DEFAULT_KEYS_PREFIXES) for k in model.state_dict())
    torch.manual_seed(0)
    a = VAE([1, 8, 8], latent_dim=3).state_dict()
    torch.manual_seed(0)
    b = VAE([1, 8, 8], latent_dim=3, prior="mog").state_dict()  # the nets are built first: same init
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("prior,posterior", COMBINATIONS)
def test_save_load_round_trip_is_exact_for_every_combination(tmp_path, prior, posterior):
    torch.manual_seed(0)
    model = VAE([1, 8, 8], latent_dim=3, net={"hidden_dims": [16]}, prior=prior, posterior=posterior,
                prior_components=4, posterior_steps=2, posterior_hidden_dim=12, posterior_context_dim=5).eval()
    randomise_(model.prior_module, seed=1)
    randomise_(model.posterior_module, seed=2, std=0.1)
    publish.save_artifact(tmp_path / "artifact", model)
    loaded = load_artifact(tmp_path / "artifact")
    config = json.loads((tmp_path / "artifact" / "config.json").read_text())
    assert config["prior"] == prior and config["posterior"] == posterior
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    for m in (model, loaded):
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            q_z = m.encode(x)
            z = q_z.rsample((2,))
            m.outputs = [z, q_z.log_prob(z), m.prior().log_prob(z), m(x), m.sample(4)]
    for got, want in zip(loaded.outputs, model.outputs):
        assert torch.equal(got, want)


def test_an_artifact_written_before_priors_existed_still_loads(tmp_path):
    model = VAE([1, 8, 8], latent_dim=3, net={"hidden_dims": [16]}).eval()
    publish.save_artifact(tmp_path / "artifact", model)
    path = tmp_path / "artifact" / "config.json"
    config = json.loads(path.read_text())
    new_keys = {"prior", "prior_components", "prior_activation", "prior_init", "posterior", "posterior_steps",
                "posterior_hidden_dim", "posterior_hidden_layers", "posterior_context_dim"}
    old = {k: v for k, v in config.items() if k not in new_keys}
    path.write_text(json.dumps(old))
    loaded = load_artifact(tmp_path / "artifact")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x)) and loaded.rate_estimator == "analytic_kl"


def test_conditional_vamp_is_refused_in_one_line_and_conditional_mog_samples_per_class():
    from vae_lab.errors import ConfigError

    with pytest.raises(ConfigError, match="prior=vamp does not support model.conditional=true"):
        VAE([1, 8, 8], latent_dim=2, conditional=True, num_classes=3, prior="vamp")
    model = VAE([1, 8, 8], latent_dim=2, conditional=True, num_classes=3, prior="mog", posterior="iaf")
    y = torch.tensor([0, 1, 2])
    assert model.sample(3, y).shape == (3, 1, 8, 8)
    q_z = model.encode(torch.rand(3, 1, 8, 8), y)
    assert q_z.log_prob(q_z.rsample((2,))).shape == (2, 3)
