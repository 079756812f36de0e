"""Config validation: types, ranges and choices checked once at start, each failure one clear line."""

import math
from dataclasses import dataclass, replace
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """`key` must be a `kind` ("int" | "float" | "bool" | "choice") within [lo, hi] (open ends when *_open)."""

    key: str
    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False
    nullable: bool = False
    choices: Callable[[], Any] | None = None  # lazily: registries import torch

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of: " + ", ".join(sorted(self.choices()))
        if self.kind == "bool":
            return "true or false"
        kind = "an integer" if self.kind == "int" else "a number"
        parts = []
        if self.lo > -math.inf:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi < math.inf:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return kind + (" " + " and ".join(parts) if parts else "") + (" (or null)" if self.nullable else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return value in self.choices()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below


def _likelihoods():
    from vae_lab.distributions import LIKELIHOODS

    return LIKELIHOODS


def _nets():
    from vae_lab.nets import NETS

    return NETS


def _objectives():
    from vae_lab.objectives import OBJECTIVES

    return OBJECTIVES


def _binarize():
    from vae_lab.data import BINARIZE

    return BINARIZE


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


def _datasets():
    from vae_lab.data.registry import DATASETS

    return DATASETS


# The VAE's own arguments: checked as model.* in a run's config and as config.json of a saved model (vae_lab.hub).
MODEL_RULES = (
    Rule("latent_dim", "int", lo=1),
    Rule("architecture", "choice", choices=_nets),
    Rule("likelihood", "choice", choices=_likelihoods),
    Rule("likelihood_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_min_scale", "float", lo=0, lo_open=True),
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
_MODEL_RULE = {rule.key: rule for rule in MODEL_RULES}

RULES = [
    Rule("seed", "int", lo=0),
    Rule("dataset.name", "choice", choices=_datasets),
    Rule("dataset.val_fraction", "float", lo=0, hi=1, lo_open=True, hi_open=True),
    Rule("dataset.binarize", "choice", choices=_binarize),
    *(replace(rule, key=f"model.{rule.key}") for rule in MODEL_RULES if rule.key not in LATENT_KEYS.values()),
    *(replace(_MODEL_RULE[arg], key=key) for key, arg in LATENT_KEYS.items()),
    Rule("loss.name", "choice", choices=_objectives),
    Rule("loss.beta", "float", lo=0),
    Rule("loss.free_bits", "float", lo=0),
    Rule("loss.num_samples", "int", lo=1),
    Rule("schedule.lr", "float", lo=0, lo_open=True),
    Rule("schedule.batch_size", "int", lo=1),
    Rule("schedule.max_epochs", "int", lo=-1),
    Rule("schedule.gradient_clip_val", "float", lo=0, lo_open=True, nullable=True),
    Rule("schedule.kl_warmup_steps", "int", lo=0),
    Rule("schedule.kl_warmup_epochs", "float", lo=0),
]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that breaks a rule (keys absent from this config are skipped)."""
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default="<absent>", throw_on_missing=True)
        if isinstance(value, str) and value == "<absent>":
            continue
        if not rule.ok(value):
            raise ConfigError(f"{rule.key}={value!r} is invalid: must be {rule.describe()}")
    _check_combinations(cfg)


def _check_combinations(cfg: DictConfig) -> None:
    """Choices that are valid alone but not together."""
    warmup = [k for k in ("schedule.kl_warmup_steps", "schedule.kl_warmup_epochs")
              if (OmegaConf.select(cfg, k, default=0) or 0) > 0]
    _check_latent_combinations(cfg)
    if OmegaConf.select(cfg, "loss.name", default=None) == "iwae" and warmup:
        raise ConfigError(f"{warmup[0]}={OmegaConf.select(cfg, warmup[0])} has no effect with loss=iwae (the IWAE "
                          f"bound has no separate KL term to warm up): set {warmup[0]}=0 or use loss=elbo")


def _check_latent_combinations(cfg: DictConfig) -> None:
    """Free bits need a factorised rate; the VampPrior cannot condition its pseudo-inputs on a label."""
    from vae_lab.distributions import POSTERIORS, PRIORS
    from vae_lab.distributions.prior import VAMP_CONDITIONAL

    prior = OmegaConf.select(cfg, "prior.name", default="standard_normal")
    posterior = OmegaConf.select(cfg, "posterior.name", default="gaussian")
    free_bits = OmegaConf.select(cfg, "loss.free_bits", default=0) or 0
    if free_bits > 0 and not (PRIORS[prior].diagonal_gaussian and POSTERIORS[posterior].diagonal_gaussian):
        raise ConfigError(f"loss.free_bits={free_bits} needs a factorised rate (KL per latent dim, Kingma et al. "
                          f"2016), but with prior={prior} posterior={posterior} the rate is the Monte Carlo "
                          f"log q(z|x) - log p(z): set loss.free_bits=0 (or use loss.beta / a KL warm-up)")
    if prior == "vamp" and OmegaConf.select(cfg, "model.conditional", default=False):
        raise ConfigError(VAMP_CONDITIONAL)
