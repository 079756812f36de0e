"""The VAE's init args as rules: checked as model.* in a run's config and as config.json of a saved model."""

from vae_lab.rules import Rule


def _likelihoods():
    from vae_lab.distributions import LIKELIHOODS

    return LIKELIHOODS


def _nets():
    from vae_lab.nets import NETS

    return NETS


MODEL_RULES = (
    Rule("latent_dim", "int", lo=1),
    Rule("architecture", "choice", choices=_nets),
    Rule("likelihood", "choice", choices=_likelihoods),
    Rule("likelihood_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_min_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_components", "int", lo=1),
    Rule("posterior_min_scale", "float", lo=0, lo_open=True),
    Rule("conditional", "bool"),
)
