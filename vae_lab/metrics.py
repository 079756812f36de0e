"""Units and metrics: nats, bits/dim, active units, KL per latent dimension, SSIM/PSNR of reconstructions."""

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

LOG_256 = math.log(256.0)
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, Sec. 5.2: unit u is active if Cov_x(E_q[z_u]) > 0.01
SSIM_MIN_SIZE = 6  # the 11-tap Gaussian window reflect-pads by 5 pixels, which needs H, W >= 6


def bits_per_dim(log_px_nats: torch.Tensor, num_dims: int, discrete_targets: bool) -> torch.Tensor:
    """Bits per dimension of a log-likelihood (or bound) in nats per example.

    bits/dim = -log p(x) / (D ln 2). For a density on [0, 1] pixels that were 8-bit integers, the probability
    of the 1/256-wide bin is ~ p(x) / 256^D, so D ln 256 nats are added first (the usual dequantisation
    convention, Theis et al. 2016); a probability mass on {0, 1} (Bernoulli) is used as is.
    """
    nll = -log_px_nats
    if not discrete_targets:
        nll = nll + num_dims * LOG_256
    return nll / (num_dims * math.log(2.0))


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

    torchmetrics objects (data_range=1.0 given explicitly: inferring it from each batch makes numbers
    incomparable), so Lightning and DDP reduce their states; `items()` yields (name, metric) for logging.
    SSIM uses the standard 11-tap Gaussian window (sigma 1.5, Wang et al. 2004); images smaller than
    SSIM_MIN_SIZE, which it cannot pad, get a 3x3 uniform window instead.

    Args:
        image_shape: (..., H, W) of the images, to pick the SSIM window; None: the standard window.
    """

    def __init__(self, image_shape: Sequence[int] | None = None):
        super().__init__()
        small = image_shape is not None and min(image_shape[-2:]) < SSIM_MIN_SIZE
        window = {"gaussian_kernel": False, "kernel_size": 3} if small else {}
        self.metrics = nn.ModuleDict(
            {
                "ssim": StructuralSimilarityIndexMeasure(data_range=1.0, **window),
                "psnr_db": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
            }
        )

    def update(self, x_hat: torch.Tensor, x: torch.Tensor) -> None:
        """x_hat, x: (B, C, H, W) in [0, 1]."""
        # float32 and no autocast: SSIM's convolutions and the log10 of PSNR lose too much in bf16
        with torch.autocast(device_type=x.device.type, enabled=False):
            for metric in self.metrics.values():
                metric.update(x_hat.detach().float(), x.float())

    def items(self):
        return self.metrics.items()

    def compute(self) -> dict[str, float]:
        return {name: float(metric.compute()) for name, metric in self.metrics.items()}
