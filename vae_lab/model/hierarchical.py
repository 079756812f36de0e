"""The hierarchical family: latent groups z_1..z_L (top first), each with a prior p(z_l | z_<l) and a posterior
q(z_l | x, z_<l), diagonal Gaussians computed top-down (LVAE, Sønderby et al. 2016; VDVAE, Child 2021). No loss here.

log p(x) >= E_q[log p(x|z)] - sum_l E_q(z_<l)[KL(q(z_l | x, z_<l) || p(z_l | z_<l))]  (Vahdat & Kautz 2020, Eq. 2):
each group's KL is analytic given the sampled z_<l, so the rate has one column per group.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from vae_lab.distributions.kl import ANALYTIC
from vae_lab.errors import ConfigError
from vae_lab.model.interface import LatentGroup, ModelFamily, Terms, check_temperature
from vae_lab.nets.hierarchical import BottomUp, TopDown, level_sizes

SCALE_OFFSET = math.log(math.e - 1)  # softplus(0 + offset) = 1: a zero-initialised head starts at unit scale
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
MAX_DECODED = 1024  # images per decoder call when log_weights runs without gradients (IWAE evaluation)

Noise = Callable[[torch.Size], Tensor]  # shape (N, Z, H, W) -> standard normal noise (or zeros: the mean)


def gaussian(params: Tensor, min_scale: float) -> Normal:
    """N(loc, scale^2) per element from params (N, 2Z, H, W) = [loc | raw scale].

    scale = softplus(raw + offset) + min_scale: gradients never vanish, the scale never reaches 0 (NVAE / VDVAE
    practice), and raw = 0 gives scale ~1. In float32 even when the nets ran under bf16/fp16 autocast.
    """
    params = params.to(torch.promote_types(params.dtype, torch.float32))
    loc, raw_scale = params.chunk(2, dim=1)
    return Normal(loc, F.softplus(raw_scale + SCALE_OFFSET) + min_scale, validate_args=False)


@dataclass
class GroupDraw:
    """One group's z (N, Z, H, W), the Normals it came from, and per example (N,): KL(q || p), log q(z), log p(z)."""

    z: Tensor
    p: Normal
    q: Normal | None = None
    kl: Tensor | None = None
    log_q: Tensor | None = None
    log_p: Tensor | None = None


def draw_group(p: Normal, q: Normal | None, eps: Tensor, temperature: float = 1.0,
               with_log_q: bool = False) -> GroupDraw:
    """z = mu_q + sigma_q eps from q when given (with the analytic KL(q || p) over the group's dims and, when asked,
    log q(z) and log p(z)), else z = mu_p + temperature sigma_p eps from the prior."""
    if q is None:
        return GroupDraw(p.loc + temperature * p.scale * eps, p)
    z = q.loc + q.scale * eps  # (N, Z, H, W)
    kl = kl_divergence(q, p).flatten(1).sum(-1)  # (N,)
    log_q = log_p = None
    if with_log_q:
        # log q from the noise itself: sum(-eps^2/2 - log sigma_q - log(2 pi)/2), no (z - mu) / sigma round trip
        log_q = (-0.5 * eps.square() - q.scale.log() - _HALF_LOG_2PI).flatten(1).sum(-1)
        log_p = p.log_prob(z).flatten(1).sum(-1)
    return GroupDraw(z, p, q, kl, log_q, log_p)


def hierarchy_terms(x: Tensor, draws: list[GroupDraw], p_x, log_px_given_z: Tensor, num_samples: int,
                    with_log_q: bool, reconstruction: Callable[[], Tensor]) -> Terms:
    """Terms of K samples of a hierarchy (draws over N = K B examples, k-major): the rate (B, G) is each group's
    analytic KL averaged over the K samples of z_<l; log q and log p (K, B) sum over the groups."""
    k, b = num_samples, x.shape[0]
    rate = torch.stack([d.kl.reshape(k, b) for d in draws], -1).mean(0)  # (B, G)
    log_q = log_p = None
    if with_log_q:
        log_q = torch.stack([d.log_q.reshape(k, b) for d in draws]).sum(0)  # (K, B)
        log_p = torch.stack([d.log_p.reshape(k, b) for d in draws]).sum(0)
    sizes = tuple(d.z[0].numel() for d in draws)  # latent variables per group
    return Terms(x=x, p_x=p_x, log_px_given_z=log_px_given_z, rate=rate, rate_estimator=ANALYTIC,
                 reconstruction=reconstruction, kl_units=rate, log_q=log_q, log_p=log_p, group_sizes=sizes)


class Pass(NamedTuple):
    """One top-down pass: raw likelihood parameters (N, P, H, W) and one GroupDraw per group (top first)."""

    raw: Tensor
    draws: list[GroupDraw]


def _randn(seed: int | None, device: torch.device) -> Noise:
    """Standard normal noise from the global RNG, or from a generator seeded with `seed` (global RNG untouched)."""
    if seed is None:
        return lambda shape: torch.randn(shape, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=generator, device=device)


