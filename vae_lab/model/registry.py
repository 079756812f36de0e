"""The families' classes by name: model.family -> class, config.json's `_class_name` -> class (model_args.FAMILIES
holds the one registry; a family's module is imported when it is used)."""

import importlib

from vae_lab.artifact import CLASS_KEY
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
