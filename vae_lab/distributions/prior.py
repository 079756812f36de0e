"""The prior p(z): N(0, I), a learned mixture of Gaussians, or the VampPrior.

A prior is an nn.Module whose weights (mixture parameters, pseudo-inputs) live in the VAE's state_dict, so
artifacts carry them; calling it returns a torch Distribution with event shape (latent_dim,). The maths are the
small functions at the top (no weights); the modules below only hold parameters and call them.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from vae_lab.distributions.gaussian import diagonal_normal_log_prob, is_diagonal_normal
from vae_lab.errors import ConfigError, choices_error

MIN_SCALE = 1e-4  # floor of the mixture's component scales: softplus(raw) + floor never reaches 0
LOG_PROB_CHUNK = 1 << 24  # elements of the (N, K, D) component tensor per log_prob chunk: bounds memory

VAMP_CONDITIONAL = ("prior=vamp does not support model.conditional=true: its pseudo-inputs have no class label "
                    "for the conditional encoder; use prior=mog or prior=standard_normal")

# encode_base: images (K, C, H, W) -> the diagonal Gaussian q(z|u) of the encoder, batch shape (K,)
EncodeBase = Callable[[Tensor], Independent]


def standard_normal(latent_dim: int, device=None) -> Independent:
    """p(z) = N(0, I) over latent_dim dimensions, event shape (latent_dim,)."""
    zeros = torch.zeros(latent_dim, device=device)
    return Independent(Normal(zeros, torch.ones_like(zeros), validate_args=False), 1)


class GaussianMixture(MixtureSameFamily):
    """sum_k pi_k N(z; mu_k, diag sigma_k^2); log_prob in chunks of z so (N, K, D) never exceeds LOG_PROB_CHUNK."""

    def log_prob(self, z: Tensor) -> Tensor:
        lead, dim = z.shape[:-1], z.shape[-1]
        flat = z.reshape(-1, dim)  # (N, D)
        k = self.mixture_distribution.logits.shape[-1]
        rows = max(1, LOG_PROB_CHUNK // max(1, k * dim))
        parts = [super(GaussianMixture, self).log_prob(chunk) for chunk in flat.split(rows)]  # each (n,)
        return torch.cat(parts).reshape(lead)


def gaussian_mixture(logits: Tensor, loc: Tensor, scale: Tensor) -> GaussianMixture:
    """A mixture of K diagonal Gaussians: logits (K,), loc and scale (K, D); event shape (D,)."""
    components = Independent(Normal(loc.float(), scale.float(), validate_args=False), 1)
    return GaussianMixture(Categorical(logits=logits.float(), validate_args=False), components, validate_args=False)


def uniform_mixture(components: Independent) -> GaussianMixture:
    """(1/K) sum_k q(z|u_k) over K diagonal Gaussian components (batch shape (K,)): the VampPrior's p(z)."""
    k = components.batch_shape[0]
    logits = torch.zeros(k, device=components.mean.device)  # log_softmax(0) = -log K for every component
    return GaussianMixture(Categorical(logits=logits, validate_args=False), components, validate_args=False)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I): no weights (the VAE's state_dict is unchanged by it)."""

    diagonal_gaussian = True  # KL(q || p) per dimension has a closed form against a diagonal Gaussian q

    def __init__(self, latent_dim: int, **_):
        super().__init__()
        self.latent_dim = latent_dim

    def forward(self, encode_base: EncodeBase, device: torch.device) -> Distribution:
        return standard_normal(self.latent_dim, device=device)


class MixturePrior(nn.Module):
    """A learned mixture of K diagonal Gaussians, weights included (torch MixtureSameFamily).

    Initialised as K unit Gaussians at N(0, I) locations with equal weights, so the components start apart.
    """

    diagonal_gaussian = False

    def __init__(self, latent_dim: int, num_components: int, **_):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_components))  # (K,)
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))  # (K, D)
        raw_one = math.log(math.expm1(1.0 - MIN_SCALE))  # softplus^-1(1 - floor): scale 1 at the start
        self.raw_scale = nn.Parameter(torch.full((num_components, latent_dim), raw_one))  # (K, D)

    def forward(self, encode_base: EncodeBase, device: torch.device) -> Distribution:
        return gaussian_mixture(self.logits, self.loc, F.softplus(self.raw_scale) + MIN_SCALE)


# Pseudo-input activations: raw parameter -> image, and the inverse used to start from data.
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "hardtanh": (lambda u: F.hardtanh(u, 0.0, 1.0), lambda x: x),  # Tomczak & Welling 2018: pixels in [0, 1]
    "sigmoid": (torch.sigmoid, lambda x: torch.logit(x.clamp(1e-3, 1 - 1e-3))),
    "none": (lambda u: u, lambda x: x),
}
PSEUDO_INPUT_INITS = ("data", "random")


