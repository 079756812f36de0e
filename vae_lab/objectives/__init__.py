"""Objectives: distributions in, loss (the only weighted number) + per-example terms in nats out."""

from functools import partial
from typing import Callable

from vae_lab.errors import ConfigError, choices_error
from vae_lab.objectives.elbo import ObjectiveOutput, elbo
from vae_lab.objectives.iwae import iwae

OBJECTIVES: dict[str, Callable[..., ObjectiveOutput]] = {"elbo": elbo, "iwae": iwae}


def build_objective(name: str, **kwargs) -> Callable[..., ObjectiveOutput]:
    """`OBJECTIVES[name]` with its coefficients bound; clear errors for a bad name or coefficient."""
    try:
        fn = OBJECTIVES[name]
    except KeyError:
        raise choices_error("loss.name", name, OBJECTIVES) from None
    accepted = fn.__code__.co_varnames[: fn.__code__.co_argcount + fn.__code__.co_kwonlyargcount]
    for key in kwargs:
        if key not in accepted or key in ("q_z", "p_z", "z", "p_x", "x"):
            raise ConfigError(f"loss.{key} is not an option of loss.name={name}")
    return partial(fn, **kwargs)


__all__ = ["OBJECTIVES", "ObjectiveOutput", "build_objective", "elbo", "iwae"]
