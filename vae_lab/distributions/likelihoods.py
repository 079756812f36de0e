"""Likelihoods p(x|z) over images in [0, 1], built from raw decoder output (..., P, H, W).

Each returns a torch Distribution whose event is the whole image (C, H, W), so `log_prob(x)` is per example in nats
with every normalising constant included. What that number is a log-probability *of* depends on the family's `kind`
and on the data (binary, 8-bit, dequantised): vae_lab.units.likelihood_status says.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Distribution, Independent, Normal

from vae_lab.distributions.continuous_bernoulli import ContinuousBernoulliLogits
from vae_lab.distributions.discretized import Discretized
from vae_lab.distributions.logistic_mixture import from_raw as logistic_mixture_from_raw
from vae_lab.distributions.logistic_mixture import num_params as logistic_mixture_params
from vae_lab.errors import choices_error

_IMAGE_DIMS = 3  # (C, H, W): the event of p(x|z)
KINDS = {
    "binary": "a probability mass on pixels in {0, 1}",
    "discrete": "a probability mass on the L levels k/(L-1) of discrete pixels (L = 256 for 8-bit data)",
    "density": "a probability density on real-valued pixels",
}


@dataclass(frozen=True)
class Likelihood:
    """A named family p(x|z): what its log_prob measures (`kind`, one of KINDS), its decoder channels and builder.

    `out_channels(image_channels, components)` is the number of decoder output channels it reads.
    `fused_log_prob`: optional (base distribution, x) -> log p(x|z) summed over the image, the same numbers as
    the Distribution's log_prob in fewer passes over memory (the IWAE evaluator's hot loop); None: log_prob.
    """

    name: str
    kind: str
    out_channels: Callable[[int, int], int]
    build: Callable[..., Distribution]
    fused_log_prob: Optional[Callable[[Distribution, torch.Tensor], torch.Tensor]] = None

    def __call__(self, raw: torch.Tensor, **kwargs) -> Distribution:
        # log-probabilities in float32 even when the decoder ran under bf16/fp16 autocast
        return self.build(raw.float(), **kwargs)

    def log_prob(self, p_x: Distribution, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image for p_x built by this likelihood: (..., C, H, W) -> (...); fused when available."""
        if self.fused_log_prob is None or not isinstance(p_x, Independent):
            return p_x.log_prob(x)
        return self.fused_log_prob(p_x.base_dist, x)


def _per_channel(n: int) -> Callable[[int, int], int]:
    return lambda channels, components: n * channels


def _independent(base: Distribution) -> Distribution:
    return Independent(base, _IMAGE_DIMS)


def _bernoulli(raw, **_):
    # logits form: stable, and allowed under autocast (F.binary_cross_entropy is not).
    # validate_args=False: the seeds train Bernoulli on grey-level targets in [0, 1] (then not a likelihood).
    return _independent(Bernoulli(logits=raw, validate_args=False))


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_PRODUCT_GROUP = 112  # factors in [1/2, 1] per product: 2^-112 stays a normal float32 (> 2^-126)


def _sum_log_sigmoid(a: torch.Tensor) -> torch.Tensor:
    """sum_j log sigmoid(a_j) over the last dim for a >= 0, as the log of products of <= 112 factors each.

    One log per 112 elements instead of one log1p per element (log1p is the slow part of softplus on CPU); every
    factor lies in [1/2, 1], so each product is a normal float32 and the rounding error stays ~ 112 ulp.
    `log`, not `log_`: prod's backward reads its output, so an in-place log would break `.backward()`.
    """
    a = torch.sigmoid(a.abs())  # (..., N) in [1/2, 1]
    n = a.shape[-1]
    whole = n - n % _PRODUCT_GROUP
    total = a[..., :whole].unflatten(-1, (-1, _PRODUCT_GROUP)).prod(-1).log().sum(-1)
    if whole < n:
        total = total + a[..., whole:].prod(-1).log()
    return total


