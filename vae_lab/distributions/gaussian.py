"""The diagonal Gaussian posterior q(z|x) = N(mu(x), diag sigma(x)^2): today's default, and the IAF's base."""

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal


def diagonal_gaussian(params: torch.Tensor, min_scale: float = 1e-4) -> Independent:
    """q(z|x) from encoder output (..., 2D) = [loc | raw scale].

    softplus + floor instead of exp(0.5 * logvar) with a hard clamp: gradients never vanish and the
    scale never reaches 0 (NVAE / VDVAE practice). Maths in float32 even under autocast.
    """
    loc, raw_scale = params.float().chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + min_scale
    return Independent(Normal(loc, scale, validate_args=False), 1)


class GaussianPosterior(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2) from encoder output [loc | raw scale]: no weights of its own."""

    diagonal_gaussian = True
    context_dim = 0  # the encoder's head emits only [loc | raw scale]

    def __init__(self, latent_dim: int, min_scale: float, **_):
        super().__init__()
        self.latent_dim, self.min_scale = latent_dim, min_scale

    def base(self, params: torch.Tensor) -> Independent:
        return diagonal_gaussian(params, self.min_scale)

    def forward(self, params: torch.Tensor) -> Independent:
        return diagonal_gaussian(params, self.min_scale)
