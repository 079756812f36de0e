"""The approximate posterior q(z|x): a diagonal Gaussian with a soft, floored scale."""

import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal


def diagonal_gaussian(params: torch.Tensor, min_scale: float = 1e-4) -> Independent:
    """q(z|x) from encoder output (..., 2D) = [loc | raw scale].

    softplus + floor instead of exp(0.5 * logvar) with a hard clamp: gradients never vanish and the
    scale never reaches 0 (NVAE / VDVAE practice). Maths in float32 even under autocast.
    """
    loc, raw_scale = params.float().chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + min_scale
    return Independent(Normal(loc, scale, validate_args=False), 1)
