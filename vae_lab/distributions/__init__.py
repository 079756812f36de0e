"""Distributions of the VAE: posterior q(z|x), prior p(z), likelihoods p(x|z). No weights here."""

from vae_lab.distributions.likelihoods import LIKELIHOODS, Likelihood, build_likelihood
from vae_lab.distributions.posterior import diagonal_gaussian
from vae_lab.distributions.prior import standard_normal

__all__ = ["LIKELIHOODS", "Likelihood", "build_likelihood", "diagonal_gaussian", "standard_normal"]
