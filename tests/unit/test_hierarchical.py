"""The hierarchical family against oracles: a one-group reduction computed by hand, torch's KL per group, a
two-group linear-Gaussian hierarchy with log p(x) in closed form (ELBO <= IWAE-k <= log p(x)), and its interface:
shapes, seeds, temperature, reconstruct_keep, gradients, bf16 autocast, bad input, save -> load."""

import json
import math

import pytest
import torch
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from oracles import LinearGaussianHierarchy
from vae_lab import artifact, publish
from vae_lab.distributions.gaussian import DiagonalGaussian
from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.model import build_model, family_class
from vae_lab.model.hierarchical import HierarchicalVAE, draw_group, hierarchy_terms
from vae_lab.model.interface import LatentGroup, ModelFamily, flat_terms
from vae_lab.model_args import FAMILIES
from vae_lab.objectives import elbo, iwae
from vae_lab.objectives.iwae import iwae_bound
from vae_lab.objectives.kl_balancing import kl_balancing

TINY = dict(channels=8, latent_channels=2)


def tiny(in_shape=(1, 8, 8), **kwargs) -> HierarchicalVAE:
    torch.manual_seed(0)
    return HierarchicalVAE(list(in_shape), **{**TINY, **kwargs})


def binary(n: int = 3, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("in_shape, kwargs, shapes", [
    ((1, 28, 28), {}, [(4, 7, 7)] * 2 + [(4, 14, 14)] * 2),  # the defaults on MNIST
    ((3, 32, 32), dict(downsamples=3, latent_resolutions=3, groups_per_resolution=1, free_level_cells=1),
     [(4, 4, 4), (4, 8, 8), (4, 16, 16)]),
    ((1, 28, 28), dict(downsamples=0, latent_resolutions=1, groups_per_resolution=1), [(4, 28, 28)]),
    ((1, 4, 4), dict(downsamples=2, latent_resolutions=1, groups_per_resolution=3), [(4, 1, 1)] * 3),
])
def test_groups_are_derived_from_the_image_size_top_first(in_shape, kwargs, shapes):
    model = HierarchicalVAE(list(in_shape), channels=8, **kwargs)
    groups = model.latent_groups()
    assert groups == tuple(LatentGroup(f"group_{l:02d}", s) for l, s in enumerate(shapes))
    assert model.latent_size == sum(math.prod(s) for s in shapes)
    x = torch.rand(2, *in_shape)
    t = model.terms(x, num_samples=3, with_log_q=True)
    assert t.p_x.batch_shape == (3, 2) and t.log_px_given_z.shape == (3, 2)
    assert t.rate.shape == (2, len(shapes)) and t.kl_units.shape == (2, len(shapes))
    assert t.log_q.shape == t.log_p.shape == (3, 2) and t.rate_estimator == "analytic_kl"
    assert t.z is None and t.q_z is None and t.p_z is None
    assert t.reconstruction().shape == x.shape and model.sample(5).shape == (5, *in_shape)
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("kwargs, names", [
    (dict(downsamples=3), ["model.downsamples=3", "28x28", "model.downsamples <= 2"]),
    (dict(downsamples=2, latent_resolutions=4), ["model.latent_resolutions=4", "model.downsamples >= 3"]),
])
def test_groups_that_do_not_fit_the_image_are_refused_in_one_line(kwargs, names):
    with pytest.raises(ConfigError) as err:
        HierarchicalVAE([1, 28, 28], **kwargs)
    assert "\n" not in str(err.value) and all(name in str(err.value) for name in names)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan")])
def test_temperature_at_most_zero_is_refused_in_one_line(temperature):
    model = tiny()
    for call in (lambda: model.sample(2, temperature=temperature),
                 lambda: model.reconstruct_keep(binary(), keep=1, temperature=temperature)):
        with pytest.raises(ConfigError, match="temperature") as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"keep=5 is invalid: must be an integer in \[0, 4\]"):
        model.reconstruct_keep(binary(), keep=5)


# ---------------------------------------------------------------- oracles: one group by hand, torch's KL


