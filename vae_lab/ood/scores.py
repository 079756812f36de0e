"""Per-example out-of-distribution scores: higher means less typical of the model's training data.

Every score reads the model only through the family interface (terms, log_weights, reconstruct) except
likelihood regret, which re-optimises the parameters of a diagonal Gaussian q(z|x) (flat families only).
Units: nats, except input_complexity (bits, as Serra et al. 2020 state it).
"""

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from vae_lab.distributions.kl import is_diagonal_gaussian
from vae_lab.errors import ConfigError
from vae_lab.estimators import ChunkedIWAE, iwae_log_px


@dataclass
class Settings:
    """How the scores are estimated (configs/score.yaml)."""

    iwae_samples: int = 100
    elbo_samples: int = 1
    regret_steps: int = 50
    regret_lr: float = 0.5
    regret_samples: int = 8
    seed: int = 0


def neg_iwae(model, x: Tensor, y: Tensor | None, k: int) -> Tensor:
    """-L_k, the IWAE-k bound on -log p(x) (Burda et al. 2016, Eq. 8), nats (B,)."""
    if model.flat_code and hasattr(model, "encode"):  # the fast chunked estimator of one-vector families
        return -iwae_log_px(model, x, y, k).bound().float()
    acc, chunk = ChunkedIWAE(), max(1, 4096 // max(1, x.shape[0]))
    with torch.no_grad():
        for start in range(0, k, chunk):
            acc.update(*model.log_weights(x, y, min(chunk, k - start)))
    return -acc.bound().float()


def neg_elbo(model, x: Tensor, y: Tensor | None, num_samples: int, seed: int) -> Tensor:
    """-ELBO = distortion + rate, nats (B,) (its reconstruction term Monte Carlo over num_samples draws)."""
    with torch.no_grad():
        t = model.terms(x, y, num_samples, seed=seed)
        return (t.distortion + t.rate.sum(-1)).float()


def reconstruction_error(model, x: Tensor, y: Tensor | None) -> Tensor:
    """Squared error of the reconstruction (mean of p(x|z) at the posterior code), summed over pixels (B,)."""
    with torch.no_grad():
        return (model.reconstruct(x, y) - x).pow(2).flatten(1).sum(1).float()


def likelihood_regret(q_z: Distribution, p_z: Distribution, decode: Callable[[Tensor], Distribution], x: Tensor,
                      steps: int, lr: float, num_samples: int, seed: int) -> Tensor:
    """Likelihood regret (Xiao et al. 2020, Eq. 5) with the posterior's parameters re-optimised, nats (B,).

    ELBO(x; mu*, sigma*) - ELBO(x; mu(x), sigma(x)): the mean and log-scale of the diagonal Gaussian q(z|x) are
    re-optimised for each input alone (the paper re-optimises the encoder's weights instead), decoder and prior
    fixed. The ELBO is mean_k log w_k over `num_samples` draws of noise fixed once, so it is a deterministic
    function of the parameters; the best finite value seen is kept, so regret >= 0. Steps are natural-gradient
    steps of the Gaussian (Fisher 1/sigma^2 for mu, 2 for log sigma: mu += lr sigma^2 g_mu, log sigma += lr g / 2),
    which make one `lr` fit any posterior scale, each clipped to one sigma (mu) and a factor e^0.5 (sigma): a
    trust region, since a sharp likelihood makes the ELBO far from quadratic. Gradients are the path derivative
    ("sticking the landing", Roeder et al. 2017), exactly zero where q is the exact posterior (log w is then
    constant in z): an optimal encoder has regret 0.
    """
    if not is_diagonal_gaussian(q_z):
        raise ConfigError("likelihood_regret re-optimises a diagonal Gaussian q(z|x): this model's posterior is "
                          f"{type(getattr(q_z, 'base_dist', q_z)).__name__}; drop likelihood_regret from score=")
    base = q_z.base_dist
    loc = base.loc.detach().clone().requires_grad_(True)  # (B, D)
    log_scale = base.scale.detach().log().clone().requires_grad_(True)
    g = torch.Generator(device=loc.device).manual_seed(seed)
    eps = torch.randn((num_samples, *loc.shape), generator=g, device=loc.device, dtype=loc.dtype)  # (K, B, D)

    def elbo() -> Tensor:
        scale = log_scale.exp()
        z = loc + scale * eps  # (K, B, D)
        q = Independent(Normal(loc.detach(), scale.detach()), 1)  # path derivative only (STL)
        log_w = decode(z).log_prob(x) + p_z.log_prob(z) - q.log_prob(z)  # (K, B)
        return log_w.mean(0)  # (B,): the same value as without the stop-gradient

    start = best = None
    for step in range(steps + 1):
        value = elbo()
        current = value.detach()
        start = current if start is None else start
        best = current if best is None else torch.where(torch.isfinite(current), torch.maximum(best, current), best)
        if step == steps:
            break
        g_loc, g_log_scale = torch.autograd.grad(value.sum(), [loc, log_scale])  # per example: independent
        with torch.no_grad():  # ascent on the ELBO
            scale = log_scale.exp()
            loc += torch.nan_to_num(lr * scale.pow(2) * g_loc).clamp(-scale, scale)
            log_scale += torch.nan_to_num(lr * g_log_scale / 2).clamp(-0.5, 0.5)
    return (best - start).float()


def png_bits(x: Tensor, levels: int | None) -> Tensor:
    """L(x): bits of each image (B, C, H, W) in [0, 1] as an 8-bit PNG (zlib level 9), the compressor's length."""
    from PIL import Image

    top = 255 if levels is None else min(levels, 256) - 1
    a = (x.detach().cpu().clamp(0, 1) * top).round().to(torch.uint8).numpy()  # (B, C, H, W)
    bits = []
    for image in a:
        arr = image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=9)
        bits.append(8 * len(buf.getvalue()))
    return torch.tensor(bits, dtype=torch.float32)


