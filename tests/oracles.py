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


@dataclass
class LinearGaussianHierarchy:
    """Two latent groups, top first: z1 ~ N(0, I), z2 | z1 ~ N(A z1, s2^2 I), x | z2 ~ N(B z2 + b, s^2 I).

    Marginals in closed form: z2 ~ N(0, A A^T + s2^2 I), x ~ N(b, B (A A^T + s2^2 I) B^T + s^2 I); the exact
    posterior of (z1, z2) given x is Gaussian (joint_posterior).
    """

    A: torch.Tensor  # (d2, d1)
    s2: float
    B: torch.Tensor  # (D, d2)
    b: torch.Tensor  # (D,)
    s: float

    @classmethod
    def random(cls, dims=(2, 3, 5), s2: float = 0.7, s: float = 0.5, seed: int = 0) -> "LinearGaussianHierarchy":
        d1, d2, data_dim = dims
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(d2, d1, generator=g, dtype=torch.float64)
        B = torch.randn(data_dim, d2, generator=g, dtype=torch.float64) / d2**0.5
        return cls(A, s2, B, torch.randn(data_dim, generator=g, dtype=torch.float64), s)

    def _joint(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (d1 + d2 + D,) and covariance of (z1, z2, x)."""
        d1, d2, data_dim = self.A.shape[1], self.A.shape[0], self.B.shape[0]
        eye = lambda n: torch.eye(n, dtype=self.A.dtype)  # noqa: E731
        c11 = eye(d1)
        c21 = self.A
        c22 = self.A @ self.A.T + self.s2**2 * eye(d2)
        cx1, cx2 = self.B @ c21, self.B @ c22
        cxx = self.B @ c22 @ self.B.T + self.s**2 * eye(data_dim)
        cov = torch.cat([torch.cat([c11, c21.T, cx1.T], 1), torch.cat([c21, c22, cx2.T], 1),
                         torch.cat([cx1, cx2, cxx], 1)])
        mean = torch.cat([torch.zeros(d1 + d2, dtype=self.A.dtype), self.b])
        return mean, cov

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x): (B,)."""
        cov = self.B @ (self.A @ self.A.T + self.s2**2 * torch.eye(self.A.shape[0], dtype=self.A.dtype)) @ self.B.T
        cov = cov + self.s**2 * torch.eye(self.B.shape[0], dtype=self.A.dtype)
        return MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z1 = torch.randn(n, self.A.shape[1], generator=g, dtype=self.A.dtype)
        z2 = z1 @ self.A.T + self.s2 * torch.randn(n, self.A.shape[0], generator=g, dtype=self.A.dtype)
        return z2 @ self.B.T + self.b + self.s * torch.randn(n, self.B.shape[0], generator=g, dtype=self.A.dtype)

    def joint_posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, d1 + d2) and covariance (d1 + d2, d1 + d2) of p(z1, z2 | x) by Gaussian conditioning."""
        mean, cov = self._joint()
        n = self.A.shape[1] + self.A.shape[0]
        gain = cov[:n, n:] @ torch.linalg.inv(cov[n:, n:])  # (n, D)
        return mean[:n] + (x - self.b) @ gain.T, cov[:n, :n] - gain @ cov[n:, :n]
