"""Likelihoods against oracles: masses sum to 1, densities integrate to 1, float64/mpmath references, gradients."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.special import expit

from vae_lab.distributions import LIKELIHOODS
from vae_lab.distributions.continuous_bernoulli import ContinuousBernoulliLogits, log_normalizer
from vae_lab.distributions.discretized import Discretized
from vae_lab.distributions.logistic_mixture import DiscretizedLogisticMixture, from_raw, num_params
from vae_lab.model import VAE

LEVELS = torch.arange(256, dtype=torch.float32) / 255  # every value an 8-bit pixel can take
DISCRETE = sorted(name for name, lik in LIKELIHOODS.items() if lik.kind == "discrete")


def _raw(name: str, channels: int, seed: int, spread: float = 1.0, h: int = 1, w: int = 1, components: int = 3):
    g = torch.Generator().manual_seed(seed)
    return spread * torch.randn(4, LIKELIHOODS[name].out_channels(channels, components), h, w, generator=g)


def _all_levels_log_prob(p_x, channels: int) -> torch.Tensor:
    """log p of every joint value of a one-pixel image with 1 or 2 channels: (256^C, batch...)."""
    grids = torch.meshgrid(*[LEVELS] * channels, indexing="ij")
    x = torch.stack([g.reshape(-1) for g in grids], dim=-1)  # (256^C, C)
    x = x.view(-1, *[1] * len(p_x.batch_shape), channels, 1, 1)
    return p_x.log_prob(x)


# ---------------------------------------------------------------- discrete: probability masses on 256 levels


@pytest.mark.parametrize("name", DISCRETE)
@pytest.mark.parametrize("spread", [0.5, 3.0, 30.0])  # raw params from moderate to extreme
def test_discrete_likelihoods_put_mass_one_on_the_256_levels(name, spread):
    for seed, channels in ((0, 1), (1, 2)):
        p_x = LIKELIHOODS[name](_raw(name, channels, seed, spread), min_scale=1e-3, channels=channels, components=3)
        total = torch.logsumexp(_all_levels_log_prob(p_x, channels).double(), dim=0).exp()  # (4,)
        torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)


def test_fused_bernoulli_log_prob_is_differentiable_and_matches_torch_distributions():
    """Issue 30: the fused sum of log sigmoids backpropagates, with torch.distributions' value and gradient
    (300 pixels: two groups of 112 factors and a remainder)."""
    lik = LIKELIHOODS["bernoulli"]
    raw = (8 * torch.randn(3, 1, 10, 30, generator=torch.Generator().manual_seed(0))).requires_grad_()
    x = torch.bernoulli(torch.full((3, 1, 10, 30), 0.5), generator=torch.Generator().manual_seed(1))
    p_x = lik(raw)
    fused = lik.log_prob(p_x, x)
    (grad,) = torch.autograd.grad(fused.sum(), raw)
    reference = torch.distributions.Independent(torch.distributions.Bernoulli(logits=raw), 3).log_prob(x)
    (expected,) = torch.autograd.grad(reference.sum(), raw)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_bernoulli_masses_on_binary_pixels_sum_to_one():
    p_x = LIKELIHOODS["bernoulli"](_raw("bernoulli", 1, 0, spread=10.0))
    total = p_x.log_prob(torch.zeros(1, 1, 1)).exp() + p_x.log_prob(torch.ones(1, 1, 1)).exp()
    torch.testing.assert_close(total, torch.ones_like(total))


def _logistic_bin_probability(level: np.ndarray, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """P(level) of a logistic binned on [k -+ 1/2]/255 with open edge bins, in float64 (upper tail mirrored)."""
    a, b = (level - 0.5 - 255 * loc) / (255 * scale), (level + 0.5 - 255 * loc) / (255 * scale)
    cdf_a, cdf_b = np.where(level == 0, 0.0, expit(a)), np.where(level == 255, 1.0, expit(b))
    sf_a, sf_b = np.where(level == 0, 1.0, expit(-a)), np.where(level == 255, 0.0, expit(-b))
    return np.where(a > 0, sf_a - sf_b, cdf_b - cdf_a)  # F(b) - F(a), or 1 - F(a) - (1 - F(b)) in the upper tail


def _dmol_reference(logits, loc, scale, coeffs, x) -> np.ndarray:
    """log p(x) of PixelCNN++'s mixture written out pixel by pixel in float64. Shapes as DiscretizedLogisticMixture."""
    logits, loc, scale, coeffs, x = (np.asarray(t, dtype=np.float64) for t in (logits, loc, scale, coeffs, x))
    batch, k_comp, channels, height, width = loc.shape
    out = np.zeros(batch)
    for n in range(batch):
        for i in range(height):
            for j in range(width):
                level = np.rint(x[n, :, i, j] * 255)
                values = level / 255
                log_w = logits[n, :, i, j] - np.log(np.exp(logits[n, :, i, j]).sum())
                per_component = []
                for k in range(k_comp):
                    c = coeffs[n, k, :, i, j]
                    mean = loc[n, k, :, i, j].copy()
                    if channels == 3:  # Salimans et al. 2017, Eq. 3: G on R, B on R and G
                        mean[1] += c[0] * values[0]
                        mean[2] += c[1] * values[0] + c[2] * values[1]
                    p = _logistic_bin_probability(level, mean, scale[n, k, :, i, j])
                    per_component.append(log_w[k] + np.log(p).sum())
                out[n] += np.logaddexp.reduce(per_component)
    return out


