"""Objectives: a model's terms in, loss (the only weighted number) + per-example terms in nats out.

One record per objective (OBJECTIVES): its function, its own terms beyond elbo / distortion / rate, which coefficient
weights the rate, and what it needs of the model and the training loop.
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from vae_lab.errors import ConfigError, choices_error
from vae_lab.objectives.beta_tcvae import beta_tcvae
from vae_lab.objectives.capacity import capacity
from vae_lab.objectives.dip_vae import dip_vae
from vae_lab.objectives.elbo import ObjectiveOutput, elbo
from vae_lab.objectives.factor_vae import factor_vae
from vae_lab.objectives.iwae import iwae

NO_RATE_WEIGHT = 0.0  # `rate_coefficient` of an objective without a separate KL term (IWAE)


@dataclass(frozen=True)
class Objective:
    """What the training loop and the config checks know of an objective.

    Attributes:
        fn: (terms, <coefficients>, kl_weight, step[, density_ratio_logit]) -> ObjectiveOutput.
        terms: its own per-example terms beyond elbo / distortion / rate -> the unit suffix of their metric names.
        rate_coefficient: the coefficient that weights the KL in the loss, logged as train/kl_weight x the annealing
            factor: a coefficient's name (beta), None (weight 1: beta_tcvae weights the KL's parts, capacity
            penalises |KL - C|) or NO_RATE_WEIGHT (IWAE has no KL term).
        log_q: it reads log q(z|x) and log p(z) at the samples (importance weights).
        flat_code: it reads the aggregate posterior of one Gaussian code (q_z, z): families with flat_code only.
        analytic_rate: it needs the KL in closed form (two diagonal Gaussians).
        one_sample: its minibatch estimators pair the examples' single samples (loss.num_samples must be 1).
        discriminator: it trains a discriminator on the codes with its own optimizer (manual optimisation).
    """

    fn: Callable[..., ObjectiveOutput]
    terms: dict[str, str] = field(default_factory=dict)
    rate_coefficient: str | float | None = "beta"
    log_q: bool = False
    flat_code: bool = False
    analytic_rate: bool = False
    one_sample: bool = False
    discriminator: bool = False


OBJECTIVES: dict[str, Objective] = {
    "elbo": Objective(elbo),
    "iwae": Objective(iwae, {"iwae": "_nats"}, NO_RATE_WEIGHT, log_q=True),
    "beta_tcvae": Objective(beta_tcvae, {"mi": "_nats", "tc": "_nats", "dimwise_kl": "_nats"}, None,
                            flat_code=True, analytic_rate=True, one_sample=True),
    "factor_vae": Objective(factor_vae, {"tc": "_nats"}, flat_code=True, analytic_rate=True, one_sample=True,
                            discriminator=True),
    "dip_vae": Objective(dip_vae, {"dip_penalty": ""}, flat_code=True, analytic_rate=True, one_sample=True),
    "capacity": Objective(capacity, {"capacity": "_nats"}, None, analytic_rate=True, one_sample=True),
}

# Arguments the training loop passes at each step (never set from the config).
_PER_STEP = ("t", "kl_weight", "step", "density_ratio_logit")


def objective_named(name: str) -> Objective:
    """OBJECTIVES[name]; one ConfigError line listing the objectives otherwise."""
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise choices_error("loss.name", name, OBJECTIVES) from None


def build_objective(name: str, **kwargs) -> Callable[..., ObjectiveOutput]:
    """The objective's function with its coefficients bound; clear errors for a bad name or coefficient."""
    fn = objective_named(name).fn
    accepted = fn.__code__.co_varnames[: fn.__code__.co_argcount + fn.__code__.co_kwonlyargcount]
    for key in kwargs:
        if key not in accepted or key in _PER_STEP:
            raise ConfigError(f"loss.{key} is not an option of loss.name={name}")
    return partial(_with_aux_loss, partial(fn, **kwargs))


def _with_aux_loss(bound_fn: Callable[..., ObjectiveOutput], t, **per_step) -> ObjectiveOutput:
    """The objective's output, with the family's own training terms (Terms.aux_loss) added to its loss."""
    out = bound_fn(t, **per_step)
    return out if t.aux_loss is None else ObjectiveOutput(out.loss + t.aux_loss, out.terms)


__all__ = ["NO_RATE_WEIGHT", "OBJECTIVES", "Objective", "ObjectiveOutput", "beta_tcvae", "build_objective", "capacity",
           "dip_vae", "elbo", "factor_vae", "iwae", "objective_named"]
