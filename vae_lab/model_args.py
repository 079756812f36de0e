"""The VAE's init args as rules: checked as model.* in a run's config and as config.json of a saved model."""

from typing import NamedTuple

from vae_lab.rules import Rule
from vae_lab.vq_args import VQPRIOR_RULES, VQVAE_RULES


def _likelihoods():
    from vae_lab.distributions import LIKELIHOODS

    return LIKELIHOODS


def _nets():
    from vae_lab.nets import NETS

    return NETS


def _priors():
    from vae_lab.distributions import PRIORS

    return PRIORS


def _posteriors():
    from vae_lab.distributions import POSTERIORS

    return POSTERIORS


def _pseudo_input_activations():
    from vae_lab.distributions.prior import ACTIVATIONS

    return ACTIVATIONS


def _pseudo_input_inits():
    from vae_lab.distributions.prior import PSEUDO_INPUT_INITS

    return PSEUDO_INPUT_INITS


MODEL_RULES = (
    Rule("latent_dim", "int", lo=1),
    Rule("architecture", "choice", choices=_nets),
    Rule("likelihood", "choice", choices=_likelihoods),
    Rule("likelihood_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_min_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_components", "int", lo=1),
    Rule("likelihood_levels", "int", lo=2, hi=65536, nullable=True),  # the data's grey levels; null: continuous
    Rule("posterior_min_scale", "float", lo=0, lo_open=True),
    Rule("conditional", "bool"),
    Rule("prior", "choice", choices=_priors),
    Rule("prior_components", "int", lo=1),
    Rule("prior_activation", "choice", choices=_pseudo_input_activations),
    Rule("prior_init", "choice", choices=_pseudo_input_inits),
    Rule("posterior", "choice", choices=_posteriors),
    Rule("posterior_steps", "int", lo=1),
    Rule("posterior_hidden_dim", "int", lo=1),
    Rule("posterior_hidden_layers", "int", lo=1),
    Rule("posterior_context_dim", "int", lo=0),
)

# model.* keys of a run config that every family has: the family, its architecture option (the run's name uses it),
# the nets' shape arguments, and the likelihood and conditioning init args each family shares.
COMMON_MODEL_KEYS = ("family", "architecture", "net", "likelihood", "likelihood_scale", "likelihood_min_scale",
                     "likelihood_components", "likelihood_levels", "conditional")

# The hierarchical family's init args (vae_lab.model.hierarchical.HierarchicalVAE); its geometry is three scalars,
# checked against the image size when the model is built (exact halving).
HIERARCHICAL_RULES = (
    *(rule for rule in MODEL_RULES if rule.key in ("likelihood", "likelihood_scale", "likelihood_min_scale",
                                                   "likelihood_components", "likelihood_levels", "conditional")),
    Rule("downsamples", "int", lo=0),
    Rule("latent_resolutions", "int", lo=1),
    Rule("groups_per_resolution", "int", lo=1),
    Rule("channels", "int", lo=1),
    Rule("bottleneck", "float", lo=0, hi=1, lo_open=True),
    Rule("cells", "int", lo=0),
    Rule("free_level_cells", "int", lo=0),
    Rule("latent_channels", "int", lo=1),
    Rule("min_scale", "float", lo=0, lo_open=True),
)

# The `prior` and `posterior` config groups are flat VAE init args (config.json): config key -> init arg.
LATENT_KEYS = {
    "prior.name": "prior",
    "prior.num_components": "prior_components",
    "prior.activation": "prior_activation",
    "prior.init": "prior_init",
    "posterior.name": "posterior",
    "posterior.num_steps": "posterior_steps",
    "posterior.hidden_dim": "posterior_hidden_dim",
    "posterior.hidden_layers": "posterior_hidden_layers",
    "posterior.context_dim": "posterior_context_dim",
}


class FamilySpec(NamedTuple):
    """A model family: its `model.family` name, its class (config.json's `_class_name`, as diffusers records it),
    the module holding it, and the rules of its init args besides in_shape, net and num_classes."""

    name: str
    class_name: str
    module: str
    rules: tuple[Rule, ...]


# The one registry of model families (vae_lab.model.family_class imports a family's module when it is used).
FAMILIES: dict[str, FamilySpec] = {
    "vae": FamilySpec("vae", "VAE", "vae_lab.model.vae", MODEL_RULES),
    "hierarchical": FamilySpec("hierarchical", "HierarchicalVAE", "vae_lab.model.hierarchical", HIERARCHICAL_RULES),
    "vqvae": FamilySpec("vqvae", "VQVAE", "vae_lab.model.vqvae", VQVAE_RULES),
    "vqvae_prior": FamilySpec("vqvae_prior", "VQPrior", "vae_lab.model.vq_prior", VQPRIOR_RULES),
}
DEFAULT_FAMILY = "vae"  # config.json without `_class_name` (written before families existed) holds a VAE


def family_named(name: str) -> FamilySpec:
    """FAMILIES[name]; one ConfigError line listing the families otherwise."""
    from vae_lab.errors import choices_error

    if name not in FAMILIES:
        raise choices_error("model.family", name, FAMILIES)
    return FAMILIES[name]


def family_of_class(class_name: str) -> FamilySpec | None:
    """The family whose class is `class_name`, or None."""
    return next((spec for spec in FAMILIES.values() if spec.class_name == class_name), None)
