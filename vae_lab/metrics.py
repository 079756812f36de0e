"""Units and metrics: nats, bits/dim."""

import math

import torch

LOG_256 = math.log(256.0)


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
