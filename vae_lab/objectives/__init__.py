"""Objectives: distributions in, loss (the only weighted number) + per-example terms in nats out."""

from functools import partial
from typing import Callable

from vae_lab.errors import ConfigError, choices_error
from vae_lab.objectives.beta_tcvae import beta_tcvae
from vae_lab.objectives.capacity import capacity
from vae_lab.objectives.dip_vae import dip_vae
from vae_lab.objectives.elbo import ObjectiveOutput, elbo
from vae_lab.objectives.factor_vae import factor_vae
from vae_lab.objectives.iwae import iwae

OBJECTIVES: dict[str, Callable[..., ObjectiveOutput]] = {
    "elbo": elbo,
    "iwae": iwae,
    "beta_tcvae": beta_tcvae,
    "factor_vae": factor_vae,
    "dip_vae": dip_vae,
    "capacity": capacity,
}

# Each objective's own terms beyond elbo / distortion / rate, with the unit suffix of their metric names.
EXTRA_TERMS: dict[str, dict[str, str]] = {
    "iwae": {"iwae": "_nats"},
    "beta_tcvae": {"mi": "_nats", "tc": "_nats", "dimwise_kl": "_nats"},
    "factor_vae": {"tc": "_nats"},
    "dip_vae": {"dip_penalty": ""},
    "capacity": {"capacity": "_nats"},
}

# Objectives that need a discriminator with its own optimizer (trained by the LightningModule).
ADVERSARIAL = frozenset({"factor_vae"})

# The coefficient that weights the analytic KL in each loss (logged as train/kl_weight x the annealing factor);
# None: weight 1 (beta_tcvae weights the KL's parts instead, capacity penalises |KL - C|); iwae has no KL term.
KL_COEFFICIENT: dict[str, str | None] = {"elbo": "beta", "factor_vae": "beta", "dip_vae": "beta",
                                         "beta_tcvae": None, "capacity": None}

# Arguments the training loop passes at each step (never set from the config).
_PER_STEP = ("q_z", "p_z", "z", "p_x", "x", "kl_weight", "step", "density_ratio_logit")


def build_objective(name: str, **kwargs) -> Callable[..., ObjectiveOutput]:
    """`OBJECTIVES[name]` with its coefficients bound; clear errors for a bad name or coefficient."""
    try:
        fn = OBJECTIVES[name]
    except KeyError:
        raise choices_error("loss.name", name, OBJECTIVES) from None
    accepted = fn.__code__.co_varnames[: fn.__code__.co_argcount + fn.__code__.co_kwonlyargcount]
    for key in kwargs:
        if key not in accepted or key in _PER_STEP:
            raise ConfigError(f"loss.{key} is not an option of loss.name={name}")
    return partial(fn, **kwargs)


__all__ = ["ADVERSARIAL", "EXTRA_TERMS", "KL_COEFFICIENT", "OBJECTIVES", "ObjectiveOutput", "beta_tcvae",
           "build_objective", "capacity", "dip_vae", "elbo", "factor_vae", "iwae"]
