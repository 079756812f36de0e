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
)

RULES = [
    Rule("seed", "int", lo=0),
    Rule("dataset.name", "choice", choices=_datasets),
    Rule("dataset.val_fraction", "float", lo=0, hi=1, lo_open=True, hi_open=True),
    Rule("dataset.binarize", "choice", choices=_binarize),
    *(replace(rule, key=f"model.{rule.key}") for rule in MODEL_RULES),
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
    Rule("schedule.kl_annealing", "choice", choices=lambda: __import__("vae_lab.schedules").schedules.KL_ANNEALING),
    Rule("schedule.kl_cycles", "int", lo=1),
    Rule("schedule.kl_cycle_ratio", "float", lo=0, hi=1, lo_open=True),
    # the disentangling objectives' coefficients (configs/loss/)
    Rule("loss.alpha", "float", lo=0),
    Rule("loss.gamma", "float", lo=0),
    Rule("loss.sampling", "choice", choices=lambda: ("mws", "mss")),
    Rule("loss.dataset_size", "int", lo=2, nullable=True),
    Rule("loss.dip_type", "choice", choices=lambda: ("i", "ii")),
    Rule("loss.lambda_od", "float", lo=0),
    Rule("loss.lambda_d", "float", lo=0),
    Rule("loss.capacity_max", "float", lo=0),
    Rule("loss.capacity_steps", "int", lo=0),
    Rule("loss.discriminator.hidden", "int", lo=1),
    Rule("loss.discriminator.layers", "int", lo=1),
    Rule("loss.discriminator.lr", "float", lo=0, lo_open=True),
]

# Objectives whose estimators pair the examples of a batch through one z each.
ONE_SAMPLE = ("beta_tcvae", "factor_vae", "dip_vae", "capacity")


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
    name = OmegaConf.select(cfg, "loss.name", default=None)
    samples = OmegaConf.select(cfg, "loss.num_samples", default=1)
    if name in ONE_SAMPLE and samples != 1:
        raise ConfigError(f"loss.num_samples={samples} is invalid with loss={name}: must be 1 (several samples "
                          f"per example are for loss=iwae)")
    if name == "beta_tcvae" and OmegaConf.select(cfg, "schedule.batch_size", default=2) < 2:
        raise ConfigError("schedule.batch_size=1 is invalid with loss=beta_tcvae: must be >= 2 (its estimators "
                          "of log q(z) pair the examples of a batch)")
    if name == "iwae" and warmup:
        raise ConfigError(f"{warmup[0]}={OmegaConf.select(cfg, warmup[0])} has no effect with loss=iwae (the IWAE "
                          f"bound has no separate KL term to warm up): set {warmup[0]}=0 or use loss=elbo")