@pytest.mark.parametrize("in_shape, downsamples", [((1, 4, 4), 2), ((1, 8, 8), 1)])  # a 1x1 group, a 4x4 group
def test_one_group_is_a_single_level_vae_computed_by_hand(in_shape, downsamples):
    model = tiny(in_shape, downsamples=downsamples, latent_resolutions=1, groups_per_resolution=1)
    x, k, seed = binary(3, in_shape), 2, 7
    t = model.terms(x, num_samples=k, seed=seed, with_log_q=True)

    # by hand, from the same module's nets: q(z|x), p(z) (the top prior), z = mu + sigma eps, p(x|z)
    enc, dec = model.encoder, model.decoder
    (d, features), = enc(x).items()
    block = dec.groups[0]
    h = dec.start(k * 3)
    floor, offset = model.min_scale, math.log(math.e - 1)
    q_loc, q_raw = block.posterior(h, features.repeat(k, 1, 1, 1)).chunk(2, dim=1)
    (p_loc, p_raw), h = (lambda out: (out[0].chunk(2, dim=1), out[1]))(block.prior(h))
    q_scale = torch.nn.functional.softplus(q_raw + offset) + floor
    p_scale = torch.nn.functional.softplus(p_raw + offset) + floor
    eps = torch.randn(q_loc.shape, generator=torch.Generator().manual_seed(seed))  # (K B, Z, h, w), k-major
    z = q_loc + q_scale * eps
    logits = dec.finish(block.merge(h, z)).reshape(k, 3, *in_shape)
    log_px_given_z = Independent(Bernoulli(logits=logits), 3).log_prob(x)  # (K, B)
    q, p = Normal(q_loc, q_scale), Normal(p_loc, p_scale)
    kl = kl_divergence(q, p).sum((1, 2, 3)).reshape(k, 3).mean(0)  # (B,)

    torch.testing.assert_close(t.log_px_given_z, log_px_given_z)
    torch.testing.assert_close(t.rate[:, 0], kl)
    out = elbo(t)
    torch.testing.assert_close(out.terms["elbo"], log_px_given_z.mean(0) - kl)

    # and the same numbers through the one-group interface maths (flat_terms) on the flattened code
    flat = lambda a: a.reshape(k, 3, -1)  # noqa: E731  (K, B, Z h w)
    q_flat = DiagonalGaussian(Normal(flat(q_loc)[0], flat(q_scale)[0]), 1)
    p_flat = DiagonalGaussian(Normal(flat(p_loc)[0], flat(p_scale)[0]), 1)  # the top prior: the same for all k
    ref = flat_terms(q_flat, p_flat, flat(z), t.p_x, x, with_log_q=True)
    torch.testing.assert_close(t.rate, ref.rate)
    torch.testing.assert_close(t.log_q, ref.log_q)
    torch.testing.assert_close(t.log_p, ref.log_p)
    torch.testing.assert_close(iwae(t).terms["iwae"], iwae(ref).terms["iwae"])


def test_each_group_kl_is_torch_kl_of_its_normals_and_they_sum_to_the_rate():
    model = tiny()
    x, k = binary(4), 3
    t = model.terms(x, num_samples=k, seed=11, with_log_q=True)
    draws = model.hierarchy(x, num_samples=k, seed=11, with_log_q=True).draws
    assert len(draws) == len(model.latent_groups()) == 4
    for l, draw in enumerate(draws):
        q = Normal(draw.q.loc, draw.q.scale)
        p = Normal(draw.p.loc, draw.p.scale)
        assert tuple(draw.z.shape[1:]) == model.latent_groups()[l].shape
        by_torch = kl_divergence(q, p).flatten(1).sum(-1).reshape(k, 4)  # (K, B) at the sampled z_<l
        torch.testing.assert_close(t.rate[:, l], by_torch.mean(0))
        torch.testing.assert_close(draw.log_q, q.log_prob(draw.z).flatten(1).sum(-1))
        torch.testing.assert_close(draw.log_p, p.log_prob(draw.z).flatten(1).sum(-1))
    torch.testing.assert_close(t.kl_units, t.rate)
    torch.testing.assert_close(elbo(t).terms["rate"], t.rate.sum(-1))
    torch.testing.assert_close(t.log_q, sum(d.log_q for d in draws).reshape(k, 4))
    # the analytic KL is the expectation of log q - log p: a Monte Carlo check over many samples
    t = model.terms(x, num_samples=4000, seed=0, with_log_q=True)
    mc = t.log_q - t.log_p  # (K, B)
    stderr = mc.std(0) / math.sqrt(4000)
    assert ((mc.mean(0) - t.rate.sum(-1)).abs() < 4 * stderr + 1e-3).all()


# ---------------------------------------------------------------- oracle: a linear-Gaussian hierarchy


