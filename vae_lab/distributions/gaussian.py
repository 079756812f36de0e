"""The diagonal Gaussian posterior q(z|x) = N(mu(x), diag sigma(x)^2): today's default, and the IAF's base."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DiagonalGaussian(Independent):
    """N(loc, diag scale^2) with event shape (D,): torch's Independent(Normal, 1) plus what a posterior offers.

    The posterior interface (shared with the IAF's distribution): `from_noise(eps)` (the reparameterisation),
    `code()` (a deterministic code of x), `noise_template` (the (B, D) tensor noise is shaped like),
    `rsample_with_log_prob` and `analytic_kl` (KL against a diagonal Gaussian prior in closed form).
    """

    analytic_kl = True

    def from_noise(self, eps: Tensor) -> Tensor:
        """z = mu + sigma * eps for standard normal noise eps (..., B, D): Normal.rsample's reparameterisation."""
        return self.mean + eps * self.stddev

    def code(self) -> Tensor:
        """E_q[z] (B, D)."""
        return self.mean

    @property
    def noise_template(self) -> Tensor:
        return self.base_dist.loc

    def rsample_with_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """(z, log q(z)) of one rsample, log q from the noise (see diagonal_normal_rsample_with_log_prob)."""
        return diagonal_normal_rsample_with_log_prob(self, sample_shape)


def diagonal_gaussian(params: torch.Tensor, min_scale: float = 1e-4) -> DiagonalGaussian:
    """q(z|x) from encoder output (..., 2D) = [loc | raw scale].

    softplus + floor instead of exp(0.5 * logvar) with a hard clamp: gradients never vanish and the
    scale never reaches 0 (NVAE / VDVAE practice). Maths in float32 even under autocast.
    """
    loc, raw_scale = params.float().chunk(2, dim=-1)
    scale = F.softplus(raw_scale) + min_scale
    return DiagonalGaussian(Normal(loc, scale, validate_args=False), 1)


class GaussianPosterior(nn.Module):
    """q(z|x) = N(mu(x), diag sigma(x)^2) from encoder output [loc | raw scale]: no weights of its own."""

    diagonal_gaussian = True
    context_dim = 0  # the encoder's head emits only [loc | raw scale]

    def __init__(self, latent_dim: int, min_scale: float, **_):
        super().__init__()
        self.latent_dim, self.min_scale = latent_dim, min_scale

    def base(self, params: torch.Tensor) -> DiagonalGaussian:
        return diagonal_gaussian(params, self.min_scale)

    def forward(self, params: torch.Tensor) -> DiagonalGaussian:
        return diagonal_gaussian(params, self.min_scale)


def is_diagonal_normal(dist: Distribution) -> bool:
    """True for Independent(Normal) over exactly the last dim: a diagonal Gaussian with event shape (D,)."""
    return isinstance(dist, Independent) and type(dist.base_dist) is Normal and dist.reinterpreted_batch_ndims == 1


def standardised_log_prob(u: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag sigma^2) from u = (z - mu) / sigma: sum(-u^2/2 - log sigma - log(2 pi)/2) over the last dim."""
    return -0.5 * torch.linalg.vecdot(u, u) - scale.log().sum(-1) - u.shape[-1] * _HALF_LOG_2PI


def diagonal_normal_rsample_with_log_prob(q_z: Independent, sample_shape=torch.Size()):
    """(z, log q(z)) of a diagonal Gaussian: z = mu + sigma eps, log q from the noise eps itself (no Normal rebuilt).

    eps is drawn exactly as Normal.rsample draws it (an empty tensor's normal_()), so a seed gives the same z.
    """
    base = q_z.base_dist
    eps = torch.empty(base._extended_shape(torch.Size(sample_shape)), dtype=base.loc.dtype,
                      device=base.loc.device).normal_()  # (..., B, D)
    return base.loc + eps * base.scale, standardised_log_prob(eps, base.scale)


def diagonal_normal_log_prob(p: Independent, z: torch.Tensor) -> torch.Tensor:
    """log p(z) of a diagonal Gaussian in two passes over z, the same numbers as p.log_prob(z): (..., D) -> (...)."""
    base = p.base_dist
    return standardised_log_prob((z - base.loc) / base.scale, base.scale)
