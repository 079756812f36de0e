"""The VAE family: one flat latent vector; encode x to q(z|x), decode z to p(x|z), sample from p(z). No loss here."""

from typing import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.distributions import Distribution

from vae_lab.distributions import build_posterior, build_prior, sample_with_seed
from vae_lab.distributions.kl import is_diagonal_gaussian
from vae_lab.distributions.prior import VAMP_CONDITIONAL
from vae_lab.errors import ConfigError
from vae_lab.model.interface import LatentGroup, ModelFamily, Terms, check_temperature, flat_terms
from vae_lab.nets import build_nets


class VAE(
    ModelFamily,
    nn.Module,
    PyTorchModelHubMixin,
    library_name="vae_lab",
    tags=["vae", "vae_lab", "variational-autoencoder"],
    repo_url="https://github.com/vae-lab/vae_lab",
):
    """A variational autoencoder with one latent vector, whose init args (all JSON-able) are its whole config.

    Args:
        in_shape: (C, H, W) of the images, values in [0, 1].
        likelihood_components: mixture components K of `discretized_logistic_mixture` (unused by the others).
        likelihood_levels: the data's grey levels L (pixels k / (L-1); 256 for 8-bit), the bins of the discretized_*
            likelihoods; None for continuous data (then no discretized_* likelihood).
        net: keyword arguments of the architecture (see configs/architecture/).
        num_classes: number of labels; used as one-hot conditioning when `conditional`.
        prior: p(z), one of distributions.PRIORS (standard_normal, mog, vamp); prior_* its settings (K components,
            VampPrior pseudo-input activation and init). See configs/prior/.
        posterior: q(z|x), one of distributions.POSTERIORS (gaussian, iaf); posterior_* the IAF's steps, MADE
            width and depth, and context width. See configs/posterior/.
    """

    family = "vae"
    flat_code = True

    def __init__(
        self,
        in_shape: Sequence[int],
        latent_dim: int = 16,
        architecture: str = "mlp",
        net: dict | None = None,
        likelihood: str = "bernoulli",
        likelihood_scale: float = 0.1,
        likelihood_min_scale: float = 1e-3,
        likelihood_components: int = 10,
        likelihood_levels: int | None = 256,
        posterior_min_scale: float = 1e-4,
        conditional: bool = False,
        num_classes: int = 0,
        prior: str = "standard_normal",
        prior_components: int = 10,
        prior_activation: str = "hardtanh",
        prior_init: str = "data",
        posterior: str = "gaussian",
        posterior_steps: int = 4,
        posterior_hidden_dim: int = 320,
        posterior_hidden_layers: int = 1,
        posterior_context_dim: int = 64,
    ):
        super().__init__()
        if conditional and num_classes < 1:
            raise ConfigError(
                "model.conditional=true needs a labelled dataset (num_classes >= 1); this dataset has no labels"
            )
        if conditional and prior == "vamp":
            raise ConfigError(VAMP_CONDITIONAL)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.latent_dim = latent_dim
        self.conditional = conditional
        self.num_classes = num_classes
        self.set_likelihood(likelihood, likelihood_scale, likelihood_min_scale, likelihood_components,
                            likelihood_levels)
        self.posterior_min_scale = posterior_min_scale
        # Modules without weights (standard_normal, gaussian) add nothing to the state_dict: today's keys.
        self.posterior_module = build_posterior(
            posterior, latent_dim=latent_dim, min_scale=posterior_min_scale, num_steps=posterior_steps,
            hidden_dim=posterior_hidden_dim, hidden_layers=posterior_hidden_layers, context_dim=posterior_context_dim)
        out_channels = self.likelihood.out_channels(self.in_shape[0], likelihood_components)
        self.encoder, self.decoder = build_nets(
            architecture,
            in_shape=self.in_shape,
            latent_dim=latent_dim,
            out_channels=out_channels,
            cond_dim=num_classes if conditional else 0,
            context_dim=self.posterior_module.context_dim,
            **(net or {}),
        )
        # after the nets: with one seed, every prior starts from the same encoder and decoder weights
        self.prior_module = build_prior(prior, latent_dim=latent_dim, num_components=prior_components,
                                        in_shape=self.in_shape, activation=prior_activation, init=prior_init)

    def _condition(self, y: torch.Tensor | None, n: int) -> torch.Tensor | None:
        return self.condition(y, n)

    def latent_groups(self) -> tuple[LatentGroup, ...]:
        return (LatentGroup("z", (self.latent_dim,)),)

    @property
    def rate_estimator(self) -> str:
        """How the rate KL(q || p) is computed: 'analytic_kl' (both diagonal Gaussians) or 'monte_carlo'
        (log q(z|x) - log p(z) at the sampled z); metrics and evaluations say which."""
        factorised = self.prior_module.diagonal_gaussian and self.posterior_module.diagonal_gaussian
        return "analytic_kl" if factorised else "monte_carlo"

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z|x): batch shape (B,), event shape (latent_dim,)."""
        return self.posterior_module(self.encoder(x, self._condition(y, x.shape[0])))

    def _encode_base(self, u: torch.Tensor) -> Distribution:
        """The encoder's diagonal Gaussian at images u (K, C, H, W): the VampPrior's components q(z|u_k)
        (with an IAF posterior, the flow's base: its density at arbitrary z would cost D passes per step)."""
        return self.posterior_module.base(self.encoder(u, None))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x|z) for z of shape (..., latent_dim): batch shape (...), event shape (C, H, W).

        Leading sample dims are flattened for the net; y (B,) is repeated over them (z is (K, B, D)).
        """
        lead = z.shape[:-1]
        flat = z.reshape(-1, self.latent_dim)  # (K*B, D)
        raw = self.decoder(flat, self._condition(y, flat.shape[0]))  # (K*B, K_out, H, W)
        return self.likelihood(raw.reshape(*lead, *raw.shape[1:]), **self.likelihood_kwargs)

    def prior(self) -> Distribution:
        """p(z): event shape (latent_dim,). A VampPrior encodes its pseudo-inputs here, so build it once per step."""
        return self.prior_module(self._encode_base, next(self.parameters()).device)

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None, num_samples: int = 1, seed: int | None = None,
              with_log_q: bool = False) -> Terms:
        """x -> q(z|x) -> K samples z (K, B, D) -> p(x|z), and the rate (model.interface.flat_terms)."""
        q_z = self.encode(x, y)
        z = q_z.rsample((num_samples,)) if seed is None else sample_with_seed(q_z, num_samples, seed)  # (K, B, D)
        p_x = self.decode(z, y)  # batch shape (K, B)
        return flat_terms(q_z, self.prior(), z, p_x, x, with_log_q, lambda: self.decode(q_z.code(), y).mean)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, temperature: float = 1.0,
               mean: bool = True) -> torch.Tensor:
        """n images from the model: z ~ p(z), then the mean of p(x|z) (or a sample of it): (n, C, H, W).

        temperature T != 1 scales the prior's standard deviation (z = mu + T sigma eps): defined for a diagonal
        Gaussian prior (standard_normal); mixtures (mog, vamp) are refused.
        """
        temperature = check_temperature(temperature)
        p_z = self.prior()
        if temperature == 1.0:
            z = p_z.sample((n,))
        elif is_diagonal_gaussian(p_z):
            base = p_z.base_dist
            z = base.loc + temperature * base.scale * torch.randn((n, *base.loc.shape[-1:]), device=base.loc.device)
        else:
            raise ConfigError(f"temperature={temperature} needs a Gaussian prior (prior=standard_normal): a mixture "
                              "prior's temperature is not defined here; use temperature=1")
        p_x = self.decode(z, y)
        return p_x.mean if mean else p_x.sample()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of p(x|z) at the posterior code z (E_q[z]; an IAF's flow of the base mean): (B, C, H, W)."""
        return self.decode(self.encode(x, y).code(), y).mean
