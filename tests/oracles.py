"""Closed-form oracles shared by the tests: the linear-Gaussian VAE.

p(z) = N(0, I_d),  p(x|z) = N(W z + b, s^2 I_D)  =>  p(x) = N(b, W W^T + s^2 I),
exact posterior p(z|x) = N(m, S) with S = (I + W^T W / s^2)^-1 and m = S W^T (x - b) / s^2.
"""

from dataclasses import dataclass

import torch
from torch.distributions import Independent, MultivariateNormal, Normal


@dataclass
class LinearGaussian:
    W: torch.Tensor  # (D, d)
    b: torch.Tensor  # (D,)
    s: float

    @classmethod
    def random(cls, data_dim: int = 5, latent_dim: int = 2, s: float = 0.5, seed: int = 0) -> "LinearGaussian":
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64)
        b = torch.randn(data_dim, generator=g, dtype=torch.float64)
        return cls(W, b, s)

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x): (B,)."""
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=self.W.dtype)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=g, dtype=self.W.dtype)
        return z @ self.W.T + self.b + self.s * torch.randn(n, self.W.shape[0], generator=g, dtype=self.W.dtype)

    def exact_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, d) and covariance (d, d) of p(z|x)."""
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype)
        S = torch.linalg.inv(eye + self.W.T @ self.W / self.s**2)
        m = (x - self.b) @ self.W @ S.T / self.s**2
        return m, S

    def likelihood(self, z: torch.Tensor) -> Independent:
        """p(x|z) for z (..., d): batch shape (...), event (D,)."""
        return Independent(Normal(z @ self.W.T + self.b, torch.full((), self.s, dtype=self.W.dtype)), 1)

    def prior(self) -> Independent:
        zeros = torch.zeros(self.latent_dim, dtype=self.W.dtype)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)


def diagonal_posterior(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    return Independent(Normal(loc, scale), 1)
