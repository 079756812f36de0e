"""Model families behind one interface (interface.py): the VAE (one flat code) and the families registered in
model_args.FAMILIES. `build_model` makes one from init args, `family_class` finds the class of a config.json."""

from vae_lab.artifact import CLASS_KEY, VERSION_KEY
from vae_lab.model.interface import LatentGroup, ModelFamily, Terms
from vae_lab.model.registry import build_model, class_of_family, family_class
from vae_lab.model.vae import VAE


__all__ = ["CLASS_KEY", "LatentGroup", "ModelFamily", "Terms", "VAE", "VERSION_KEY", "build_model",
           "class_of_family", "family_class"]
