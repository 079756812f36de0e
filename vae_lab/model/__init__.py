"""Model families behind one interface (interface.py): the VAE (one flat code) and the families registered in
model_args.FAMILIES. `build_model` makes one from init args, `family_class` finds the class of a config.json."""

import importlib

from vae_lab.artifact import CLASS_KEY, VERSION_KEY
from vae_lab.model.interface import LatentGroup, ModelFamily, Terms
from vae_lab.model.vae import VAE
from vae_lab.model_args import DEFAULT_FAMILY, FAMILIES, family_named, family_of_class


def family_class(config: dict) -> type:
    """The class a config.json holds: its `_class_name` (none: the VAE, as written before families existed)."""
    from vae_lab.errors import CheckpointError

    name = config.get(CLASS_KEY, FAMILIES[DEFAULT_FAMILY].class_name)
    spec = family_of_class(name)
    if spec is None:
        known = ", ".join(s.class_name for s in FAMILIES.values())
        raise CheckpointError(f"{CLASS_KEY}={name!r} is not a vae_lab model family (known: {known})")
    return getattr(importlib.import_module(spec.module), spec.class_name)


def class_of_family(name: str) -> type:
    """The class of `model.family=name`."""
    spec = family_named(name)
    return getattr(importlib.import_module(spec.module), spec.class_name)


def build_model(init_args: dict):
    """A model from a run's `model` init args: `family` (absent: vae) picks the class, the rest are its init args."""
    args = dict(init_args)
    return class_of_family(args.pop("family", DEFAULT_FAMILY))(**args)


__all__ = ["CLASS_KEY", "LatentGroup", "ModelFamily", "Terms", "VAE", "VERSION_KEY", "build_model",
           "class_of_family", "family_class"]
