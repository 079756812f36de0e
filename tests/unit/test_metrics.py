"""Metrics against hand computations: bits/dim, active units, KL per dim, SSIM/PSNR, and a reference evaluation loop
(logged by a real training run: tests/integration/test_metrics_logged.py)."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from vae_lab.evaluation import BITS_KEYS, RESULT_KEYS, evaluate
from vae_lab.metrics import ActiveUnits, KLPerDimension, ReconstructionQuality, bits_per_dim, ssim_per_image
from vae_lab.model import VAE
from vae_lab.units import Status


def test_bits_per_dim_by_hand():
    # A mass on {0,1}^4 of 2^-4: one bit per pixel.
    assert bits_per_dim(torch.tensor(-4 * math.log(2)), 4).item() == pytest.approx(1.0)
    # The uniform mass on 256 levels: 8 bits per pixel.
    assert bits_per_dim(torch.tensor(-3 * math.log(256)), 3).item() == pytest.approx(8.0)
    # The uniform density on [0,1]^3 (log p = 0) on pixels dequantised to (k + u)/256 puts 1/256 on every bin.
    assert bits_per_dim(torch.tensor(0.0), 3, log_bin_width=-math.log(256)).item() == pytest.approx(8.0)
    # log p = -10 nats over 2 pixels: (10 + 2 ln 256) / (2 ln 2) = 7.2135 + 8.
    assert bits_per_dim(torch.tensor(-10.0), 2, -math.log(256)).item() == pytest.approx(15.213475, abs=1e-5)


def test_active_units_constant_encoder_is_zero_identity_is_latent_dim():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(300, 5, generator=g)  # each coordinate has variance ~1
    collapsed, identity = ActiveUnits(5), ActiveUnits(5)
    for part in data.split(64):  # uneven batches: 64, ..., 44
        collapsed.update(torch.full_like(part, 0.7))  # E_q[z|x] the same for every x
        identity.update(part)  # E_q[z|x] = x
    assert collapsed.compute().item() == 0
    assert identity.compute().item() == 5
    torch.testing.assert_close(identity.variance(), data.double().var(0))  # sum/sum-of-squares == two-pass


def test_active_units_threshold_is_burda_001():
    g = torch.Generator().manual_seed(1)
    means = torch.randn(2000, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.2, 0.05, 0.0])
    metric = ActiveUnits(4)
    metric.update(means)
    assert metric.threshold == 0.01
    assert metric.compute().item() == 2  # variances 1, 0.04 active; 0.0025 and 0 not


def test_kl_per_dimension_matches_torch_distributions():
    g = torch.Generator().manual_seed(2)
    loc, scale = torch.randn(50, 3, generator=g), torch.rand(50, 3, generator=g) + 0.1
    expected = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).double().mean(0)  # (D,)
    metric = KLPerDimension(3)
    for lo, sc in zip(loc.split(16), scale.split(16)):
        metric.update(kl_divergence(Normal(lo, sc), Normal(0.0, 1.0)))
    torch.testing.assert_close(metric.compute(), expected)


def test_psnr_per_image_with_data_range_one_and_ssim_accumulate():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(10, 1, 12, 12, generator=g) * 0.5  # dark images: an inferred data range would be ~0.5
    x_hat = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    quality = ReconstructionQuality()
    for a, b in zip(x_hat.split(4), x.split(4)):
        quality.update(a, b)
    got = quality.compute()
    mse_per_image = ((x_hat - x) ** 2).mean((1, 2, 3))
    assert got["psnr_db"] == pytest.approx((10 * torch.log10(1.0 / mse_per_image)).mean().item(), rel=1e-5)
    assert got["ssim"] == pytest.approx(ssim_per_image(x_hat, x).mean().item(), rel=1e-6)
    same = ReconstructionQuality()
    same.update(x, x)
    assert same.compute()["ssim"] == pytest.approx(1.0, abs=1e-5) and got["ssim"] < 0.99


def _tiny_vae(seed: int = 0, **kwargs) -> VAE:
    torch.manual_seed(seed)
    return VAE(in_shape=(1, 4, 4), latent_dim=3, net={"hidden_dims": [16]}, **kwargs).eval()


def _batches(n: int = 40, batch_size: int = 16, seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return list(zip(x.split(batch_size), y.split(batch_size))), x, y


def test_evaluate_matches_a_hand_written_reference_loop():
    model = _tiny_vae()
    batches, x_all, _ = _batches()
    k = 64
    torch.manual_seed(0)
    got = evaluate(model, batches, iwae_samples=k, max_decoded=10_000)  # one chunk per batch: same draws as below
    assert set(got) == set(RESULT_KEYS)  # random grey targets and a Bernoulli: not a likelihood, no bits/dim ...
    assert got["log_likelihood"]["normalised"] is False
    binary = [(torch.bernoulli(x), y) for x, y in batches]  # ... which binary pixels are (a probability mass)
    assert set(evaluate(model, binary, iwae_samples=2)) == set(RESULT_KEYS) | set(BITS_KEYS)
    torch.manual_seed(0)  # the same draws again, told to report bits/dim (to check its formula below)
    told = evaluate(model, batches, iwae_samples=k, max_decoded=10_000, status=Status(True, "for the formula"))
    assert told["log_likelihood"] == {"normalised": True, "note": "for the formula"}
    assert {key: told[key] for key in RESULT_KEYS if key != "log_likelihood"} == {
        key: got[key] for key in RESULT_KEYS if key != "log_likelihood"}
    got = told

    torch.manual_seed(0)
    elbo, iwae, means, kls, recon = [], [], [], [], []
    with torch.no_grad():
        for x, _ in batches:
            q = model.encode(x)
            loc, scale = q.base_dist.loc, q.base_dist.scale  # (B, d)
            z = q.sample((k,))  # (K, B, d)
            logits = model.decoder(z.reshape(-1, 3)).reshape(k, *x.shape)
            log_px_given_z = -torch.nn.functional.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none").sum((2, 3, 4))  # (K, B)
            log_w = log_px_given_z + Normal(0.0, 1.0).log_prob(z).sum(-1) - Normal(loc, scale).log_prob(z).sum(-1)
            kl = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0))  # (B, d)
            elbo.append(log_px_given_z.mean(0) - kl.sum(-1))
            iwae.append(torch.logsumexp(log_w, 0) - math.log(k))
            means.append(loc)
            kls.append(kl)
            recon.append(torch.sigmoid(model.decoder(loc)))
    elbo, iwae, means, kls, recon = map(torch.cat, (elbo, iwae, means, kls, recon))
    assert got["num_examples"] == 40 and got["num_dims"] == 16 and got["iwae_samples"] == k
    assert got["elbo_nats"] == pytest.approx(elbo.mean().item(), rel=1e-5)
    assert got["iwae_nats"] == pytest.approx(iwae.mean().item(), rel=1e-5)
    assert got["iwae_stderr_nats"] == pytest.approx(iwae.std().item() / math.sqrt(40), rel=1e-4)
    assert got["rate_nats"] == pytest.approx(kls.sum(-1).mean().item(), rel=1e-5)
    assert got["elbo_nats"] == pytest.approx(-(got["distortion_nats"] + got["rate_nats"]), rel=1e-6)
    assert got["iwae_bits_per_dim"] == pytest.approx(-iwae.mean().item() / (16 * math.log(2)), rel=1e-5)
    assert got["kl_per_dim_nats"] == pytest.approx(kls.mean(0).tolist(), rel=1e-5)
    assert got["posterior_mean_variance"] == pytest.approx(means.double().var(0).tolist(), rel=1e-5)
    assert got["active_units"] == int((means.var(0) > 0.01).sum())
    assert got["mse"] == pytest.approx(((recon - x_all) ** 2).mean().item(), rel=1e-5)
    psnr = (10 * torch.log10(1 / ((recon - x_all) ** 2).mean((1, 2, 3)))).mean()
    assert got["psnr_db"] == pytest.approx(psnr.item(), rel=1e-5)


def test_evaluate_chunks_samples_and_limits_examples():
    model = _tiny_vae(seed=1)
    batches, _, _ = _batches()
    torch.manual_seed(0)
    whole = evaluate(model, batches, iwae_samples=4000, max_decoded=10**6)
    torch.manual_seed(0)
    chunked = evaluate(model, batches, iwae_samples=4000, max_decoded=1000)  # 62 samples per chunk for B=16
    # Different draws, same estimator: the two IWAE estimates agree within Monte Carlo error.
    assert chunked["iwae_nats"] == pytest.approx(whole["iwae_nats"], abs=0.05)
    assert chunked["ssim"] == whole["ssim"] and chunked["active_units"] == whole["active_units"]
    assert evaluate(model, batches, iwae_samples=3, max_examples=20)["num_examples"] == 20


def test_evaluate_counts_no_active_unit_for_a_collapsed_encoder():
    model = _tiny_vae(seed=2)
    with torch.no_grad():
        model.encoder.head.weight.zero_()  # q(z|x) no longer depends on x
    batches, _, _ = _batches()
    got = evaluate(model, batches, iwae_samples=8)
    assert got["active_units"] == 0 and max(got["posterior_mean_variance"]) < 1e-12


def test_evaluate_feeds_labels_to_a_conditional_model():
    model = _tiny_vae(seed=3, conditional=True, num_classes=3)
    batches, _, _ = _batches()
    torch.manual_seed(0)
    got = evaluate(model, batches, iwae_samples=8)
    wrong = [(x, (y + 1) % 3) for x, y in batches]
    torch.manual_seed(0)
    assert evaluate(model, wrong, iwae_samples=8)["elbo_nats"] != got["elbo_nats"]  # the labels reach the model


@pytest.mark.parametrize("shape", [(4, 1, 28, 28), (3, 3, 32, 32), (2, 3, 11, 17)])
def test_ssim_matches_scikit_image(shape):
    skimage = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    x_hat = (x + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
    x_hat[0] = x[0].flip(-1)  # a poor reconstruction too
    ours = ssim_per_image(x_hat, x)
    ref = [skimage.structural_similarity(a.numpy(), b.numpy(), gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0, channel_axis=0)
           for a, b in zip(x_hat, x)]
    torch.testing.assert_close(ours, torch.tensor(ref, dtype=torch.float32), atol=1e-5, rtol=0)
    quality = ReconstructionQuality()
    quality.update(x_hat, x)
    assert quality.compute()["ssim"] == pytest.approx(sum(ref) / len(ref), abs=1e-5)


def test_ssim_of_small_images_uses_the_largest_gaussian_window_that_fits():
    ndimage = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)  # digits: 8x8, a 7-tap window (radius 3)
    x_hat = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)

    def reference(a, b, r=3):  # skimage's computation: filter (truncated at r pixels), crop r, average
        blur = lambda t: ndimage.gaussian_filter(t, sigma=1.5, truncate=r / 1.5)  # noqa: E731
        mu_a, mu_b = blur(a), blur(b)
        va, vb, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + 1e-4) * (2 * cov + 9e-4)) / ((mu_a**2 + mu_b**2 + 1e-4) * (va + vb + 9e-4))
        return s[r:-r, r:-r].mean()

    ref = [reference(a[0].numpy(), b[0].numpy()) for a, b in zip(x_hat, x)]
    torch.testing.assert_close(ssim_per_image(x_hat, x), torch.tensor(ref, dtype=torch.float64))


def test_ssim_of_images_under_3x3_pixels_is_absent_not_a_number():
    """A 1-pixel window has no variance or covariance: SSIM would be its luminance term alone (Wang et al. 2004)."""
    from vae_lab.metrics import ssim_skip_reason

    x = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    quality = ReconstructionQuality()
    quality.update(x.flip(0), x)
    assert [name for name, _ in quality.items()] == ["psnr_db"]  # only what was computed gets logged
    got = quality.compute()
    assert got["ssim"] is None
    mse = (x.flip(0) - x).square().flatten(1).mean(1)
    assert got["psnr_db"] == pytest.approx((10 * torch.log10(1 / mse)).mean().item(), rel=1e-5)
    assert "1x1 pixels" in ssim_skip_reason(1, 1) and ssim_skip_reason(3, 3) is None and ssim_skip_reason(2, 9)