def test_logistic_mixture_equals_a_float64_reference_edge_bins_included():
    g = torch.Generator().manual_seed(3)
    raw = torch.randn(5, num_params(3, 4), 3, 3, generator=g) * 2
    p_x = from_raw(raw, channels=3, components=4, min_scale=1e-3)
    x = torch.randint(0, 256, (5, 3, 3, 3), generator=g).float()
    x[0], x[1, 0], x[2, 2] = 0.0, 255.0, 255.0  # edge bins: whole images, a channel
    x = x / 255
    ours = p_x.log_prob(x)
    ref = _dmol_reference(p_x.logits, p_x.loc, p_x.scale, p_x.coeffs, x)
    torch.testing.assert_close(ours.double(), torch.from_numpy(ref), rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_rgb_logistic_mixture_puts_mass_one_on_all_256_cubed_colours():
    raw = _raw("discretized_logistic_mixture", 3, 4, spread=2.0, components=2)[:1]  # one pixel
    p_x = from_raw(raw, channels=3, components=2, min_scale=1e-3)
    r, gr = torch.meshgrid(LEVELS, LEVELS, indexing="ij")
    total = torch.tensor(-math.inf, dtype=torch.float64)
    for b in LEVELS:  # 256 x 65536 colours
        x = torch.stack([r.reshape(-1), gr.reshape(-1), b.expand(r.numel())], -1).view(-1, 1, 3, 1, 1)
        total = torch.logaddexp(total, torch.logsumexp(p_x.log_prob(x).double().reshape(-1), 0))
    assert total.exp().item() == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", DISCRETE)
def test_discrete_gradients_are_finite_at_extreme_parameters(name):
    n = 3 * LIKELIHOODS[name].out_channels(3, 3) * 4
    extremes = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4])
    raw = extremes[torch.arange(n) * 7 % 5].view(3, -1, 2, 2).requires_grad_(True)
    p_x = LIKELIHOODS[name](raw, min_scale=1e-3, channels=3, components=3)
    x = torch.tensor([0.0, 1.0, 128 / 255]).view(3, 1, 1, 1).expand(3, 3, 2, 2)
    log_p = p_x.log_prob(x)
    assert torch.isfinite(log_p).all()
    (grad,) = torch.autograd.grad(log_p.sum(), raw)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("family", ["logistic", "gaussian"])
def test_discretised_mean_and_samples_follow_the_level_probabilities(family):
    loc, scale = torch.tensor([-0.02, 0.3, 0.5, 1.1]), torch.tensor([0.05, 0.01, 0.4, 0.2])
    dist = Discretized(loc, scale, family)
    probs = dist.log_prob(LEVELS.view(-1, 1)).exp()  # (256, 4)
    torch.testing.assert_close(dist.mean, (probs * LEVELS.view(-1, 1)).sum(0), atol=1e-5, rtol=0)
    torch.manual_seed(0)
    samples = dist.sample((20000,))
    assert torch.isin(samples, LEVELS).all()
    torch.testing.assert_close(samples.mean(0), dist.mean, atol=4 * 0.4 / math.sqrt(20000), rtol=0)
    torch.testing.assert_close((samples == 0).float().mean(0), probs[0], atol=0.015, rtol=0)  # the edge bin


