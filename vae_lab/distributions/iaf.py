"""Inverse autoregressive flow posteriors (Kingma et al. 2016): q(z|x) = a diagonal Gaussian pushed through T
MADE-based autoregressive steps with a context vector from the encoder.

Each step (Kingma et al. 2016, Eq. 11-14 and Algorithm 1): [m, s] = MADE_t(z, h), sigma = gate(s),
z <- sigma * z + (1 - sigma) * m, and
log q(z_T|x) = log N(eps; 0, I) - sum_i log sigma_0,i - sum_t sum_i log sigma_t,i  (sigma_0: the base's scale).
The gate is their sigmoid rescaled to 2 * sigmoid(s), in (0, 2): still bounded (the point of Eq. 14: no exp
that can overflow), and s = 0 gives sigma = 1, so a MADE with zero output weights makes the step the identity
(their forget-gate bias init of +1..+2 aims at the same: start near the identity).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent

from vae_lab.distributions.gaussian import diagonal_gaussian
from vae_lab.nets.made import MADE

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def gate(s: Tensor) -> tuple[Tensor, Tensor]:
    """sigma = 2 sigmoid(s) and log sigma = log 2 + logsigmoid(s), computed stably."""
    return 2 * torch.sigmoid(s), math.log(2.0) + F.logsigmoid(s)


def flow_step(made: MADE, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """One IAF step: (z_t, log|det dz_t/dz_{t-1}|) for z_{t-1} (..., D); the Jacobian is triangular, diag sigma."""
    m, s = made(z, context).to(z.dtype).chunk(2, dim=-1)  # z's float32 even when the MADE ran under autocast
    sigma, log_sigma = gate(s)
    return sigma * z + (1 - sigma) * m, log_sigma.sum(-1)  # Eq. 14 of Kingma et al. 2016


def invert_step(made: MADE, z_next: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
    """(z_{t-1}, log|det dz_t/dz_{t-1}|) from z_t: D fixed-point passes, each fixing one more dimension of the
    autoregressive order, so the last pass's gate is the exact one.

    z_{t-1} = m + (z_t - m) / sigma with 1 / sigma = exp(-log sigma): a saturated gate (sigma below float range) gives
    an infinite z_{t-1}, never 0 / 0.
    """
    z = torch.zeros_like(z_next)
    for _ in range(z_next.shape[-1]):
        m, s = made(z, context).to(z.dtype).chunk(2, dim=-1)
        _, log_sigma = gate(s)
        z = m + (z_next - m) * torch.exp(-log_sigma)
    return z, log_sigma.sum(-1)


class IAFDistribution(Distribution):
    """q(z|x) of an IAF: batch shape (B,), event shape (D,).

    `rsample` returns z and remembers log q(z|x) of that very tensor, so the objectives' `log_prob(z)` at the
    sampled z costs nothing; `log_prob` at any other z inverts the flow (D MADE passes per step). E_q[z] has no
    closed form, so there is no `mean`: `from_noise(0)` (the flow of the base mean) is the deterministic code.
    """

    arg_constraints: dict = {}
    has_rsample = True
    analytic_kl = False  # log q(z|x) only by the flow's change of variables: the rate is Monte Carlo

    def __init__(self, base: Independent, steps: nn.ModuleList, context: Tensor | None):
        self.base, self.steps, self.context = base, steps, context
        self._cache: tuple[Tensor, Tensor] | None = None  # (z, log q(z|x)) of the latest sample
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    def from_noise(self, eps: Tensor) -> Tensor:
        """z = flow(mu + sigma * eps) for noise eps (..., B, D); its log q(z|x) is cached for log_prob."""
        loc, scale = self.base.base_dist.loc, self.base.base_dist.scale  # (B, D)
        z = loc + scale * eps
        log_q = -(scale.log() + 0.5 * eps.pow(2) + _HALF_LOG_2PI).sum(-1)  # Algorithm 1, Kingma et al. 2016
        for made in self.steps:
            z, log_det = flow_step(made, z, self.context)
            log_q = log_q - log_det
        self._cache = (z, log_q)
        return z

    def code(self) -> Tensor:
        """The flow of the base mean (B, D): a deterministic code (E_q[z] has no closed form)."""
        return self.from_noise(torch.zeros_like(self.noise_template))

    @property
    def noise_template(self) -> Tensor:
        return self.base.base_dist.loc

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        loc = self.base.base_dist.loc
        eps = torch.randn(torch.Size(sample_shape) + loc.shape, device=loc.device, dtype=loc.dtype)
        return self.from_noise(eps)

    def rsample_with_log_prob(self, sample_shape: torch.Size = torch.Size()) -> tuple[Tensor, Tensor]:
        """(z, log q(z|x)) of one rsample: the flow's log-density is a by-product of drawing z (Algorithm 1)."""
        z = self.rsample(sample_shape)
        return z, self._cache[1]

    def inverse(self, z: Tensor) -> Tensor:
        """The base sample z_0 = flow^-1(z) (..., B, D)."""
        return self._inverse(z)[0]

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(z_0, sum_t log|det dz_t/dz_{t-1}|) of z (..., B, D), the log-determinants from the inversion itself."""
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for made in reversed(self.steps):
            z, step_log_det = invert_step(made, z, self.context)
            log_det = log_det + step_log_det
        return z, log_det

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x): (..., B); the cached value at the latest sample, else by inverting the flow.

        A z the flow (almost) never reaches inverts through a saturated gate to a z_0 beyond float range (inf, or
        NaN once inf enters a MADE): its density underflows, so log q = -inf there, the limit, not NaN.
        """
        if self._cache is not None and z is self._cache[0]:
            return self._cache[1]
        z0, log_det = self._inverse(z)
        lost = ~torch.isfinite(z0).all(-1)  # overflowed: |z_0| beyond float range, so N(z_0) underflows to 0
        log_q = self.base.log_prob(torch.where(lost.unsqueeze(-1), 0, z0)) - log_det  # Algorithm 1, Kingma et al.
        return log_q.masked_fill(lost, -torch.inf)


class IAFPosterior(nn.Module):
    """q(z|x) from encoder output [loc | raw scale | context h] through `num_steps` MADE steps.

    The autoregressive order is reversed between steps, so each dimension is conditioned on every other one
    within two steps (Kingma et al. 2016, Sec. 5: "we reverse the ordering after each step").
    """

    diagonal_gaussian = False

    def __init__(self, latent_dim: int, min_scale: float, num_steps: int, hidden_dim: int, hidden_layers: int,
                 context_dim: int, **_):
        super().__init__()
        self.latent_dim, self.min_scale, self.context_dim = latent_dim, min_scale, context_dim
        forward_order, reverse_order = list(range(latent_dim)), list(reversed(range(latent_dim)))
        self.steps = nn.ModuleList(
            MADE(latent_dim, hidden_dim, hidden_layers, context_dim, reverse_order if t % 2 else forward_order)
            for t in range(num_steps)
        )

    def base(self, params: Tensor) -> Independent:
        """The flow's base distribution N(mu(x), sigma(x)^2) from the first 2D encoder outputs."""
        return diagonal_gaussian(params[..., : 2 * self.latent_dim], self.min_scale)

    def forward(self, params: Tensor) -> IAFDistribution:
        context = params[..., 2 * self.latent_dim:].float() if self.context_dim else None  # (B, C)
        return IAFDistribution(self.base(params), self.steps, context)
