"""The continuous Bernoulli on [0, 1] from logits, with its normaliser computed exactly (no clamping).

p(x | l) = C(l) sigmoid(l)^x sigmoid(-l)^(1 - x) = l e^(l x) / (e^l - 1) for x in [0, 1] (Loaiza-Ganem & Cunningham
2019, Eq. 7 in logits: 1 - 2 lambda = -tanh(l / 2), so C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) = l / tanh(l / 2)).
torch's ContinuousBernoulli clamps lambda, which freezes log C at 2.769 for |l| > ~16 (density integrating to 0.16
at |l| = 100, zero gradient); here log C is exact for every finite l.
"""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

LOG_2 = math.log(2.0)
SERIES_BELOW = 0.5  # |l| below which log C and the mean use their Taylor series (see log_normalizer)
# log(l / tanh(l/2)) = log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720 - 127 l^8/4838400 + 73 l^10/34214400
#                      - 1414477 l^12/7846046208000 + O(l^14); at |l| = 0.5 the omitted terms are ~1e-12 (float64
# accuracy), while the closed form's 1/|l| terms would cancel to ~eps/|l|^2 relative error in the gradient near 0.
_LOG_C_SERIES = (1 / 12, -7 / 1440, 31 / 90720, -127 / 4838400, 73 / 34214400, -1414477 / 7846046208000)
# mean(l) = 1/(1 - e^-l) - 1/l = 1/2 + l/12 - l^3/720 + l^5/30240 - l^7/1209600 + l^9/47900160
#           - 691 l^11/1307674368000 + O(l^13)
_MEAN_SERIES = (1 / 12, -1 / 720, 1 / 30240, -1 / 1209600, 1 / 47900160, -691 / 1307674368000)


def _series(coefficients: tuple[float, ...], base: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """sum_i c_i base step^i (i = 0, 1, ...) by Horner's rule."""
    total = torch.full_like(step, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        total = total * step + c
    return total * base


def log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    """log C(l) = log(l / tanh(l / 2)), even in l: ~ log 2 + l^2/12 near 0, ~ log|l| for large |l|.

    For |l| >= SERIES_BELOW: l / tanh(l/2) = |l| (1 + e^-|l|) / (1 - e^-|l|), so
    log C = log|l| + log1p(e^-|l|) - log(-expm1(-|l|)), every term accurate (no overflow, no cancellation).
    Below it, the Taylor series. Each branch only sees inputs in its own range, so neither leaks NaN gradients.
    """
    a = logits.abs()
    small = a < SERIES_BELOW
    big = torch.where(small, SERIES_BELOW, a)  # closed form evaluated away from 0 only
    closed = big.log() + F.softplus(-big) - torch.log(-torch.expm1(-big))
    tiny = torch.where(small, a, 0.0)
    sq = tiny * tiny
    series = LOG_2 + _series(_LOG_C_SERIES, sq, sq)
    return torch.where(small, series, closed)


def mean_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = 1 / (1 - e^-l) - 1 / l (the derivative of log int_0^1 e^(l x) dx), 1/2 + l/12 + ... near 0."""
    small = logits.abs() < SERIES_BELOW
    safe = torch.where(small, SERIES_BELOW, logits)
    closed = -1.0 / torch.expm1(-safe) - 1.0 / safe
    tiny = torch.where(small, logits, 0.0)
    series = 0.5 + _series(_MEAN_SERIES, tiny, tiny * tiny)
    return torch.where(small, series, closed)


class ContinuousBernoulliLogits(Distribution):
    """Elementwise continuous Bernoulli with logits l: log p(x) = l x - softplus(l) + log C(l), x in [0, 1]."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = False):
        self.logits = logits
        super().__init__(batch_shape=logits.shape, validate_args=validate_args)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        # sigmoid(l)^x sigmoid(-l)^(1-x) = exp(l x - softplus(l))
        return x * self.logits - F.softplus(self.logits) + log_normalizer(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return mean_from_logits(self.logits)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Inverse CDF, F(x) = (e^(l x) - 1) / (e^l - 1), written so that e^l never overflows."""
        l = self.logits.expand(self._extended_shape(sample_shape))
        u = torch.rand_like(l)
        small = l.abs() < 1e-3
        safe = torch.where(small, 1.0, l)
        # l < 0: x = log1p(u expm1(l)) / l;  l > 0: x = 1 + log(u + (1 - u) e^-l) / l  (the same, divided by e^l)
        negative = torch.log1p(u * torch.expm1(torch.clamp(safe, max=0.0))) / safe
        positive = 1.0 + torch.log(u + (1.0 - u) * torch.exp(-torch.clamp(safe, min=0.0))) / safe
        near_zero = u + l * u * (1.0 - u) / 2  # first order in l; the l^2 term is < 1e-7 here
        return torch.where(small, near_zero, torch.where(l < 0, negative, positive)).clamp(0.0, 1.0)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)