def test_mixture_mean_is_exact_for_grey_and_uncoupled_colour_and_samples_agree():
    g = torch.Generator().manual_seed(7)
    raw = torch.randn(2, num_params(1, 3), 1, 1, generator=g)
    grey = from_raw(raw, channels=1, components=3, min_scale=1e-3)
    probs = grey.log_prob(LEVELS.view(-1, 1, 1, 1, 1)).exp()  # (256, 2)
    torch.testing.assert_close(grey.mean.flatten(), (probs * LEVELS.view(-1, 1)).sum(0), atol=1e-5, rtol=0)

    raw = torch.randn(1, num_params(3, 2), 1, 1, generator=g)
    colour = from_raw(raw, channels=3, components=2, min_scale=1e-3)
    uncoupled = DiscretizedLogisticMixture(colour.logits, colour.loc, colour.scale, torch.zeros_like(colour.coeffs))
    torch.manual_seed(1)
    samples = uncoupled.sample((40000,))  # (S, 1, 3, 1, 1)
    assert torch.isin(samples, LEVELS).all() and samples.shape == (40000, 1, 3, 1, 1)
    torch.testing.assert_close(samples.mean(0), uncoupled.mean, atol=0.01, rtol=0)


def test_coupled_mixture_samples_follow_its_log_prob():
    g = torch.Generator().manual_seed(8)
    raw = torch.randn(1, num_params(2, 2), 1, 1, generator=g)
    raw[:, -2:] = 3.0  # strong coupling of channel 1 on channel 0 (tanh(3) = 0.995)
    p_x = from_raw(raw, channels=2, components=2, min_scale=1e-3)
    joint = _all_levels_log_prob(p_x, 2).exp().view(256, 256)  # p(x0, x1)
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-4)
    exact_mean = torch.stack([(joint.sum(1) * LEVELS).sum(), (joint.sum(0) * LEVELS).sum()])
    torch.manual_seed(2)
    samples = p_x.sample((40000,)).flatten(1)  # (S, 2)
    torch.testing.assert_close(samples.mean(0), exact_mean, atol=0.01, rtol=0)
    assert p_x.mean.flatten()[0].item() == pytest.approx(exact_mean[0].item(), abs=1e-5)  # first channel: exact


# ---------------------------------------------------------------- continuous Bernoulli


def _mp_log_c(l: float) -> float:
    l = mpmath.mpf(l)
    return float(mpmath.log(l / mpmath.tanh(l / 2)))


def test_continuous_bernoulli_log_normaliser_matches_mpmath():
    mpmath.mp.dps = 50
    magnitudes = np.concatenate([np.logspace(-6, 2, 81), [0.4999, 0.5, 0.5001, 16.0, 20.0, 30.0]])
    logits = np.concatenate([magnitudes, -magnitudes])
    ref = torch.tensor([_mp_log_c(l) for l in logits], dtype=torch.float64)
    torch.testing.assert_close(log_normalizer(torch.tensor(logits)), ref, rtol=1e-11, atol=0)  # float64
    torch.testing.assert_close(log_normalizer(torch.tensor(logits, dtype=torch.float32)).double(), ref,
                               rtol=3e-7, atol=0)  # float32: a few ulps
    assert log_normalizer(torch.tensor(0.0)).item() == pytest.approx(math.log(2.0), abs=1e-7)


