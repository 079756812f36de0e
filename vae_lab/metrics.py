"""Units and metrics: nats, bits/dim, active units, KL per latent dimension, SSIM/PSNR of reconstructions."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, Sec. 5.2: unit u is active if Cov_x(E_q[z_u]) > 0.01
# SSIM of Wang et al. 2004 as skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
# use_sample_covariance=False): Gaussian window truncated at 3.5 sigma (11 taps), K1 = 0.01, K2 = 0.03.
SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # 5
SSIM_K1, SSIM_K2 = 0.01, 0.03
# Below a 3x3 window SSIM has no structure: a 1-pixel window's variances and covariance are 0, so Wang et al.
# 2004's Eq. 13 keeps only its luminance term. Smaller images get no SSIM (absent, not 0).
SSIM_MIN_SIZE = 3


def bits_per_dim(log_px_nats: torch.Tensor, num_dims: int, log_bin_width: float = 0.0) -> torch.Tensor:
    """Bits per dimension of a normalised log-likelihood (or bound) in nats per example: -log P / (D ln 2).

    `log_bin_width` (per dimension; vae_lab.units.Status) turns a density into the log-probability of the discrete
    bins it was dequantised over: log P ~ log p + D log_bin_width, e.g. -ln 256 for pixels (k + u)/256. A probability
    mass (Bernoulli on binary pixels, discretised likelihoods on 8-bit levels) has 0: it is used as is.
    """
    return -(log_px_nats + num_dims * log_bin_width) / (num_dims * math.log(2.0))


def ssim_radius(height: int, width: int) -> int:
    """Radius of the SSIM window: the standard 5 (11 taps), or the largest that fits images under 11 pixels."""
    return max(0, min(SSIM_RADIUS, (min(height, width) - 1) // 2))


def ssim_skip_reason(height: int, width: int) -> str | None:
    """Why SSIM is not computed for images of this size (None: it is)."""
    if min(height, width) >= SSIM_MIN_SIZE:
        return None
    return (f"SSIM not computed: the images are {height}x{width} pixels, SSIM compares local windows of at least "
            f"{SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} (it is left out of the metrics, not reported as 0)")


def ssim_per_image(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM map of each image pair (B, C, H, W) -> (B,), over the valid window positions only.

    Wang et al. 2004, Eq. 13, with local statistics from a normalised Gaussian window (sigma 1.5) and population
    (biased) variances; the map is averaged over positions where the window lies inside the image (no padding) and
    over channels, which is what skimage's structural_similarity reports (it filters with reflect padding, then
    crops the (11 - 1)/2 border pixels whose windows reached into it). Images under 11 pixels, which skimage refuses,
    use the largest window that fits (the same Gaussian truncated at radius / 1.5 sigmas).
    """
    b, c, h, w = x.shape
    radius = ssim_radius(h, w)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    taps = torch.exp(-t.square() / (2 * SSIM_SIGMA**2))
    taps = taps / taps.sum()
    stats = torch.cat([x_hat, x, x_hat * x_hat, x * x, x_hat * x], dim=1)  # (B, 5C, H, W)
    channels = stats.shape[1]
    stats = F.conv2d(stats, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)  # along W, valid
    stats = F.conv2d(stats, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)  # along H, valid
    mu_a, mu_b, aa, bb, ab = stats.chunk(5, dim=1)
    var_a, var_b, cov = aa - mu_a.square(), bb - mu_b.square(), ab - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return ssim_map.mean(dim=(1, 2, 3))


class SSIM(Metric):
    """Mean over images of ssim_per_image (data_range 1): sum and count states, exact across batches and ranks."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, data_range: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.data_range = data_range
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, x_hat: torch.Tensor, x: torch.Tensor) -> None:
        """x_hat, x: (B, C, H, W) in [0, data_range]."""
        self.total += ssim_per_image(x_hat, x, self.data_range).to(torch.float64).sum()
        self.count += x.shape[0]

    def compute(self) -> torch.Tensor:
        return (self.total / self.count).to(torch.float32)


class ActiveUnits(Metric):
    """Number of latent units whose posterior mean varies across the data: Cov_x(E_q[z_u]) > threshold.

    Sum, sum of squares and count of E_q[z] (float64, so the one-pass variance does not cancel badly) are the
    states: batches of any size and DDP ranks add up exactly. `variance()` gives the per-unit variances (D,).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, latent_dim: int, threshold: float = ACTIVE_UNIT_THRESHOLD, **kwargs):
        super().__init__(**kwargs)
        self.threshold = threshold
        zeros = torch.zeros(latent_dim, dtype=torch.float64)
        self.add_state("total", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("total_sq", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, posterior_mean: torch.Tensor) -> None:
        """posterior_mean: E_q[z|x] for a batch, (B, D)."""
        mean = posterior_mean.detach().to(torch.float64)
        self.total += mean.sum(0)
        self.total_sq += mean.square().sum(0)
        self.count += mean.shape[0]

    def variance(self) -> torch.Tensor:
        """Unbiased variance across examples of each unit's posterior mean: (D,)."""
        n = self.count.to(torch.float64)
        centred_sq = self.total_sq - self.total.square() / n  # sum_x (m_x - mean)^2
        return (centred_sq / (n - 1)).clamp(min=0.0)

    def compute(self) -> torch.Tensor:
        return (self.variance() > self.threshold).sum()


class KLPerDimension(Metric):
    """Mean over examples of KL(q(z_u|x) || p(z_u)) for each latent unit u, in nats: (D,)."""

    full_state_update = False
    higher_is_better = None

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros(latent_dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, kl_per_dim: torch.Tensor) -> None:
        """kl_per_dim: (B, D) nats."""
        self.total += kl_per_dim.detach().to(torch.float64).sum(0)
        self.count += kl_per_dim.shape[0]

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class ReconstructionQuality(nn.Module):
    """SSIM and PSNR (dB, per image, then averaged) of reconstructions against images in [0, 1].

    Metric objects with data_range=1.0 given explicitly (inferring it from each batch makes numbers incomparable),
    so Lightning and DDP reduce their states; `items()` yields (name, metric) for logging. SSIM is the valid-window
    Gaussian SSIM of Wang et al. 2004 (ssim_per_image; skimage's definition).
    """

    def __init__(self):
        super().__init__()
        self.metrics = nn.ModuleDict(
            {
                "ssim": SSIM(data_range=1.0),
                "psnr_db": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            }
        )

    def update(self, x_hat: torch.Tensor, x: torch.Tensor) -> None:
        """x_hat, x: (B, C, H, W) in [0, 1]; SSIM only of images of at least SSIM_MIN_SIZE pixels a side."""
        # float32 and no autocast: SSIM's convolutions and the log10 of PSNR lose too much in bf16
        with torch.autocast(device_type=x.device.type, enabled=False):
            for name, metric in self.metrics.items():
                if name != "ssim" or ssim_skip_reason(*x.shape[-2:]) is None:
                    metric.update(x_hat.detach().float(), x.float())

    def items(self):
        """(name, metric) of the metrics that have seen data (no SSIM of images too small for it)."""
        return [(name, metric) for name, metric in self.metrics.items() if metric.update_called]

    def compute(self) -> dict[str, float | None]:
        """name -> value; None for a metric that saw no data (SSIM of images under SSIM_MIN_SIZE pixels)."""
        return {name: float(metric.compute()) if metric.update_called else None
                for name, metric in self.metrics.items()}
