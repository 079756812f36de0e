"""Distributions of the VAE: posterior q(z|x), prior p(z), likelihoods p(x|z).

Likelihoods have no weights; priors and posteriors are nn.Modules that hold their own (mixture parameters,
pseudo-inputs, IAF steps) and return torch Distributions.
"""

from vae_lab.distributions.likelihoods import LIKELIHOODS, Likelihood, build_likelihood
from vae_lab.distributions.posterior import (
    POSTERIORS,
    build_posterior,
    diagonal_gaussian,
    posterior_code,
    reparameterise,
    sample_with_seed,
)
from vae_lab.distributions.prior import PRIORS, build_prior, standard_normal

__all__ = ["LIKELIHOODS", "Likelihood", "POSTERIORS", "PRIORS", "build_likelihood", "build_posterior",
           "build_prior", "diagonal_gaussian", "posterior_code", "reparameterise", "sample_with_seed",
           "standard_normal"]