def test_continuous_bernoulli_log_normaliser_gradient_matches_finite_differences():
    # (not within h of |l| = 0.5, where the series meets the closed form to ~1e-12)
    logits = torch.tensor([-100.0, -20, -3, -0.6, -0.51, -0.3, -1e-3, 0.0, 1e-4, 0.2, 0.49, 0.7, 5, 17, 100],
                          dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_normalizer(logits).sum(), logits)
    h = 1e-6
    with torch.no_grad():
        fd = (log_normalizer(logits + h) - log_normalizer(logits - h)) / (2 * h)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)
    # and against the derivative 1/l - 1/sinh(l) in closed form (l != 0)
    exact = [float(mpmath.diff(lambda t: mpmath.log(t / mpmath.tanh(t / 2)), mpmath.mpf(v))) for v in logits.tolist()]
    torch.testing.assert_close(grad, torch.tensor(exact, dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_continuous_bernoulli_density_integrates_to_one_for_logits_up_to_100():
    logits = torch.cat([torch.linspace(-100, 100, 41), torch.tensor([-1e-3, 1e-3, 16.0, -20.0, 30.0, 0.0])])
    x = torch.linspace(0, 1, 400_001)  # step 2.5e-6: the density at l = 100 has a 0.01 scale
    log_p = LIKELIHOODS["continuous_bernoulli"](logits.view(-1, 1, 1, 1)).base_dist.log_prob(x)  # (L, 1, 1, N)
    total = torch.trapezoid(log_p.double().exp(), x.double(), dim=-1).flatten()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)
    # torch's clamped normaliser does not (the bug this replaces): 0.16 at l = 100
    torch_total = torch.trapezoid(torch.distributions.ContinuousBernoulli(logits=torch.tensor([100.0]).view(-1, 1))
                                  .log_prob(x).double().exp(), x.double())
    assert torch_total.item() < 0.5


def test_continuous_bernoulli_mean_and_samples():
    logits = torch.tensor([-100.0, -8.0, -0.3, 0.0, 1e-4, 0.7, 20.0])
    dist = ContinuousBernoulliLogits(logits)
    x = torch.linspace(0, 1, 400_001, dtype=torch.float64)
    density = dist.log_prob(x.float().view(-1, 1)).double().exp()  # (N, L)
    mean = torch.trapezoid(density * x.view(-1, 1), x, dim=0)
    torch.testing.assert_close(dist.mean.double(), mean, atol=2e-6, rtol=1e-5)
    torch.manual_seed(0)
    samples = dist.sample((50000,))
    assert ((samples >= 0) & (samples <= 1)).all()
    torch.testing.assert_close(samples.mean(0), dist.mean, atol=4 * 0.29 / math.sqrt(50000), rtol=0)
    moderate = torch.tensor([-3.0, -0.3, 0.7, 5.0])  # where torch's clamped version is still right
    torch.testing.assert_close(ContinuousBernoulliLogits(moderate).log_prob(x[::1000].float().view(-1, 1)),
                               torch.distributions.ContinuousBernoulli(logits=moderate).log_prob(
                                   x[::1000].float().view(-1, 1)), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- densities on the dequantised scale


def test_learned_gaussian_integrates_to_one():
    raw = torch.tensor([[-3.0, -8.0], [0.0, -2.0], [4.0, 1.0]]).view(3, 2, 1, 1)  # [mean logit | raw scale]
    base = LIKELIHOODS["gaussian_learned"](raw, min_scale=1e-3).base_dist
    y = torch.linspace(-10, 11, 2_100_001)  # step 1e-5, against a smallest scale of 1.3e-3; +-8 scales of the widest
    total = torch.trapezoid(base.log_prob(y).double().exp(), y.double(), dim=-1).flatten()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-4, rtol=0)


# ---------------------------------------------------------------- through the model: pictures and sampling


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_likelihood_samples_and_draws_means_in_the_data_range(name, channels):
    torch.manual_seed(0)
    model = VAE(in_shape=(channels, 6, 6), latent_dim=2, net={"hidden_dims": [8]}, likelihood=name,
                likelihood_components=2).eval()
    for mean in (True, False):
        images = model.sample(5, mean=mean)
        assert images.shape == (5, channels, 6, 6) and torch.isfinite(images).all()
        if name != "gaussian_learned" and name != "gaussian":  # Gaussian samples are not bounded
            assert images.min() >= 0 and images.max() <= 1
    x = torch.rand(3, channels, 6, 6)
    assert model.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_log_probs_are_float32_under_bf16_autocast(name):
    """A decoder under bf16 autocast hands over bf16 output: the likelihood computes in float32 from it."""
    raw = _raw(name, 3, 9, spread=2.0, h=4, w=4).to(torch.bfloat16)
    x = torch.randint(0, 256, (4, 3, 4, 4), generator=torch.Generator().manual_seed(9)).float() / 255
    kwargs = {"min_scale": 1e-3, "channels": 3, "components": 3}
    plain = LIKELIHOODS[name](raw, **kwargs).log_prob(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = LIKELIHOODS[name](raw, **kwargs).log_prob(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain)
