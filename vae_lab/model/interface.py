"""The interface every model family offers; the rest of vae_lab (objectives, training, evaluation, pictures, loading)
talks to a model only through it. A family is one module: its class, its init-args rules (model_args.FAMILIES)."""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Distribution

from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.distributions.likelihoods import DISCRETE_ON_CONTINUOUS, build_likelihood
from vae_lab.distributions.kl import ANALYTIC, MONTE_CARLO, is_diagonal_gaussian, rate_per_dim


class LatentGroup(NamedTuple):
    """One group of latent variables: its name in metrics (rate_nats/<name>) and its shape per example."""

    name: str
    shape: tuple[int, ...]  # (D,) for a vector, (C, H, W) for a spatial group


@dataclass
class Terms:
    """One pass of a model over a batch x (B examples, K samples of z each): what objectives and metrics read.

    Per-example values in nats. `rate` has one column per latent group (summing to the total rate); `kl_units` is
    the analytic KL per free-bits unit (a latent dimension of a flat code, a group of a hierarchy) where it has a
    closed form. Families with one flat Gaussian code also give q_z, p_z and z (K, B, D), which objectives on the
    aggregate posterior (beta-TCVAE, FactorVAE, DIP-VAE) need.
    """

    x: Tensor
    p_x: Distribution  # p(x|z), batch shape (K, B)
    log_px_given_z: Tensor  # (K, B)
    rate: Tensor  # (B, G)
    rate_estimator: str  # ANALYTIC or MONTE_CARLO
    reconstruction: Callable[[], Tensor]  # x_hat (B, C, H, W) through the posterior code, without re-encoding
    kl_units: Tensor | None = None  # (B, U)
    log_q: Tensor | None = None  # (K, B) log q(z|x), all groups (when asked for: importance weights)
    log_p: Tensor | None = None  # (K, B) log p(z), all groups
    z: Tensor | None = None  # (K, B, D): flat families only
    q_z: Distribution | None = None
    p_z: Distribution | None = None
    # A family's own training terms beyond the bound (a VQ-VAE's commitment and codebook losses): a scalar every
    # objective adds to its loss, and per-example values (B,) logged under the names of the family's `aux_units`.
    aux_loss: Tensor | None = None
    aux_terms: dict[str, Tensor] = field(default_factory=dict)
    group_sizes: tuple[int, ...] = ()  # latent variables per group (KL balancing weighs groups by size)

    @property
    def distortion(self) -> Tensor:
        """-E_q[log p(x|z)] per example (B,), Monte Carlo over the K samples."""
        return -self.log_px_given_z.mean(0)

    def log_weights(self) -> Tensor:
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x): (K, B). Eq. 8's weights, Burda et al. 2016."""
        if self.log_q is None or self.log_p is None:
            raise ValueError("importance weights need terms(..., with_log_q=True)")
        return self.log_px_given_z + self.log_p - self.log_q


def flat_terms(q_z: Distribution, p_z: Distribution, z: Tensor, p_x: Distribution, x: Tensor,
               with_log_q: bool = False, reconstruction: Callable[[], Tensor] | None = None) -> Terms:
    """Terms of a one-group model from its distributions and K samples z (K, B, D). The rate is the analytic KL
    for two diagonal Gaussians (per dimension: the free-bits units), else its Monte Carlo estimate
    (1/K) sum_k log q(z_k|x) - log p(z_k) at the same z (Kingma & Welling 2014, Eq. 6)."""
    log_q = log_p = kl_units = None
    if with_log_q:
        log_q, log_p = q_z.log_prob(z), p_z.log_prob(z)  # (K, B)
    if is_diagonal_gaussian(q_z) and is_diagonal_gaussian(p_z):
        estimator, kl_units = ANALYTIC, rate_per_dim(q_z, p_z)  # (B, D)
        rate = kl_units.sum(-1)
    else:
        estimator = MONTE_CARLO
        rate = (log_q - log_p).mean(0) if with_log_q else (q_z.log_prob(z) - p_z.log_prob(z)).mean(0)
    return Terms(x=x, p_x=p_x, log_px_given_z=p_x.log_prob(x), rate=rate.unsqueeze(-1), rate_estimator=estimator,
                 reconstruction=reconstruction or _no_reconstruction, kl_units=kl_units, log_q=log_q, log_p=log_p,
                 z=z, q_z=q_z, p_z=p_z)


def _no_reconstruction() -> Tensor:
    raise ValueError("these terms were built without a decoder to reconstruct through")