class LinearGaussianHierarchyModel(ModelFamily):
    """The two-group linear-Gaussian hierarchy behind the family's maths (draw_group, hierarchy_terms): top-down
    diagonal posteriors q(z1|x), q(z2|x, z1) from the exact joint posterior, means shifted by `shift` stds and
    scales times `widen` (1, 1 would be the exact posterior only were its covariances diagonal)."""

    def __init__(self, oracle: LinearGaussianHierarchy, shift: float = 0.5, widen: float = 1.5):
        self.oracle, self.shift, self.widen = oracle, shift, widen
        self.d1, self.d2 = oracle.A.shape[1], oracle.A.shape[0]

    def latent_groups(self):
        return LatentGroup("group_00", (self.d1,)), LatentGroup("group_01", (self.d2,))

    def terms(self, x, y=None, num_samples=1, seed=None, with_log_q=False):
        o, k, b, d1 = self.oracle, num_samples, x.shape[0], self.d1
        g = None if seed is None else torch.Generator().manual_seed(seed)
        m, S = o.joint_posterior(x)  # (B, d1 + d2), (d1 + d2, d1 + d2)
        m = m.repeat(k, 1)  # (K B, d1 + d2), k-major
        gain = S[d1:, :d1] @ torch.linalg.inv(S[:d1, :d1])  # z2 | z1, x: m2 + gain (z1 - m1)
        sd1 = S[:d1, :d1].diagonal().sqrt()
        sd2 = (S[d1:, d1:] - gain @ S[:d1, d1:]).diagonal().sqrt()
        eps = lambda n: torch.randn(k * b, n, generator=g, dtype=x.dtype)  # noqa: E731
        q1 = Normal(m[:, :d1] + self.shift * sd1, self.widen * sd1.expand(k * b, d1))
        p1 = Normal(torch.zeros(k * b, d1, dtype=x.dtype), 1.0)
        top = draw_group(p1, q1, eps(d1), with_log_q=with_log_q)
        q2 = Normal(m[:, d1:] + (top.z - m[:, :d1]) @ gain.T + self.shift * sd2, self.widen * sd2.expand(k * b, -1))
        p2 = Normal(top.z @ o.A.T, o.s2)
        low = draw_group(p2, q2, eps(self.d2), with_log_q=with_log_q)
        p_x = Independent(Normal((low.z @ o.B.T + o.b).reshape(k, b, -1), o.s), 1)  # batch (K, B)
        return hierarchy_terms(x, [top, low], p_x, p_x.log_prob(x), k, with_log_q, lambda: p_x.mean[0])


def test_linear_gaussian_hierarchy_orders_elbo_iwae_and_log_px():
    oracle = LinearGaussianHierarchy.random(seed=3)
    x = oracle.sample_x(4, seed=2)
    model = LinearGaussianHierarchyModel(oracle)
    log_px = oracle.log_px(x)
    torch.manual_seed(0)
    # the ELBO from the model's terms (analytic per-group KL), Monte Carlo over many samples of z
    t = model.terms(x, num_samples=20000, seed=1)
    per_sample = t.log_px_given_z - t.rate.sum(-1)  # (K, B); the rate is already averaged over z_<l
    elbo_mean, elbo_err = per_sample.mean(0), t.log_px_given_z.std(0) / math.sqrt(20000)
    assert (log_px - elbo_mean > 0.3).all()  # the posterior is far enough off for the bounds to differ

    means, errs = {}, {}
    for k, replicates in ((1, 4000), (10, 400), (100, 100), (1000, 20), (5000, 8)):
        log_w, _ = model.log_weights(x, None, k * replicates)  # (k R, B)
        est = iwae_bound(log_w.reshape(replicates, k, -1).transpose(0, 1))  # (R, B): independent L_k
        means[k], errs[k] = est.mean(0), est.std(0) / math.sqrt(replicates)
    assert ((means[1] - elbo_mean).abs() < 4 * (errs[1] + elbo_err)).all()  # E[L_1] is the ELBO
    ks = sorted(means)
    for small, large in zip(ks, ks[1:]):  # L_k non-decreasing in k (Burda et al. 2016, Theorem 1)
        assert (means[large] >= means[small] - 4 * (errs[small] + errs[large])).all(), (small, large)
    for k in ks:  # and a lower bound of log p(x)
        assert (means[k] <= log_px + 4 * errs[k] + 1e-9).all(), k
    assert (means[10] - means[1] > 0.1).all()
    assert ((log_px - means[5000]).abs() < 0.02).all()  # L_k -> log p(x)


