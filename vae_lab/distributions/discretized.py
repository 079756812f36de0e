"""Discretised likelihoods: probability masses on the L levels k/(L-1) of the data (Salimans et al. 2017).

Pixels reach the model as k / (L - 1) (vae_lab/data/batches.py; L = 256 for 8-bit data, up to 65536 for 16-bit), so
level k owns the bin [k - 1/2, k + 1/2] / (L - 1) and the edge bins extend to -inf (k = 0) and +inf (k = L - 1): the
L masses sum to 1 and -log P is already in nats of the discrete data (bits/dim needs no ln L correction). Masses are
computed from log-CDF differences in float32.
"""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

LEVELS = 256  # 8-bit data, the default scale
MAX_LEVELS = 65536  # 16-bit data: level indices and k -+ 1/2 stay exact in float32 (< 2^24)
_NARROW = 1e-5  # Gaussian bins narrower than this many scales use the mid-bin rule (see log_mass_gaussian)


def to_level(x: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """The integer level k (as float) of pixels x = k / (levels - 1); rounding absorbs float error in x."""
    return torch.round(x * (levels - 1)).clamp(0, levels - 1)


def _bin_edges(level: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
               levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised edges (a, b) of the bin of `level`: ((k -+ 1/2) / (L - 1) - loc) / scale.

    Computed in level units, k -+ 1/2 - (L - 1) loc, where k -+ 1/2 is exact: a bin edge at loc (e.g. loc = 0.5
    between levels 127 and 128 of 256) gives exactly 0 instead of the rounding error of 127/255 over a small scale.
    """
    offset = level - (levels - 1) * loc
    spread = (levels - 1) * scale
    return (offset - 0.5) / spread, (offset + 0.5) / spread


def log_mass_logistic(level: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                      levels: int = LEVELS) -> torch.Tensor:
    """log P(level) of a logistic(loc, scale) binned on [k -+ 1/2] / (L - 1), edge bins to -+inf.

    With a, b the standardised bin edges, sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^(a - b)) exactly,
    so log P = -softplus(-b) - softplus(a) + log(-expm1(-(b - a))) with b - a = 1 / ((L-1) scale): no difference of
    two nearly equal CDFs is ever formed, which makes PixelCNN++'s mid-bin fallback (used when the CDF difference
    underflows) unnecessary; the result is accurate for any loc and scale.
    """
    a, b = _bin_edges(level, loc, scale, levels)
    log_upper, log_lower = -F.softplus(-b), -F.softplus(a)  # log sigmoid(b), log (1 - sigmoid(a))
    interior = log_upper + log_lower + torch.log(-torch.expm1(-2 * (0.5 / (levels - 1)) / scale))
    return torch.where(level <= 0, log_upper, torch.where(level >= levels - 1, log_lower, interior))


def log_mass_gaussian(level: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                      levels: int = LEVELS) -> torch.Tensor:
    """log P(level) of a N(loc, scale^2) binned like log_mass_logistic.

    log(Phi(b) - Phi(a)) = log Phi(b) + log(-expm1(log Phi(a) - log Phi(b))), on the lower-tail side (mirrored when
    a > 0: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)) so that log Phi never rounds to 0. Unlike the logistic there is no
    exact product form, so the two log Phi are subtracted: in float64 (float32 would lose ~1e-4 of log P for bins of
    a thousandth of a scale), and for bins narrower than _NARROW scales, where even float64 cancels, by the mid-bin
    rule log phi(centre) + log(b - a) (PixelCNN++'s fallback; error ~ (b - a)^2 (z^2 - 1) / 24 < 1e-11 (z^2 + 1)).
    """
    a, b = _bin_edges(level.double(), loc.double(), scale.double(), levels)  # float64 before the edges are rounded
    mirror = a > 0
    lo, hi = torch.where(mirror, -b, a), torch.where(mirror, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    width = 1.0 / ((levels - 1) * scale.double())  # b - a, without its rounding
    narrow = width < _NARROW
    gap = torch.where(narrow, -1.0, log_lo - log_hi)  # < 0; the narrow branch is not computed from it
    interior = log_hi + torch.log(-torch.expm1(gap))
    mid_bin = -0.5 * ((a + b) / 2).square() - 0.5 * math.log(2 * math.pi) + torch.log(width)
    interior = torch.where(narrow, mid_bin, interior)
    edge_low, edge_high = torch.special.log_ndtr(b), torch.special.log_ndtr(-a)
    out = torch.where(level <= 0, edge_low, torch.where(level >= levels - 1, edge_high, interior))
    return out.to(torch.promote_types(loc.dtype, torch.float32))


_SUMMED_LEVELS = 256  # up to this many levels binned_mean sums over the bins; beyond, the integral it converges to


def _clipped_mean(loc: torch.Tensor, scale: torch.Tensor, cdf) -> torch.Tensor:
    """E[clip(Y, 0, 1)] = int_0^1 P(Y > t) dt for Y = loc + scale * noise, in closed form for the two families."""
    hi, lo = loc / scale, (loc - 1) / scale
    if cdf is torch.sigmoid:  # int sigmoid(u) du = softplus(u)
        return scale * (F.softplus(hi) - F.softplus(lo))
    def antiderivative(u):  # int Phi(u) du = u Phi(u) + phi(u)
        return u * torch.special.ndtr(u) + torch.exp(-0.5 * u.square()) / math.sqrt(2 * math.pi)

    return scale * (antiderivative(hi) - antiderivative(lo))


def binned_mean(loc: torch.Tensor, scale: torch.Tensor, cdf, levels: int = LEVELS) -> torch.Tensor:
    """E[k / (L-1)] = (1/(L-1)) sum_{j=1}^{L-1} P(k >= j) = (1/(L-1)) sum_j cdf((loc - t_j) / scale),
    t_j = (j - 1/2)/(L-1).

    Exact (the identity E[k] = sum_{j>=1} P(k >= j) for k in 0..L-1; cdf symmetric), summed over chunks of levels
    so memory stays a few times that of loc. Beyond 256 levels (16-bit data) the sum is the midpoint rule of
    int_0^1 cdf((loc - t) / scale) dt (error O(1 / ((L-1) scale))^2): that integral in closed form instead of 65535
    terms; used for pictures only.
    """
    if levels > _SUMMED_LEVELS:
        return _clipped_mean(loc, scale, cdf)
    total = torch.zeros_like(loc)
    chunk = max(1, min(levels - 1, (1 << 24) // max(1, loc.numel())))
    edges = (torch.arange(1, levels, device=loc.device, dtype=loc.dtype) - 0.5) / (levels - 1)
    for part in edges.split(chunk):
        t = part.view(-1, *([1] * loc.dim()))  # (J, 1, ...)
        total = total + cdf((loc - t) / scale).sum(0)
    return total / (levels - 1)


def quantize(y: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """A continuous draw y -> its level's value k / (L-1) (the bins of log_mass_*; edges open to -+inf)."""
    return to_level(y, levels) / (levels - 1)


def check_levels(levels) -> int:
    """`levels` as an int in 2..65536; ValueError otherwise (a discretised likelihood needs discrete data)."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be an int in 2..{MAX_LEVELS} (the data's grey levels), got {levels!r}")
    return levels


class Discretized(Distribution):
    """Elementwise discretised logistic or Gaussian over the levels k / (L-1), from loc and scale (same shape)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, family: str, validate_args: bool | None = False,
                 levels: int = LEVELS):
        if family not in ("logistic", "gaussian"):
            raise ValueError(f"family must be logistic or gaussian, got {family!r}")
        self.loc, self.scale, self.family, self.levels = loc, scale, family, check_levels(levels)
        super().__init__(batch_shape=loc.shape, validate_args=validate_args)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        log_mass = log_mass_logistic if self.family == "logistic" else log_mass_gaussian
        return log_mass(to_level(x, self.levels), self.loc, self.scale, self.levels)

    @property
    def mean(self) -> torch.Tensor:
        cdf = torch.sigmoid if self.family == "logistic" else torch.special.ndtr
        return binned_mean(self.loc, self.scale, cdf, self.levels)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            if self.family == "logistic":
                u = torch.rand(shape, device=self.loc.device).clamp(1e-7, 1 - 1e-7)
                noise = torch.log(u) - torch.log1p(-u)  # logistic(0, 1) by inverse CDF
            else:
                noise = torch.randn(shape, device=self.loc.device)
            return quantize(self.loc + self.scale * noise, self.levels)