def _zeros(device: torch.device) -> Noise:
    return lambda shape: torch.zeros(shape, device=device)


def _repeat(t: Tensor | None, k: int) -> Tensor | None:
    """(B, ...) -> (K B, ...) k-major, as z.reshape(K * B, ...) is."""
    return None if t is None or k == 1 else t.repeat(k, *([1] * (t.dim() - 1)))


class HierarchicalVAE(
    ModelFamily,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vae_lab",
    tags=["vae", "vae_lab", "variational-autoencoder", "hierarchical-vae"],
    repo_url="https://github.com/vae-lab/vae_lab",
):
    """A top-down hierarchical VAE whose init args (all JSON-able) are its whole config.

    Geometry: the image is halved `downsamples` times (levels of H / 2^d, d = 0..downsamples; every halving exact);
    the `latent_resolutions` coarsest levels hold `groups_per_resolution` groups each, of `latent_channels` channels
    at that level's size. 28x28 with downsamples=2, latent_resolutions=2: groups at 7x7 then 14x14.

    Args:
        in_shape: (C, H, W) of the images, values in [0, 1].
        likelihood: p(x|z) as the VAE has it (distributions.LIKELIHOODS), with its likelihood_* args.
        channels: width of the residual stream (encoder and decoder).
        bottleneck: a cell's inner width as a fraction of `channels` (VDVAE's bottleneck_multiple).
        cells: residual cells per latent level of the encoder and per group of the decoder.
        free_level_cells: cells per level without latents (the finer ones), encoder and decoder alike.
        min_scale: floor of every prior and posterior scale.
    """

    family = "hierarchical"
    flat_code = False

    def __init__(
        self,
        in_shape: Sequence[int],
        likelihood: str = "bernoulli",
        likelihood_scale: float = 0.1,
        likelihood_min_scale: float = 1e-3,
        likelihood_components: int = 10,
        likelihood_levels: int | None = 256,
        conditional: bool = False,
        num_classes: int = 0,
        downsamples: int = 2,
        latent_resolutions: int = 2,
        groups_per_resolution: int = 2,
        channels: int = 32,
        bottleneck: float = 0.5,
        cells: int = 1,
        free_level_cells: int = 0,
        latent_channels: int = 4,
        min_scale: float = 1e-3,
    ):
        super().__init__()
        if conditional and num_classes < 1:
            raise ConfigError(
                "model.conditional=true needs a labelled dataset (num_classes >= 1); this dataset has no labels"
            )
        self.in_shape = tuple(int(s) for s in in_shape)
        sizes = level_sizes(self.in_shape[1:], downsamples)
        if latent_resolutions > len(sizes):
            raise ConfigError(f"model.latent_resolutions={latent_resolutions} needs model.downsamples >= "
                              f"{latent_resolutions - 1} (downsamples={downsamples} gives "
                              f"{len(sizes)} level(s): {', '.join(f'{h}x{w}' for h, w in sizes)})")
        self.conditional = conditional
        self.num_classes = num_classes
        self.set_likelihood(likelihood, likelihood_scale, likelihood_min_scale, likelihood_components,
                            likelihood_levels)
        self.min_scale = min_scale
        self.latent_channels = latent_channels
        latent_levels = list(range(downsamples - latent_resolutions + 1, downsamples + 1))
        cond_dim = num_classes if conditional else 0
        middle = max(1, round(channels * bottleneck))
        self.encoder = BottomUp(self.in_shape[0], channels, middle, cells, free_level_cells, downsamples, latent_levels,
                                cond_dim)
        out_channels = self.likelihood.out_channels(self.in_shape[0], likelihood_components)
        self.decoder = TopDown(sizes, channels, middle, cells, free_level_cells, latent_levels, groups_per_resolution,
                               latent_channels, out_channels, cond_dim)
        shapes = [(latent_channels, *sizes[d]) for d, blocks in self.decoder.plan() for _ in blocks]  # top first
        self._groups = tuple(LatentGroup(f"group_{l:02d}", shape) for l, shape in enumerate(shapes))

    def latent_groups(self) -> tuple[LatentGroup, ...]:
        return self._groups

    def _top_down(self, n: int, c: Tensor | None, features: dict[int, Tensor] | None, posterior_groups: int,
                  posterior_noise: Noise, prior_noise: Noise, temperature: float = 1.0,
                  with_log_q: bool = False) -> Pass:
        """The decoder over n codes: the top `posterior_groups` groups from q(z_l | x, z_<l) (encoder `features`
        at their levels), the rest from p(z_l | z_<l) with scales times `temperature`."""
        h = self.decoder.start(n, c)  # (N, channels, H_D, W_D)
        draws = []
        for d, blocks in self.decoder.plan():
            if not blocks:
                h = self.decoder.level(d, h)
            for block in blocks:
                posterior = len(draws) < posterior_groups
                q = gaussian(block.posterior(h, features[d]), self.min_scale) if posterior else None
                p_params, h = block.prior(h)
                p = gaussian(p_params, self.min_scale)  # p(z_l | z_<l): (N, Z, H_d, W_d)
                eps = (posterior_noise if posterior else prior_noise)(p.loc.shape)
                draws.append(draw_group(p, q, eps, temperature, with_log_q))
                h = block.merge(h, draws[-1].z)
            if d > self.decoder.first:
                h = self.decoder.between(h)
        return Pass(self.decoder.finish(h), draws)

    def _p_x(self, raw: Tensor, lead: tuple[int, ...]):
        """p(x|z) from raw parameters (N, P, H, W): batch shape `lead` (K, B) or (B,)."""
        return self.likelihood(raw.reshape(*lead, *raw.shape[1:]), **self.likelihood_kwargs)

    def hierarchy(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1, seed: int | None = None,
                  with_log_q: bool = False) -> Pass:
        """K samples of every group from the posterior (N = K B codes, k-major): the pass terms reads."""
        b = x.shape[0]
        features = self.encoder(x, self.condition(y, b))
        return self._posterior_pass(features, y, b, num_samples, _randn(seed, x.device), with_log_q)

    def _posterior_pass(self, features, y, b, k, noise, with_log_q) -> Pass:
        feats = {d: _repeat(f, k) if k > 1 else f for d, f in features.items()}  # (K B, channels, H_d, W_d)
        return self._top_down(k * b, self.condition(y, k * b), feats, len(self._groups), noise, noise,
                              with_log_q=with_log_q)

    def terms(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1, seed: int | None = None,
              with_log_q: bool = False) -> Terms:
        """x -> encoder features -> K top-down samples of the hierarchy -> p(x|z), rate per group (B, G)."""
        b = x.shape[0]
        features = self.encoder(x, self.condition(y, b))
        return self._terms(x, y, features, num_samples, _randn(seed, x.device), with_log_q)

    def _terms(self, x, y, features, k, noise, with_log_q) -> Terms:
        b = x.shape[0]
        raw, draws = self._posterior_pass(features, y, b, k, noise, with_log_q)
        p_x = self._p_x(raw, (k, b))  # batch shape (K, B)
        return hierarchy_terms(x, draws, p_x, p_x.log_prob(x), k, with_log_q,
                               lambda: self._mean_image(features, y, b))

    def _mean_image(self, features, y, b) -> Tensor:
        """The mean of p(x|z) at every group's posterior mean (zero noise), from the encoder features already made."""
        zeros = _zeros(next(iter(features.values())).device)
        raw, _ = self._top_down(b, self.condition(y, b), features, len(self._groups), zeros, zeros)
        return self._p_x(raw, (b,)).mean

    log_weights_bounded = True  # the encoder once, the decoder over chunks of at most MAX_DECODED images

    def log_weights(self, x: Tensor, y: Tensor | None, num_samples: int) -> tuple[Tensor, Tensor]:
        """(log w (K, B), log p(x|z) (K, B)): the encoder once; without gradients the decoder runs over chunks of
        at most MAX_DECODED images, so IWAE-5000 holds one chunk's activations, not K B images'."""
        b = x.shape[0]
        features = self.encoder(x, self.condition(y, b))
        chunk = num_samples if torch.is_grad_enabled() else max(1, MAX_DECODED // b)
        noise = _randn(None, x.device)
        log_w, log_px = [], []
        for start in range(0, num_samples, chunk):
            t = self._terms(x, y, features, min(chunk, num_samples - start), noise, True)
            log_w.append(t.log_weights())
            log_px.append(t.log_px_given_z)
        return torch.cat(log_w), torch.cat(log_px)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0, mean: bool = True) -> Tensor:
        """n images (n, C, H, W) by ancestral sampling z_l ~ p(z_l | z_<l), each prior's std times `temperature`."""
        temperature = check_temperature(temperature)
        device = self.decoder.top.device
        noise = _randn(None, device)
        raw, _ = self._top_down(n, self.condition(y, n), None, 0, noise, noise, temperature)
        p_x = self._p_x(raw, (n,))
        return p_x.mean if mean else p_x.sample()

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Mean of p(x|z) at the posterior means of every group: (B, C, H, W)."""
        return self._mean_image(self.encoder(x, self.condition(y, x.shape[0])), y, x.shape[0])

    @torch.no_grad()
    def reconstruct_keep(self, x: Tensor, y: Tensor | None = None, keep: int = 1,
                         temperature: float = 1.0) -> Tensor:
        """The top `keep` groups at their posterior means, the rest sampled from the prior (std times temperature),
        then the mean of p(x|z): what the top groups encode (VDVAE, Child 2021, Fig. 4)."""
        temperature = check_temperature(temperature)
        groups = len(self._groups)
        if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= groups:
            raise ConfigError(f"keep={keep!r} is invalid: must be an integer in [0, {groups}] (groups kept from "
                              "the posterior, top first)")
        b = x.shape[0]
        features = self.encoder(x, self.condition(y, b))
        raw, _ = self._top_down(b, self.condition(y, b), features, keep, _zeros(x.device), _randn(None, x.device),
                                temperature)
        return self._p_x(raw, (b,)).mean
