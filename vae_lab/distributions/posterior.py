"""The approximate posterior q(z|x): a diagonal Gaussian (default) or an inverse autoregressive flow.

A posterior is an nn.Module (the IAF's MADE weights live in the VAE's state_dict) that turns the encoder's
output into a torch Distribution with batch shape (B,) and event shape (latent_dim,).
"""

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from vae_lab.distributions.gaussian import DiagonalGaussian, GaussianPosterior, diagonal_gaussian
from vae_lab.distributions.iaf import IAFPosterior
from vae_lab.errors import ConfigError, choices_error

POSTERIORS: dict[str, type[nn.Module]] = {"gaussian": GaussianPosterior, "iaf": IAFPosterior}

__all__ = ["DiagonalGaussian", "POSTERIORS", "build_posterior", "diagonal_gaussian", "posterior_code", "reparameterise",
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
    return q_z.from_noise(eps)  # an IAF caches log q(z|x) of this z


def sample_with_seed(q_z: Distribution, num_samples: int, seed: int) -> Tensor:
    """num_samples draws z (K, B, D) from q(z|x) with noise from a generator seeded by `seed` (global RNG untouched)."""
    template = q_z.noise_template  # (B, D)
    generator = torch.Generator(device=template.device).manual_seed(seed)
    eps = torch.randn((num_samples, *template.shape), generator=generator, device=template.device,
                      dtype=template.dtype)
    return q_z.from_noise(eps)


def posterior_code(q_z: Distribution) -> Tensor:
    """A deterministic code of each x (B, D): E_q[z] for a Gaussian q, the flow of the base mean for an IAF."""
    return q_z.code()


def rsample_with_log_prob(q_z: Distribution, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
    """(z, log q(z|x)) for z = q_z.rsample(sample_shape), from the noise where the posterior offers it (its
    `rsample_with_log_prob`: a diagonal Gaussian's from the noise, an IAF's from its flow); else rsample, log_prob."""
    if hasattr(q_z, "rsample_with_log_prob"):
        return q_z.rsample_with_log_prob(sample_shape)
    z = q_z.rsample(sample_shape)
    return z, q_z.log_prob(z)