class BatchScores:
    """The scores of one batch, each computed once (the IWAE bound is shared by three of them)."""

    def __init__(self, model, x: Tensor, y: Tensor | None, settings: Settings, background=None,
                 levels: int | None = 256, batch_index: int = 0):
        self.model, self.x, self.y, self.s = model, x, y, settings
        self.seed = settings.seed * 1_000_003 + batch_index  # one stream per batch, whatever the scores asked
        self.background, self.levels = background, levels
        self._cache: dict[str, Tensor] = {}

    def get(self, name: str) -> Tensor:
        if name not in self._cache:
            self._cache[name] = SCORES[name].compute(self).cpu()
        return self._cache[name]

    def background_iwae(self) -> Tensor:
        if self.background is None:
            raise ConfigError("likelihood_ratio needs a background model: background=<run dir | artifact | .ckpt | "
                              "Hub id> (one trained on perturbed inputs: write_background_data=bg.npz)")
        y = self.background.labels(self.y)
        return self.seeded(lambda: neg_iwae(self.background, self.x, y, self.s.iwae_samples)).cpu()

    def seeded(self, fn: Callable[[], Tensor]) -> Tensor:
        """fn() with torch's generators seeded by the batch's seed, restored after: the model and the background
        model see the same noise (common random numbers: the ratio of a model to itself is exactly 0)."""
        device = self.x.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            return fn()

    def regret(self) -> Tensor:
        model = self.model
        if not (model.flat_code and hasattr(model, "encode")):
            raise ConfigError(f"likelihood_regret re-optimises q(z|x) of a flat code; the {model.family} family "
                              "has none: drop likelihood_regret from score=")
        with torch.no_grad():
            q_z, p_z = model.encode(self.x, self.y), model.prior()
        with torch.enable_grad():
            return likelihood_regret(q_z, p_z, lambda z: model.decode(z, self.y), self.x, self.s.regret_steps,
                                     self.s.regret_lr, self.s.regret_samples, self.seed)


@dataclass(frozen=True)
class Score:
    compute: Callable[[BatchScores], Tensor]
    unit: str
    description: str
    needs_background: bool = False


SCORES: dict[str, Score] = {
    "iwae": Score(lambda b: b.seeded(lambda: neg_iwae(b.model, b.x, b.y, b.s.iwae_samples)), "nats",
                  "-log p(x), IWAE-k bound (k = iwae_samples)"),
    "elbo": Score(lambda b: neg_elbo(b.model, b.x, b.y, b.s.elbo_samples, b.seed), "nats", "-ELBO"),
    "recon": Score(lambda b: reconstruction_error(b.model, b.x, b.y), "squared error",
                   "squared error of the reconstruction, summed over pixels"),
    "likelihood_ratio": Score(lambda b: b.get("iwae") - b.background_iwae(), "nats",
                              "-[log p(x) - log p_background(x)], both IWAE-k (Ren et al. 2019)", True),
    "likelihood_regret": Score(lambda b: b.regret(), "nats",
                               "ELBO gain from re-optimising q(z|x)'s mean and log-scale (Xiao et al. 2020)"),
    "input_complexity": Score(lambda b: b.get("iwae") / math.log(2) - png_bits(b.x, b.levels), "bits",
                              "-log2 p(x) - L(x), L: PNG bits of the 8-bit image (Serra et al. 2020)"),
}


def check_scores(names: list[str]) -> None:
    """Known names, no repeats; else one ConfigError line listing the valid ones."""
    unknown = [n for n in names if n not in SCORES]
    if unknown or not names or len(set(names)) != len(names):
        raise ConfigError(f"score={names!r} is invalid: must be a non-empty list of distinct names from: "
                          f"{', '.join(SCORES)}")