class VampPrior(nn.Module):
    """p(z) = (1/K) sum_k q(z|u_k), K learned pseudo-inputs u_k (Tomczak & Welling 2018, Eq. 9).

    The pseudo-inputs go through the VAE's own encoder each time the prior is built (`encode_base`), so the
    prior follows the encoder as it trains. `init="data"` starts them from K training images (the training loop
    calls `init_from_data` unless weights were loaded into this module); `init="random"` from pixel values
    N(0.05, 0.01^2), the MNIST setting of Tomczak & Welling's code.
    """

    diagonal_gaussian = False

    def __init__(self, latent_dim: int, num_components: int, in_shape: tuple[int, int, int],
                 activation: str = "hardtanh", init: str = "data", **_):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise choices_error("prior.activation", activation, ACTIVATIONS)
        if init not in PSEUDO_INPUT_INITS:
            raise choices_error("prior.init", init, PSEUDO_INPUT_INITS)
        self.activation = activation
        pixels = (0.05 + 0.01 * torch.randn(num_components, *in_shape)).clamp(0, 1)
        self.pseudo_inputs = nn.Parameter(ACTIVATIONS[activation][1](pixels))  # (K, C, H, W), raw
        self.pending_data_init = init == "data"  # cleared by init_from_data or by loading weights

    def images(self) -> Tensor:
        """The pseudo-inputs as images (K, C, H, W)."""
        return ACTIVATIONS[self.activation][0](self.pseudo_inputs)

    @torch.no_grad()
    def init_from_data(self, x: Tensor) -> None:
        """Set the pseudo-inputs to images x (N, C, H, W) in [0, 1], cycling them when N < K."""
        k = self.pseudo_inputs.shape[0]
        picked = x[torch.arange(k, device=x.device) % x.shape[0]]
        self.pseudo_inputs.copy_(ACTIVATIONS[self.activation][1](picked.to(self.pseudo_inputs)))
        self.pending_data_init = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.pending_data_init = False  # loaded weights (artifact, resume, init_from) win over a data init
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, encode_base: EncodeBase, device: torch.device) -> Distribution:
        return uniform_mixture(encode_base(self.images()))


PRIORS: dict[str, type[nn.Module]] = {"standard_normal": StandardNormalPrior, "mog": MixturePrior, "vamp": VampPrior}


def build_prior(name: str, **kwargs) -> nn.Module:
    """The prior module called `name`; ConfigError listing the valid names otherwise."""
    if name not in PRIORS:
        raise choices_error("prior.name", name, PRIORS)
    if name != "standard_normal" and kwargs.get("num_components", 1) < 1:
        raise ConfigError(f"prior.num_components={kwargs['num_components']} is invalid: must be an integer >= 1")
    return PRIORS[name](**kwargs)


def mixture_log_prob(p_z: MixtureSameFamily, z: Tensor) -> Tensor:
    """log sum_k pi_k N(z; mu_k, diag s_k^2) with the K quadratic forms as two matmuls: (..., D) -> (...).

    sum_d (z_d - mu_kd)^2 / s_kd^2 = z^2 . (1/s_k^2) - 2 z . (mu_k/s_k^2) + sum_d mu_kd^2/s_kd^2, so the (N, K, D)
    tensor of MixtureSameFamily.log_prob becomes (N, D) x (D, K) products (the VampPrior's K = 500: ~D x fewer
    passes over memory). In float64: the expansion cancels where z is near a narrow component's mean.
    """
    base = p_z.component_distribution.base_dist
    loc, inv_var = base.loc.double(), base.scale.double().pow(-2)  # (K, D)
    const = (p_z.mixture_distribution.logits.double().log_softmax(-1) - base.scale.double().log().sum(-1)
             - 0.5 * (loc.pow(2) * inv_var).sum(-1) - loc.shape[-1] * 0.5 * math.log(2 * math.pi))  # (K,)
    weighted_loc = loc * inv_var  # (K, D)
    parts = []
    for part in z.reshape(-1, z.shape[-1]).split(max(1, LOG_PROB_CHUNK // (8 * loc.shape[0]))):  # (n, D) each
        part = part.double()
        quadratic = part.pow(2) @ inv_var.T - 2 * part @ weighted_loc.T  # (n, K)
        parts.append(torch.logsumexp(const - 0.5 * quadratic, -1))
    return torch.cat(parts).to(z.dtype).reshape(z.shape[:-1])


def prior_log_prob(p_z: Distribution, z: Tensor) -> Tensor:
    """log p(z), the same numbers as p_z.log_prob(z) in fewer passes: a diagonal Gaussian from (z - mu) / sigma,
    a mixture of diagonal Gaussians (mog, vamp) by matmuls; any other prior by its log_prob."""
    if is_diagonal_normal(p_z):
        return diagonal_normal_log_prob(p_z, z)
    if isinstance(p_z, MixtureSameFamily) and is_diagonal_normal(p_z.component_distribution) \
            and p_z.component_distribution.base_dist.loc.dim() == 2:
        return mixture_log_prob(p_z, z)
    return p_z.log_prob(z)
