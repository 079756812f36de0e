"""Config rules: a key's type, range or choices, checked once with one clear line per failure; plain data."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import ConfigError


def locate_class(key: str, target: str, what: str = "a class", example: str = "torch.optim.AdamW") -> type:
    """A config's `_target_` ("torch.optim.AdamW") -> the class, or one ConfigError line naming `key` and what it
    should be (no Hydra: its get_class logs a multi-line error before raising)."""
    import importlib

    try:
        module, _, name = str(target).rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        if not isinstance(cls, type):
            raise TypeError(target)
    except Exception as error:  # ImportError, AttributeError, ValueError, TypeError: one line either way
        raise ConfigError(f"{key}={target} is not {what} ({type(error).__name__}); e.g. {example}") from None
    return cls


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
        show = (lambda v: str(int(v))) if self.kind == "int" else (lambda v: f"{v:g}")  # 4294967295, not 4.29e+09
        if self.lo > -math.inf:
            parts.append(f"{'>' if self.lo_open else '>='} {show(self.lo)}")
        if self.hi < math.inf:
            parts.append(f"{'<' if self.hi_open else '<='} {show(self.hi)}")
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


def check_value(rule: Rule, value: Any) -> None:
    """ConfigError `key=value is invalid: must be ...` when `value` breaks `rule`."""
    if not rule.ok(value) or (isinstance(value, float) and not math.isfinite(value)):  # no knob takes inf or NaN
        raise ConfigError(f"{rule.key}={value!r} is invalid: must be {rule.describe()}")


def check_rules(cfg: DictConfig, rules) -> None:
    """check_value for every rule whose key is in `cfg` (absent keys are skipped: a group may not define them)."""
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default="<absent>", throw_on_missing=True)
        if not (isinstance(value, str) and value == "<absent>"):
            check_value(rule, value)


def plain(value: Any) -> Any:
    """Plain dicts, lists and scalars (resolved) from config nodes, mappings, lists or tuples: primitives only, so
    hyper-parameters load with weights_only=True and JSON round trips compare equal."""
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# Shared by config.RULES and the datamodule: a validation split is needed (the best checkpoint is chosen on it).
VAL_FRACTION = Rule("dataset.val_fraction", "float", lo=0, hi=1, lo_open=True, hi_open=True)
# At most this many validation examples (the rest train): a 380k-image file validates 10k, not 38k, per pass.
VAL_MAX_EXAMPLES = Rule("dataset.val_max_examples", "int", lo=1, nullable=True)

# The tools' split= and device= choices: evaluate and sample read an evaluation split, score and encode any split.
EVAL_SPLITS = ("val", "test")
DATA_SPLITS = ("train", *EVAL_SPLITS)
DEVICES = ("auto", "cpu", "cuda")
