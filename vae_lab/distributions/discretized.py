"""Discretised likelihoods: probability masses on the 256 levels k/255 of 8-bit pixels (Salimans et al. 2017).

Pixels reach the model as k / 255 (vae_lab/data/batches.py), so level k owns the bin [k - 1/2, k + 1/2] / 255 and the
edge bins extend to -inf (k = 0) and +inf (k = 255): the 256 masses sum to 1 and -log P is already in nats of the
discrete data (bits/dim needs no ln 256 correction). Masses are computed from log-CDF differences in float32.
"""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

LEVELS = 256
HALF_BIN = 0.5 / (LEVELS - 1)  # half the width of a bin, on the k / 255 scale
_NARROW = 1e-5  # Gaussian bins narrower than this many scales use the mid-bin rule (see log_mass_gaussian)


def to_level(x: torch.Tensor) -> torch.Tensor:
    """The integer level k (as float) of pixels x = k / 255; rounding absorbs float error in x."""
    return torch.round(x * (LEVELS - 1)).clamp(0, LEVELS - 1)


def _bin_edges(level: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised edges (a, b) of the bin of `level`: ((k -+ 1/2) / 255 - loc) / scale.

    Computed in level units, k -+ 1/2 - 255 loc, where k -+ 1/2 is exact: a bin edge at loc (e.g. loc = 0.5 between
    levels 127 and 128) gives exactly 0 instead of the rounding error of 127/255 divided by a small scale.
    """
    offset = level - (LEVELS - 1) * loc
    spread = (LEVELS - 1) * scale
    return (offset - 0.5) / spread, (offset + 0.5) / spread


def log_mass_logistic(level: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log P(level) of a logistic(loc, scale) binned on [k -+ 1/2] / 255, edge bins to -+inf.

    With a, b the standardised bin edges, sigmoid(b) - sigmoid(a) = sigmoid(b) sigmoid(-a) (1 - e^(a - b)) exactly,
    so log P = -softplus(-b) - softplus(a) + log(-expm1(-(b - a))) with b - a = 2 HALF_BIN / scale: no difference of
    two nearly equal CDFs is ever formed, which makes PixelCNN++'s mid-bin fallback (used when the CDF difference
    underflows) unnecessary; the result is accurate for any loc and scale.
    """
    a, b = _bin_edges(level, loc, scale)
    log_upper, log_lower = -F.softplus(-b), -F.softplus(a)  # log sigmoid(b), log (1 - sigmoid(a))
    interior = log_upper + log_lower + torch.log(-torch.expm1(-2 * HALF_BIN / scale))
    return torch.where(level <= 0, log_upper, torch.where(level >= LEVELS - 1, log_lower, interior))


def log_mass_gaussian(level: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log P(level) of a N(loc, scale^2) binned like log_mass_logistic.

    log(Phi(b) - Phi(a)) = log Phi(b) + log(-expm1(log Phi(a) - log Phi(b))), on the lower-tail side (mirrored when
    a > 0: Phi(b) - Phi(a) = Phi(-a) - Phi(-b)) so that log Phi never rounds to 0. Unlike the logistic there is no
    exact product form, so the two log Phi are subtracted: in float64 (float32 would lose ~1e-4 of log P for bins of
    a thousandth of a scale), and for bins narrower than _NARROW scales, where even float64 cancels, by the mid-bin
    rule log phi(centre) + log(b - a) (PixelCNN++'s fallback; error ~ (b - a)^2 (z^2 - 1) / 24 < 1e-11 (z^2 + 1)).
    """
    a, b = _bin_edges(level.double(), loc.double(), scale.double())  # float64 before the edges are rounded
    mirror = a > 0
    lo, hi = torch.where(mirror, -b, a), torch.where(mirror, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    width = 1.0 / ((LEVELS - 1) * scale.double())  # b - a, without its rounding
    narrow = width < _NARROW
    gap = torch.where(narrow, -1.0, log_lo - log_hi)  # < 0; the narrow branch is not computed from it
    interior = log_hi + torch.log(-torch.expm1(gap))
    mid_bin = -0.5 * ((a + b) / 2).square() - 0.5 * math.log(2 * math.pi) + torch.log(width)
    interior = torch.where(narrow, mid_bin, interior)
    edge_low, edge_high = torch.special.log_ndtr(b), torch.special.log_ndtr(-a)
    out = torch.where(level <= 0, edge_low, torch.where(level >= LEVELS - 1, edge_high, interior))
    return out.to(torch.promote_types(loc.dtype, torch.float32))


def binned_mean(loc: torch.Tensor, scale: torch.Tensor, cdf) -> torch.Tensor:
    """E[k / 255] = (1/255) sum_{j=1}^{255} P(k >= j) = (1/255) sum_j cdf((loc - t_j) / scale), t_j = (j - 1/2)/255.

    Exact (the identity E[k] = sum_{j>=1} P(k >= j) for k in 0..255; cdf symmetric), summed over chunks of levels
    so memory stays a few times that of loc.
    """
    total = torch.zeros_like(loc)
    chunk = max(1, min(LEVELS - 1, (1 << 24) // max(1, loc.numel())))
    edges = (torch.arange(1, LEVELS, device=loc.device, dtype=loc.dtype) - 0.5) / (LEVELS - 1)
    for part in edges.split(chunk):
        t = part.view(-1, *([1] * loc.dim()))  # (J, 1, ...)
        total = total + cdf((loc - t) / scale).sum(0)
    return total / (LEVELS - 1)


def quantize(y: torch.Tensor) -> torch.Tensor:
    """A continuous draw y -> its level's value k / 255 (the bins of log_mass_*; edges open to -+inf)."""
    return to_level(y) / (LEVELS - 1)


class Discretized(Distribution):
    """Elementwise discretised logistic or Gaussian over the levels k / 255, from loc and scale (same shape)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, family: str, validate_args: bool | None = False):
        if family not in ("logistic", "gaussian"):
            raise ValueError(f"family must be logistic or gaussian, got {family!r}")
        self.loc, self.scale, self.family = loc, scale, family
        super().__init__(batch_shape=loc.shape, validate_args=validate_args)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        log_mass = log_mass_logistic if self.family == "logistic" else log_mass_gaussian
        return log_mass(to_level(x), self.loc, self.scale)

    @property
    def mean(self) -> torch.Tensor:
        return binned_mean(self.loc, self.scale, torch.sigmoid if self.family == "logistic" else torch.special.ndtr)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            if self.family == "logistic":
                u = torch.rand(shape, device=self.loc.device).clamp(1e-7, 1 - 1e-7)
                noise = torch.log(u) - torch.log1p(-u)  # logistic(0, 1) by inverse CDF
            else:
                noise = torch.randn(shape, device=self.loc.device)
            return quantize(self.loc + self.scale * noise)
