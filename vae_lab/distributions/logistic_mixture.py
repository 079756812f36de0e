"""The discretised mixture of logistics over images of L grey levels (8-bit: L = 256), with channel coupling
(PixelCNN++, Salimans et al. 2017).

Per pixel, K components; under component i the channels are generated in order, channel c being a discretised
logistic with mean mu_ic + sum_{j<c} alpha_icj x_j (Salimans et al. 2017, Sec. 2.2: for RGB, G depends on R and B on
R and G). The mixture is over whole pixels, so log p(pixel) = logsumexp_i [log pi_i + sum_c log P_i(x_c | x_<c)].
"""

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from vae_lab.distributions.discretized import LEVELS, binned_mean, check_levels, log_mass_logistic, quantize, to_level


def num_coefficients(channels: int) -> int:
    """Coupling coefficients per component: one per pair j < c, C (C - 1) / 2 (3 for RGB)."""
    return channels * (channels - 1) // 2


def num_params(channels: int, components: int) -> int:
    """Decoder channels per pixel: K mixture logits, K C means, K C scales, K C(C-1)/2 coefficients (10 K for RGB)."""
    return components * (1 + 2 * channels + num_coefficients(channels))


def _pairs(channels: int) -> list[tuple[int, int]]:
    """(c, j) for j < c in the order of the coefficients: (1, 0), (2, 0), (2, 1), ... as in PixelCNN++."""
    return [(c, j) for c in range(channels) for j in range(c)]


class DiscretizedLogisticMixture(Distribution):
    """p(x) over images (C, H, W) in k / (L-1); batch shape: the leading dims of `logits`.

    Args:
        logits: mixture logits (..., K, H, W).
        loc, scale: (..., K, C, H, W); scale > 0.
        coeffs: coupling coefficients (..., K, C(C-1)/2, H, W), in the order of `_pairs`.
        levels: L, the data's grey levels (256 for 8-bit data).
    """

    arg_constraints = {}
    support = constraints.unit_interval

    def __init__(self, logits, loc, scale, coeffs, validate_args: bool | None = False, levels: int = LEVELS):
        self.logits, self.loc, self.scale, self.coeffs = logits, loc, scale, coeffs
        self.levels = check_levels(levels)
        self.channels = loc.shape[-3]
        super().__init__(batch_shape=logits.shape[:-3], event_shape=loc.shape[-3:], validate_args=validate_args)

    def _coupled_loc(self, x: torch.Tensor) -> torch.Tensor:
        """mu_ic + sum_{j<c} alpha_icj x_j for x (..., 1, C, H, W): (..., K, C, H, W)."""
        if self.channels == 1:
            return self.loc
        means = [self.loc[..., c, :, :] for c in range(self.channels)]
        for p, (c, j) in enumerate(_pairs(self.channels)):
            means[c] = means[c] + self.coeffs[..., p, :, :] * x[..., j, :, :]
        return torch.stack(torch.broadcast_tensors(*means), dim=-3)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        level = to_level(x, self.levels).unsqueeze(-4)  # (..., 1, C, H, W)
        loc = self._coupled_loc(level / (self.levels - 1))  # coupling on the level values, as the data are k / (L-1)
        # (..., K, H, W): the channels of one component
        log_pixel = log_mass_logistic(level, loc, self.scale, self.levels).sum(-3)
        log_mix = F.log_softmax(self.logits, dim=-3)
        return torch.logsumexp(log_mix + log_pixel, dim=-3).sum((-2, -1))  # (...,)

    @property
    def mean(self) -> torch.Tensor:
        """sum_i pi_i m_i with m_ic the binned mean of channel c given the earlier channels at their means m_i<c.

        Exact for one channel and for uncoupled channels; with coupling E[x_c] = E[g(mu + alpha x_<c)] is replaced by
        g(mu + alpha E[x_<c]) for the binned-mean function g (exact where g is linear, i.e. away from the edges):
        the exact mean would sum over L^(C-1) joint levels. Used for pictures only; log_prob is exact.
        """
        means = []
        for c in range(self.channels):
            loc = self.loc[..., c, :, :]
            for p, (cc, j) in enumerate(_pairs(self.channels)):
                if cc == c:
                    loc = loc + self.coeffs[..., p, :, :] * means[j]
            means.append(binned_mean(loc, self.scale[..., c, :, :], torch.sigmoid, self.levels))
        weights = F.softmax(self.logits, dim=-3).unsqueeze(-3)  # (..., K, 1, H, W)
        return (weights * torch.stack(means, dim=-3)).sum(-4)  # (..., C, H, W)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """A component per pixel, then the channels in order, each quantised before the next sees it."""
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.logits.shape  # (S..., B..., K, H, W)
            gumbel = -torch.log(-torch.log(torch.rand(shape, device=self.logits.device).clamp(1e-10, 1 - 1e-7)))
            pick = F.one_hot((self.logits + gumbel).argmax(-3), self.logits.shape[-3])  # (..., H, W, K)
            pick = pick.movedim(-1, -3).unsqueeze(-3).to(self.loc.dtype)  # (..., K, 1, H, W)
            chosen = lambda t: (t * pick).sum(-4)  # noqa: E731  (..., K, P, H, W) -> (..., P, H, W)
            loc, scale, coeffs = chosen(self.loc), chosen(self.scale), chosen(self.coeffs)
            u = torch.rand(loc.shape, device=loc.device).clamp(1e-7, 1 - 1e-7)
            noise = torch.log(u) - torch.log1p(-u)  # logistic(0, 1)
            xs = []
            for c in range(self.channels):
                shift = sum((coeffs[..., p, :, :] * xs[j] for p, (cc, j) in enumerate(_pairs(self.channels))
                             if cc == c), torch.zeros_like(loc[..., c, :, :]))
                xs.append(quantize(loc[..., c, :, :] + shift + scale[..., c, :, :] * noise[..., c, :, :], self.levels))
            return torch.stack(xs, dim=-3)


def from_raw(raw: torch.Tensor, channels: int, components: int, min_scale: float,
             levels: int = LEVELS) -> DiscretizedLogisticMixture:
    """The mixture from decoder output (..., num_params(C, K), H, W): [logits | means | raw scales | raw coeffs].

    Means are unconstrained (edge bins absorb the tails); scales softplus + floor (no clamp of a log-scale);
    coefficients tanh-squashed as in PixelCNN++.
    """
    k, c, h, w = components, channels, raw.shape[-2], raw.shape[-1]
    logits, loc, raw_scale, raw_coeffs = raw.split([k, k * c, k * c, k * num_coefficients(c)], dim=-3)
    lead = raw.shape[:-3]
    loc = loc.reshape(*lead, k, c, h, w)
    scale = F.softplus(raw_scale.reshape(*lead, k, c, h, w)) + min_scale
    coeffs = torch.tanh(raw_coeffs.reshape(*lead, k, num_coefficients(c), h, w))
    return DiscretizedLogisticMixture(logits, loc, scale, coeffs, levels=levels)
