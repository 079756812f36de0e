"""The approximate posterior q(z|x): a diagonal Gaussian (default) or an inverse autoregressive flow.

A posterior is an nn.Module (the IAF's MADE weights live in the VAE's state_dict) that turns the encoder's
output into a torch Distribution with batch shape (B,) and event shape (latent_dim,).
"""

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vae_lab.distributions.gaussian import (
    GaussianPosterior,
    diagonal_gaussian,
    diagonal_normal_rsample_with_log_prob,
    is_diagonal_normal,
)
from vae_lab.distributions.iaf import IAFDistribution, IAFPosterior
from vae_lab.errors import ConfigError, choices_error

POSTERIORS: dict[str, type[nn.Module]] = {"gaussian": GaussianPosterior, "iaf": IAFPosterior}

__all__ = ["POSTERIORS", "build_posterior", "diagonal_gaussian", "posterior_code", "reparameterise",
           "rsample_with_log_prob", "sample_with_seed"]


def build_posterior(name: str, **kwargs) -> nn.Module:
    """The posterior module called `name`; ConfigError listing the valid names otherwise."""
    if name not in POSTERIORS:
        raise choices_error("posterior.name", name, POSTERIORS)
    for key in ("num_steps", "hidden_dim", "hidden_layers"):
        if name == "iaf" and kwargs.get(key, 1) < 1:
            raise ConfigError(f"posterior.{key}={kwargs[key]} is invalid: must be an integer >= 1")
    return POSTERIORS[name](**kwargs)


def reparameterise(q_z: Distribution, eps: Tensor) -> Tensor:
    """z = f(eps) for standard normal noise eps (..., B, D): the sample rsample would draw with that noise."""
    if isinstance(q_z, IAFDistribution):
        return q_z.from_noise(eps)  # caches log q(z|x) of this z
    return q_z.mean + eps * q_z.stddev  # Normal.rsample's reparameterisation


def sample_with_seed(q_z: Distribution, num_samples: int, seed: int) -> Tensor:
    """num_samples draws z (K, B, D) from q(z|x) with noise from a generator seeded by `seed` (global RNG untouched)."""
    loc = q_z.base.base_dist.loc if isinstance(q_z, IAFDistribution) else q_z.mean  # (B, D)
    generator = torch.Generator(device=loc.device).manual_seed(seed)
    eps = torch.randn((num_samples, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype)
    return reparameterise(q_z, eps)


def posterior_code(q_z: Distribution) -> Tensor:
    """A deterministic code of each x (B, D): z at zero noise, which is E_q[z] for a Gaussian q and the flow of
    the base mean for an IAF (whose E_q[z] has no closed form). Reconstructions and latent plots use it."""
    if isinstance(q_z, IAFDistribution):
        loc = q_z.base.base_dist.loc
        return q_z.from_noise(torch.zeros_like(loc))
    return q_z.mean


def rsample_with_log_prob(q_z: Distribution, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
    """(z, log q(z|x)) for z = q_z.rsample(sample_shape), the same z, from the noise where the family allows it.

    A diagonal Gaussian's log-density from its standard normal noise, an IAF's as a by-product of its flow
    (Kingma et al. 2016, Algorithm 1); any other Distribution: rsample, then log_prob.
    """
    if isinstance(q_z, IAFDistribution):
        return q_z.rsample_with_log_prob(sample_shape)
    if is_diagonal_normal(q_z):
        return diagonal_normal_rsample_with_log_prob(q_z, sample_shape)
    z = q_z.rsample(sample_shape)
    return z, q_z.log_prob(z)
