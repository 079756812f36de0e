"""The one resolver: a run directory, a .ckpt, an artifact directory or a Hub id -> the model, its training config,
and (for tools) the data it was trained on, rebuilt through Hydra with the caller's `dataset.*` overrides.

Nothing here unpickles code: checkpoints are read with torch's weights_only loader, artifacts are JSON +
safetensors. A run directory (or its .ckpt) is the user's own; an artifact directory or a Hub download is
untrusted data: its train_config.yaml is read without resolvers and chooses no path (see data_config).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from vae_lab import artifact, hub
from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.model import class_of_family, family_class
from vae_lab.model_args import DEFAULT_FAMILY
from vae_lab.saved_yaml import train_config
from vae_lab.run_dir import best_checkpoint, model_state, read_checkpoint, recover_swap, run_config


@dataclass
class LoadedModel:
    model: torch.nn.Module  # a model family's (vae_lab.model), in eval mode
    cfg: DictConfig | None  # the run's composed config (.hydra/config.yaml or the artifact's train_config.yaml)
    source: Path  # the file the weights came from
    run_dir: Path | None  # where outputs should go by default
    trusted: bool = True  # cfg is the user's own run's (False: an artifact's or a download's train_config.yaml)

    def default_output(self, *parts: str) -> Path:
        """<run_dir>/<parts> (the current directory's without a run_dir), refused if links lead it elsewhere."""
        base = self.run_dir if self.run_dir is not None else Path.cwd()
        path = base.joinpath(*parts)
        inside = path.parent.resolve().is_relative_to(base.resolve()) and not (path.is_symlink() or (
            path.exists() and not path.is_file()))
        if not inside:
            raise ConfigError(f"{path} leads out of {base} (a symbolic link) or is not a file: outputs go only "
                              "inside it; choose where with out=")
        return path


def model_from_checkpoint(path: Path):
    """The model inside a VAEModule checkpoint (weights_only, strict key and shape matching); its init args'
    `family` (absent: vae) names the class."""
    kwargs, state = model_state(read_checkpoint(Path(path), training=False))
    kwargs = dict(kwargs) if isinstance(kwargs, dict) else kwargs
    family = kwargs.pop("family", DEFAULT_FAMILY) if isinstance(kwargs, dict) else DEFAULT_FAMILY
    try:
        cls = class_of_family(family)
    except ConfigError as err:
        raise CheckpointError(f"{path} (hyper_parameters.model): {err}") from None
    where = f"{path} (hyper_parameters.model)"
    config = artifact.check_config({**kwargs, artifact.CLASS_KEY: cls.__name__} if isinstance(kwargs, dict) else kwargs,
                                   where)
    problem = artifact.state_mismatch(artifact.expected_shapes(cls, config, str(path)), artifact.shapes(state))
    if problem:  # before building: init args that disagree with the weights could ask for any amount of memory
        raise CheckpointError(f"checkpoint {path} does not match its model config: {problem}")
    model = artifact.build_model(cls, config, str(path))
    artifact.load_state(model, state, f"checkpoint {path}")
    return model


def load_artifact(path: Path, map_location: str = "cpu"):
    """The model in a local artifact directory (config.json + model.safetensors; its `_class_name` names the
    family), strictly."""
    return artifact.load_artifact(path, family_class, map_location)


def load_model(ref: str | Path, revision: str | None = None) -> LoadedModel:
    """`ref`: a run directory, a .ckpt file, an artifact directory (config.json + model.safetensors) or a Hub id.

    A Hub id's revision (branch, tag or commit) is pinned by `revision` or as 'owner/name@revision'.
    """
    path = Path(ref).expanduser()
    recover_swap(path)
    if path.is_file() and path.suffix == ".ckpt":
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return LoadedModel(model_from_checkpoint(path).eval(), run_config(run_dir), path, run_dir)
    if path.is_dir() and os.path.lexists(path / artifact.CONFIG_NAME):  # an artifact: data, whoever wrote it
        model = load_artifact(path)
        return LoadedModel(model, train_config(path), path / artifact.WEIGHTS_NAME, path, trusted=False)
    if path.is_dir():
        ckpt = best_checkpoint(path)
        return LoadedModel(model_from_checkpoint(ckpt).eval(), run_config(path), ckpt, path)
    repo_id, pinned = hub.split_revision(str(ref))  # a Hub id such as "me/vae-mnist"
    folder = hub.download_artifact(repo_id, revision or pinned)
    model = load_artifact(folder)
    return LoadedModel(model, train_config(folder), folder / artifact.WEIGHTS_NAME, None, trusted=False)


def init_weights(model, ref: str) -> str:
    """Copy the weights of `ref` (Hub id, artifact dir, run dir or .ckpt) into `model`; both must have one shape."""
    source = load_model(ref)
    problem = artifact.state_mismatch(artifact.shapes(model.state_dict()), artifact.shapes(source.model.state_dict()))
    if problem:
        raise CheckpointError(f"init_from={ref!r} does not fit this model ({problem}): use the source's "
                              "architecture, model.latent_dim, model.likelihood, model.conditional and data shape")
    model.load_state_dict(source.model.state_dict(), strict=True)
    return str(source.source)


def data_config(run_cfg: DictConfig | None, overrides: list[str], *, where: str, data_dir: str | None = None,
                seed: int | None = None, batch_size: int = 100, trusted: bool = True) -> DictConfig:
    """The data settings of a loaded model: its run's `dataset` (or `dataset=<name>` composed through Hydra) with
    the caller's `dataset.*` overrides applied, in train.py's syntax; `data_dir`/`seed` replace the run's if set.

    `trusted=False` (an artifact's train_config.yaml): it chooses no path; `paths.data_dir` is `data_dir` or the
    default of configs/paths, and its `dataset.options.path` is refused unless the caller gives one.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from vae_lab.configs import compose_train

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    group = [o.value() for o in parsed if o.key_or_group == "dataset"]
    if run_cfg is None and not group:  # earlier tools' spelling of the same choice
        group = [o.value() for o in parsed if o.key_or_group == "dataset.name"]
    if group or run_cfg is None:
        if not group:
            raise ConfigError(f"{where} has no training config (.hydra/config.yaml or train_config.yaml): name its data "
                              "with dataset=<name> (and dataset.options.* as for train.py)")
        base = compose_train([f"dataset={group[-1]}"])
        dataset, defaults, trusted = base.dataset, base, True  # composed from our own configs
    else:
        dataset, defaults = OmegaConf.select(run_cfg, "dataset"), run_cfg
        if not trusted:
            options = OmegaConf.select(dataset, "options") if OmegaConf.is_dict(dataset) else None
            if not OmegaConf.is_dict(dataset) or not (options is None or OmegaConf.is_dict(options)):
                raise ConfigError(f"{where}: its train_config.yaml has no `dataset` mapping (with an `options` "
                                  "mapping): name the data with dataset=<name>")
            chosen = options.get("path") if options is not None else None
            if chosen is not None and "dataset.options.path" not in {o.key_or_group for o in parsed}:
                raise ConfigError(f"{where}: its train_config.yaml names dataset.options.path={chosen!r}; a "
                                  "downloaded config chooses no path: give dataset.options.path=<the data here>")
            run_seed = OmegaConf.select(run_cfg, "seed", default=0)
            if seed is None and (not isinstance(run_seed, int) or isinstance(run_seed, bool)):
                raise ConfigError(f"{where}: its train_config.yaml has seed={run_seed!r}, not an integer")
            defaults = OmegaConf.create({"seed": run_seed, "paths": {"data_dir": compose_train([]).paths.data_dir}})
    dataset = OmegaConf.create(OmegaConf.to_container(dataset, resolve=True))
    for o in parsed:
        if o.key_or_group == "dataset":
            continue
        key = o.key_or_group.removeprefix("dataset.")
        if o.is_delete():
            OmegaConf.update(dataset, key, None, force_add=True)
        else:
            OmegaConf.update(dataset, key, o.value(), merge=False, force_add=True)
    data_dir = data_dir if data_dir is not None else OmegaConf.select(defaults, "paths.data_dir")
    # literal text (every `${` of a download, a run's resolver calls): resolved once in the data's DictConfig
    found = _interpolation(OmegaConf.to_container(dataset), "dataset") or _interpolation(data_dir, "paths.data_dir")
    if found:  # refused instead
        saved = "its train_config.yaml" if not trusted else "its saved config"
        raise ConfigError(f"{where}: {saved} has {found[0]}={found[1]!r}: a saved config is data, its "
                          "interpolations are never resolved when it is read again; override the key")
    return OmegaConf.create({
        "dataset": OmegaConf.to_container(dataset),
        "paths": {"data_dir": data_dir},
        "schedule": {"batch_size": batch_size},
        "seed": seed if seed is not None else OmegaConf.select(defaults, "seed", default=0),
    })


def _interpolation(value, key: str) -> tuple[str, str] | None:
    """(key, text) of the first string holding an OmegaConf interpolation `${` in plain data, or None."""
    if isinstance(value, str):
        return (key, value) if "${" in value else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for k, v in items if (found := _interpolation(v, f"{key}.{k}"))), None)


def datamodule_for(loaded: LoadedModel, overrides: list[str], *, stage: str = "test", data_dir: str | None = None,
                   seed: int | None = None, batch_size: int = 100):
    """The loaded model's data (set up for `stage`), checked to fit the model's shape and conditioning."""
    from vae_lab.build import build_datamodule
    from vae_lab.errors import DataError

    cfg = data_config(loaded.cfg, overrides, where=str(loaded.source), data_dir=data_dir, seed=seed,
                      batch_size=batch_size, trusted=loaded.trusted)
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup(stage)
    spec, model = datamodule.spec, loaded.model
    if tuple(spec.shape) != tuple(model.in_shape):
        raise DataError(f"the data are {tuple(spec.shape)} images but the model takes {tuple(model.in_shape)}: "
                        "point dataset.* at data of the model's shape")
    if model.conditional and not spec.num_classes:
        raise DataError("the model is conditional but these data have no labels: evaluate it on labelled data")
    return datamodule