def _bernoulli_log_prob(dist: Bernoulli, x: torch.Tensor) -> torch.Tensor:
    """sum x l - softplus(l) over the image, with softplus(l) = relu(l) - log sigmoid(|l|): (..., C, H, W) -> (...)."""
    logits = dist.logits.flatten(-_IMAGE_DIMS)  # (..., N)
    x = x.to(logits.dtype).flatten(-_IMAGE_DIMS).expand_as(logits)
    x_dot_l = torch.linalg.vecdot(logits, x)  # (...): one pass, no (..., N) temporary
    return x_dot_l - torch.relu(logits).sum(-1) + _sum_log_sigmoid(logits)


def _normal_log_prob(dist: Normal, x: torch.Tensor) -> torch.Tensor:
    """sum log N(x; mu, sigma^2) over the image from u = (x - mu) / sigma: (..., C, H, W) -> (...)."""
    loc, scale = dist.loc.flatten(-_IMAGE_DIMS), dist.scale.flatten(-_IMAGE_DIMS)  # (..., N)
    u = (x.to(loc.dtype).flatten(-_IMAGE_DIMS) - loc).div_(scale)
    return -0.5 * torch.linalg.vecdot(u, u) - scale.log().sum(-1) - loc.shape[-1] * _HALF_LOG_2PI


def _continuous_bernoulli(raw, **_):
    # The normalised density on [0, 1] (Loaiza-Ganem & Cunningham 2019), log C exact for every logit.
    return _independent(ContinuousBernoulliLogits(raw))


def _gaussian_fixed(raw, scale: float = 0.1, **_):
    # The seeds' "MSE loss" made honest: N(x; sigmoid(raw), scale^2) with its constants.
    # sigmoid keeps the mean on the data range [0, 1] (the seed's Tanh output, rescaled).
    loc = torch.sigmoid(raw)
    return _independent(Normal(loc, torch.full_like(loc, scale), validate_args=False))


def _loc_scale(raw, min_scale):
    """[mean | raw scale] along channels -> (mean, softplus(raw scale) + min_scale)."""
    loc, raw_scale = raw.chunk(2, dim=-_IMAGE_DIMS)
    return loc, F.softplus(raw_scale) + min_scale


def _gaussian_learned(raw, min_scale: float = 1e-3, **_):
    # Decoder predicts a per-pixel scale too: raw = [mean logits | raw scale] along channels.
    loc, scale = _loc_scale(raw, min_scale)
    return _independent(Normal(torch.sigmoid(loc), scale, validate_args=False))


def _discretized(family: str):
    def build(raw, min_scale: float = 1e-3, levels: int = 256, **_):
        # unconstrained mean: the edge bins absorb everything beyond 0 and 1 (Salimans et al. 2017)
        loc, scale = _loc_scale(raw, min_scale)
        return _independent(Discretized(loc, scale, family, levels=levels))

    return build


def _logistic_mixture(raw, min_scale: float = 1e-3, channels: int = 1, components: int = 10, levels: int = 256, **_):
    return logistic_mixture_from_raw(raw, channels, components, min_scale, levels)


LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": Likelihood("bernoulli", "binary", _per_channel(1), _bernoulli, _bernoulli_log_prob),
    "continuous_bernoulli": Likelihood("continuous_bernoulli", "density", _per_channel(1), _continuous_bernoulli),
    "gaussian": Likelihood("gaussian", "density", _per_channel(1), _gaussian_fixed, _normal_log_prob),
    "gaussian_learned": Likelihood("gaussian_learned", "density", _per_channel(2), _gaussian_learned,
                                   _normal_log_prob),
    "discretized_logistic": Likelihood("discretized_logistic", "discrete", _per_channel(2),
                                       _discretized("logistic")),
    "discretized_gaussian": Likelihood("discretized_gaussian", "discrete", _per_channel(2),
                                       _discretized("gaussian")),
    "discretized_logistic_mixture": Likelihood("discretized_logistic_mixture", "discrete", logistic_mixture_params,
                                               _logistic_mixture),
}


DISCRETE_ON_CONTINUOUS = ("model.likelihood={likelihood} is invalid for continuous (float) data: a discretised "
                          "likelihood needs grey levels to bin; use model.likelihood=gaussian_learned (or auto)")


def build_likelihood(name: str) -> Likelihood:
    """The likelihood family called `name`; ConfigError listing the valid names otherwise."""
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise choices_error("model.likelihood", name, LIKELIHOODS) from None