def test_exact_top_down_posterior_makes_every_bound_log_px():
    """A hierarchy whose joint posterior has diagonal blocks (orthogonal, matched loadings): q = p(z|x) exactly,
    so every importance weight is p(x) and ELBO = IWAE-k = log p(x) for any samples."""
    eye = torch.eye(2, dtype=torch.float64)
    oracle = LinearGaussianHierarchy(A=1.3 * eye, s2=0.6, B=torch.cat([0.9 * eye, torch.zeros(1, 2, dtype=torch.float64)]),
                                     b=torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), s=0.4)
    x = oracle.sample_x(3)
    model = LinearGaussianHierarchyModel(oracle, shift=0.0, widen=1.0)
    log_w, _ = model.log_weights(x, None, 50)
    torch.testing.assert_close(log_w, oracle.log_px(x).expand(50, 3), atol=1e-9, rtol=0)


# ---------------------------------------------------------------- the real model: interface behaviour


def test_seed_reproduces_the_pass_and_leaves_the_global_rng_alone():
    model = tiny()
    x = binary()
    state = torch.get_rng_state()
    a = model.terms(x, num_samples=2, seed=5, with_log_q=True)
    b = model.terms(x, num_samples=2, seed=5, with_log_q=True)
    assert torch.equal(torch.get_rng_state(), state)
    for name in ("log_px_given_z", "rate", "log_q", "log_p"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    c = model.terms(x, num_samples=2, seed=6)
    assert not torch.equal(a.log_px_given_z, c.log_px_given_z)
    assert not torch.equal(a.log_px_given_z[0], a.log_px_given_z[1])  # the K samples differ
    torch.testing.assert_close(a.reconstruction(), model.reconstruct(x))  # posterior means: no noise


def test_temperature_and_reconstruct_keep():
    model = tiny()
    with torch.no_grad():  # move the priors off their zero-initialised start
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = binary(4)
    cold = model.sample(3, temperature=1e-8)  # every prior at its mean: one image, whatever the noise
    torch.testing.assert_close(cold[0], cold[1])
    assert not torch.allclose(model.sample(3)[0], model.sample(3)[1])
    # every group kept: the reconstruction; none kept, temperature ~0: the cold sample
    torch.testing.assert_close(model.reconstruct_keep(x, keep=4), model.reconstruct(x))
    torch.testing.assert_close(model.reconstruct_keep(x, keep=0, temperature=1e-8), cold[:1].expand(4, -1, -1, -1))
    # the top group kept, the rest at their prior means: neither the reconstruction nor one image for all x
    kept = model.reconstruct_keep(x, keep=1, temperature=1e-8)
    assert not torch.allclose(kept, model.reconstruct(x)) and not torch.allclose(kept[0], kept[1])


def test_conditional_model_reads_its_labels():
    model = tiny(conditional=True, num_classes=3)
    x, y = binary(3), torch.tensor([0, 1, 2])
    t = model.terms(x, y, num_samples=2, seed=0)
    other = model.terms(x, (y + 1) % 3, num_samples=2, seed=0)
    with torch.no_grad():
        model.decoder.cond.weight.add_(1.0)
    assert not torch.equal(t.rate, other.rate)
    assert model.sample(3, y).shape == (3, 1, 8, 8)
    assert not torch.equal(model.sample(2, torch.tensor([0, 0]), temperature=1e-8),
                           model.sample(2, torch.tensor([1, 1]), temperature=1e-8))
    with pytest.raises(ConfigError, match="class label"):
        model.terms(x)
    with pytest.raises(ConfigError, match="num_classes >= 1"):
        HierarchicalVAE([1, 8, 8], conditional=True)


def test_gradients_reach_every_weight_and_are_finite():
    model = tiny()
    t = model.terms(binary(4), num_samples=2)
    (elbo(t).loss + iwae(model.terms(binary(4), num_samples=3, with_log_q=True)).loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.decoder.groups[0].prior_head.convs[-1].weight.grad.abs().sum() > 0


def test_bf16_autocast_forward_is_finite_with_float32_log_probs():
    model = tiny(likelihood="discretized_logistic_mixture", likelihood_components=3)
    x = torch.randint(0, 256, (3, 1, 8, 8)).float() / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        t = model.terms(x, num_samples=2, with_log_q=True)
        samples = model.sample(2)
    for name in ("log_px_given_z", "rate", "log_q", "log_p"):
        value = getattr(t, name)
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
    assert torch.isfinite(samples).all()


def test_log_weights_without_gradients_run_in_chunks_of_the_same_draws(monkeypatch):
    import vae_lab.model.hierarchical as hierarchical

    model = tiny()
    x = binary(2)
    torch.manual_seed(3)
    whole, _ = model.log_weights(x, None, 5)  # with gradients: one pass of 5 samples
    assert whole.shape == (5, 2) and whole.requires_grad
    monkeypatch.setattr(hierarchical, "MAX_DECODED", 2)  # one sample of 2 images per chunk
    with torch.no_grad():
        torch.manual_seed(3)
        chunked, log_px = model.log_weights(x, None, 5)
        torch.manual_seed(3)
        one_by_one = [model.terms(x, num_samples=1, with_log_q=True) for _ in range(5)]
    torch.testing.assert_close(chunked, torch.cat([t.log_weights() for t in one_by_one]))
    torch.testing.assert_close(log_px, torch.cat([t.log_px_given_z for t in one_by_one]))


# ---------------------------------------------------------------- KL balancing


def test_kl_balancing_by_hand():
    rate = torch.tensor([[1.0, 4.0], [3.0, 0.0]], requires_grad=True)  # (B, G): batch means 2, 2
    gamma = kl_balancing(rate, [1, 4], kl_weight=0.5)
    # (2 + 0.01) / 1 and (2 + 0.01) / 4, scaled to sum to G = 2: 2 * [1, 1/4] / (5/4) = [1.6, 0.4]
    torch.testing.assert_close(gamma, torch.tensor([1.6, 0.4]))
    assert not gamma.requires_grad
    torch.testing.assert_close(kl_balancing(rate, [1, 4], kl_weight=1.0), torch.ones(2))  # after warm-up: the ELBO
    collapsed = kl_balancing(torch.tensor([[0.0, 5.0, -1.0]]), torch.tensor([2, 2, 2]), kl_weight=0.0)
    # a Monte Carlo rate may be negative: |KL| is balanced; a collapsed group keeps eps / size
    torch.testing.assert_close(collapsed, 3 * torch.tensor([0.01, 5.01, 1.01]) / 6.03)
    torch.testing.assert_close(collapsed.sum(), torch.tensor(3.0))


# ---------------------------------------------------------------- registry and artifacts


def test_registered_with_one_rule_per_init_arg():
    import inspect

    spec = FAMILIES["hierarchical"]
    assert (spec.class_name, spec.module) == ("HierarchicalVAE", "vae_lab.model.hierarchical")
    args = set(inspect.signature(HierarchicalVAE.__init__).parameters) - {"self"}
    assert {rule.key for rule in spec.rules} | {"in_shape", "num_classes"} == args
    model = build_model({"family": "hierarchical", "in_shape": [1, 8, 8], **TINY})
    assert isinstance(model, HierarchicalVAE) and model.family == "hierarchical" and not model.flat_code
    config = artifact.model_config(model)
    with pytest.raises(CheckpointError, match="downsamples=-1 is invalid"):
        artifact.check_config({**config, "downsamples": -1}, "config.json")
    with pytest.raises(CheckpointError, match=r"model.downsamples=4 does not fit 8x8"):
        artifact.build_model(HierarchicalVAE, {**artifact.check_config(config, "c"), "downsamples": 4}, "config.json")


def outputs(model: HierarchicalVAE, y=None) -> list[torch.Tensor]:
    x = binary(3, model.in_shape, seed=4)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        t = model.terms(x, y, num_samples=2, seed=1, with_log_q=True)
        torch.manual_seed(2)
        samples = model.sample(3, y)
        torch.manual_seed(2)
        kept = model.reconstruct_keep(x, y, keep=1)
        return [t.log_px_given_z, t.rate, t.log_weights(), samples, kept, model.reconstruct(x, y)]


@pytest.mark.parametrize("kwargs, y", [
    ({}, None),
    (dict(conditional=True, num_classes=3, likelihood="discretized_logistic_mixture", likelihood_components=2),
     torch.tensor([0, 2, 1])),
])
def test_save_then_load_gives_identical_outputs(tmp_path, kwargs, y):
    model = tiny(**kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    config = artifact.model_config(model)
    assert config["_class_name"] == "HierarchicalVAE"
    out = artifact.write_artifact(tmp_path / "artifact", {
        artifact.CONFIG_NAME: json.dumps(config).encode(), artifact.WEIGHTS_NAME: artifact.weights_bytes(model)})
    loaded = artifact.load_artifact(out, family_class)
    assert type(loaded) is HierarchicalVAE and not loaded.training
    for got, want in zip(outputs(loaded, y), outputs(model, y)):
        assert torch.equal(got, want)
    again = HierarchicalVAE.from_pretrained(out)
    for got, want in zip(outputs(again, y), outputs(model, y)):
        assert torch.equal(got, want)


def test_publish_save_artifact_round_trip(tmp_path):
    model = tiny().eval()
    out = publish.save_artifact(tmp_path / "artifact", model)
    loaded = artifact.load_artifact(out, family_class)
    for got, want in zip(outputs(loaded), outputs(model)):
        assert torch.equal(got, want)