class ModelFamily:
    """What a model family implements (mixed into an nn.Module). Attributes every family sets: in_shape,
    conditional, num_classes, likelihood (a Likelihood), likelihood_levels."""

    family: str = ""
    """Its name in model.family and model_args.FAMILIES."""
    flat_code: bool = False
    """True when the latent is one Gaussian vector: latent scatter, 2-D manifold, traversals, the disentangling
    objectives and disentanglement metrics apply. Others skip those with a note."""
    log_weights_bounded: bool = False
    """True when log_weights bounds its own memory for any K (encoder once, the samples in chunks): IWAE-k then asks
    for all K at once instead of chunking from the outside (which would re-run the encoder per chunk)."""
    aux_units: dict[str, str] = {}
    """Terms.aux_terms this family reports -> the unit suffix of their metric names ("_nats", "" for a loss)."""

    def latent_groups(self) -> tuple[LatentGroup, ...]:
        """The latent groups, top first: their names in metrics (rate_nats/<name>) and shapes per example."""
        raise NotImplementedError

    @property
    def rate_estimator(self) -> str:
        """How `terms` computes the rate (ANALYTIC: closed-form KLs per group; MONTE_CARLO: log q - log p at z);
        metrics and evaluations say which."""
        return ANALYTIC

    def terms(self, x: Tensor, y: Tensor | None = None, num_samples: int = 1, seed: int | None = None,
              with_log_q: bool = False) -> Terms:
        """The pass objectives read. seed: draw z with noise from a generator seeded so (evaluation), else rsample."""
        raise NotImplementedError

    def sample(self, n: int, y: Tensor | None = None, temperature: float = 1.0, mean: bool = True) -> Tensor:
        """n images (n, C, H, W): z from the prior (scales times `temperature`), then the mean (or a sample) of p(x|z)."""
        raise NotImplementedError

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The mean of p(x|z) at the posterior code of x: (B, C, H, W)."""
        raise NotImplementedError

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """forward without gradients: the reconstruction pictures and metrics use."""
        return self(x, y)

    def log_weights(self, x: Tensor, y: Tensor | None, num_samples: int) -> tuple[Tensor, Tensor]:
        """(log w (K, B), log p(x|z) (K, B)) for K = num_samples draws z ~ q(z|x): what IWAE-k reads."""
        t = self.terms(x, y, num_samples, with_log_q=True)
        return t.log_weights(), t.log_px_given_z

    @property
    def latent_size(self) -> int:
        """Latent variables per example, all groups."""
        total = 0
        for group in self.latent_groups():
            size = 1
            for n in group.shape:
                size *= n
            total += size
        return total

    def set_likelihood(self, name: str, scale: float, min_scale: float, components: int, levels: int | None) -> None:
        """p(x|z)'s family and its settings (every family's likelihood init args), after `in_shape` is set: a
        discretised likelihood needs the data's grey levels (None: continuous data) and is refused without them."""
        self.likelihood = build_likelihood(name)
        if self.likelihood.kind == "discrete" and levels is None:
            raise ConfigError(DISCRETE_ON_CONTINUOUS.format(likelihood=name))
        self.likelihood_levels = levels
        self.likelihood_kwargs = {"scale": scale, "min_scale": min_scale, "channels": self.in_shape[0],
                                  "components": components, "levels": levels or 256}

    def labels(self, y: Tensor | int | None) -> Tensor | int | None:
        """The labels this model sees (a batch's, or one class index): y for a conditional model, None for an
        unconditional one (which must not). The one place a caller drops labels."""
        return y if self.conditional else None

    def condition(self, y: Tensor | None, n: int) -> Tensor | None:
        """One-hot labels (n, num_classes) for a conditional model (repeated k-major over samples), None otherwise."""
        if not self.conditional:
            return None
        if y is None or (y < 0).any():
            raise ConfigError("a conditional model needs a class label for every example (got none or -1)")
        onehot = torch.nn.functional.one_hot(y, self.num_classes).float()  # (B, classes)
        return onehot.repeat(n // onehot.shape[0], 1)  # (K*B, classes), k-major like z.reshape(-1, D)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, *, revision: str | None = None,
                        map_location: str = "cpu", **download_kwargs):
        """A ready model (eval mode) from a Hub id ('owner/name[@revision]') or a local artifact directory.

        Replaces the mixin's loader, which falls back to pickles and loads non-strictly: config.json names its
        family (`_class_name`; none: the VAE), is checked against that family's schema, and model.safetensors must
        match it exactly (vae_lab/artifact.py). Called on a family's class, an artifact of another family is refused.
        """
        from vae_lab import artifact, hub
        from vae_lab.model.registry import family_class

        def resolve(config: dict) -> type:
            found = family_class(config)
            if not issubclass(found, cls):
                raise CheckpointError(f"{pretrained_model_name_or_path} holds a {found.__name__}, not a "
                                      f"{cls.__name__}: load it with vae_lab.model.load_pretrained")
            return found

        from vae_lab.run_dir import recover_swap

        path = Path(pretrained_model_name_or_path).expanduser()
        recover_swap(path)  # a swap a crash interrupted: as load_model does
        if path.is_dir():
            if revision:
                raise CheckpointError(f"revision={revision!r} applies to Hub ids, not to the local directory {path}")
            return artifact.load_artifact(path, resolve, map_location)
        repo_id, pinned = hub.split_revision(str(pretrained_model_name_or_path))
        return artifact.load_artifact(hub.download_artifact(repo_id, revision or pinned, **download_kwargs),
                                      resolve, map_location)


def check_temperature(temperature: float) -> float:
    """temperature > 0 (the prior's scales are multiplied by it when sampling), else one ConfigError line."""
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 < temperature < math.inf:
        raise ConfigError(f"temperature={temperature!r} is invalid: must be a number > 0 (1: the prior itself; "
                          "0.6-0.9 give smoother samples)")
    return float(temperature)
