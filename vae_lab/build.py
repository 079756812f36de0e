"""Every object of a run built in one place from the composed config."""

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_lab.rules import plain


def build_datamodule(cfg: DictConfig):
    from vae_lab.data import VAEDataModule

    ds = cfg.dataset
    return VAEDataModule(
        name=ds.name,
        data_dir=str(Path(cfg.paths.data_dir).expanduser().resolve()),
        batch_size=cfg.schedule.batch_size,
        val_fraction=ds.val_fraction,
        seed=cfg.seed,
        download=ds.download,
        binarize=ds.binarize,
        options=plain(ds.options),
        dequantize=ds.get("dequantize", "none"),  # absent from run configs saved before it existed
        val_max_examples=ds.get("val_max_examples", None),  # likewise: older runs validated without a cap
    )


def resolve_likelihood(cfg: DictConfig, spec) -> tuple[str, str | None]:
    """model.likelihood with `auto` chosen from the data (vae_lab.units.auto_likelihood): (name, the one line saying
    what auto chose, or None when the name was given). The resolved name is what the model's init args store."""
    from vae_lab.units import AUTO, auto_likelihood

    name = cfg.model.likelihood
    if name != AUTO:
        return name, None
    # a config without `dataset` (the benchmark's sides build from model/prior/posterior only) dequantises nothing
    dequantize = OmegaConf.select(cfg, "dataset.dequantize", default="none")
    chosen, reason = auto_likelihood(bool(getattr(spec, "binary", False)), getattr(spec, "levels", 256), dequantize)
    return chosen, f"likelihood auto -> {chosen} ({reason})"


def model_kwargs(cfg: DictConfig, spec, likelihood: str | None = None) -> dict:
    """Init args of the model (plain JSON) from the `model` config (and for the VAE `prior` and `posterior`) and the
    data spec (shapes and grey levels travel as values). A family other than the VAE is named by `family`.
    likelihood: model.likelihood already resolved (resolve_likelihood); None: resolved here."""
    from vae_lab.model_args import DEFAULT_FAMILY, family_named

    if likelihood is None:
        likelihood = resolve_likelihood(cfg, spec)[0]
    family = OmegaConf.select(cfg, "model.family", default=DEFAULT_FAMILY)
    if family == DEFAULT_FAMILY:
        return _vae_kwargs(cfg, spec, likelihood)
    m = cfg.model
    own = {rule.key: plain(m[rule.key]) for rule in family_named(family).rules if rule.key in m}
    return {
        "family": family,
        "in_shape": list(spec.shape),
        **({"net": plain(m.net)} if "net" in m else {}),
        **own,
        "likelihood": likelihood,
        "likelihood_levels": getattr(spec, "levels", 256),
        "num_classes": spec.num_classes or 0,
    }


def _vae_kwargs(cfg: DictConfig, spec, likelihood: str) -> dict:
    """Init args of VAE. Prior and posterior keys absent from the chosen option keep VAE's defaults; no `family`
    key, so checkpoints and config.json of VAE runs are what they were before families existed."""
    from vae_lab.model_args import LATENT_KEYS

    m = cfg.model
    latent = {arg: plain(OmegaConf.select(cfg, key)) for key, arg in LATENT_KEYS.items()
              if OmegaConf.select(cfg, key, default=None) is not None}
    levels = getattr(spec, "levels", 256)
    # 8-bit data (VAE's default) leave config.json and checkpoints as they were, so older runs still resume
    data_levels = {} if levels == 256 else {"likelihood_levels": levels}
    return {
        "in_shape": list(spec.shape),
        "latent_dim": m.latent_dim,
        "architecture": m.architecture,
        "net": plain(m.net),
        "likelihood": likelihood,
        "likelihood_scale": float(m.likelihood_scale),
        "likelihood_min_scale": float(m.likelihood_min_scale),
        "likelihood_components": int(m.likelihood_components),
        **data_levels,
        "posterior_min_scale": float(m.posterior_min_scale),
        "conditional": m.conditional,
        "num_classes": spec.num_classes or 0,
        **latent,
    }


def run_model_kwargs(cfg: DictConfig, spec) -> dict:
    """The run's model init args: the likelihood resolved once, and what `auto` chose said once per run (rank
    zero, not once per DDP rank)."""
    likelihood, auto_line = resolve_likelihood(cfg, spec)
    if auto_line:
        from lightning.pytorch.utilities import rank_zero_only

        rank_zero_only(print)(auto_line)
    return model_kwargs(cfg, spec, likelihood)


def build_module(cfg: DictConfig, spec, model: dict | None = None):
    """The LightningModule. model: the run's model init args (run_model_kwargs), when the run already built them
    (train.py checks a resumed checkpoint against them first); None: built here."""
    from vae_lab.lit_module import VAEModule
    from vae_lab.config import steps_per_call
    from vae_lab.schedules import optimizer_options

    s = cfg.schedule
    steps = steps_per_call(cfg)
    objective = plain(cfg.loss)
    if "dataset_size" in objective and objective["dataset_size"] is None:
        objective["dataset_size"] = spec.num_train  # N of beta-TCVAE's estimators of log q(z): the training split
    annealing = {k: s[k] for k in ("kl_annealing", "kl_cycles", "kl_cycle_ratio") if k in s}
    if manual_optimization(cfg, steps):  # Lightning refuses Trainer(gradient_clip_val) then: the module clips
        annealing.update(gradient_clip_val=cfg.trainer.gradient_clip_val,
                         gradient_clip_algorithm=cfg.trainer.gradient_clip_algorithm)
    module = VAEModule(
        model=run_model_kwargs(cfg, spec) if model is None else model,
        objective=objective,
        optimizer=optimizer_options(plain(s.optimizer), cfg.trainer.precision),
        scheduler=plain(s.scheduler),
        kl_warmup_steps=s.kl_warmup_steps,
        kl_warmup_epochs=float(s.kl_warmup_epochs),
        binary_data=bool(getattr(spec, "binary", False)),
        dequantize=cfg.dataset.get("dequantize", "none"),
        steps_per_call=steps,
        **annealing,
    )
    _speed_options(cfg, module.model)
    return module


def manual_optimization(cfg: DictConfig, steps_per_call: int) -> bool:
    """Whether the LightningModule steps its optimizers itself: a second network with its own optimizer, or
    several optimizer steps per Lightning call (steps_per_call: config.steps_per_call(cfg), worked out once)."""
    from vae_lab.objectives import objective_named

    return objective_named(cfg.loss.name).discriminator or steps_per_call > 1


def _speed_options(cfg: DictConfig, model) -> None:
    """`channels_last` and `compile` (opt-in); both change how the nets run, never their weights' names."""
    import torch

    from vae_lab.errors import ConfigError

    for key in ("compile", "channels_last"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r} is invalid: must be true or false")
    if cfg.get("channels_last", False):
        model.to(memory_format=torch.channels_last)  # 4-D conv weights only; inputs follow inside each conv
    if cfg.get("compile", False):
        model.encoder.compile()  # in place (nn.Module.compile): the state_dict keys stay as they are
        model.decoder.compile()


def _instantiate_all(group: DictConfig | None) -> list:
    from hydra.utils import instantiate

    return [instantiate(node) for node in (group or {}).values() if node is not None and "_target_" in node]


def build_trainer(cfg: DictConfig, extra_callbacks: list | None = None, module=None):
    """The Trainer. module: the LightningModule it will fit, whose own optimisation mode (manual: it clips the
    gradients itself) is then read rather than worked out from cfg again."""
    import lightning as L

    trainer_kwargs = plain(cfg.trainer)
    if module is not None:
        manual = not module.automatic_optimization
    else:
        from vae_lab.config import steps_per_call

        manual = manual_optimization(cfg, steps_per_call(cfg))
    if manual:
        trainer_kwargs["gradient_clip_val"] = None  # clipped by the module (build_module passes the value)
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks")) + list(extra_callbacks or [])
    if not trainer_kwargs.get("enable_progress_bar", True):
        # `trainer.enable_progress_bar=false` wins over the progress bar configured in callbacks/
        from lightning.pytorch.callbacks import ProgressBar

        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if trainer_kwargs.get("profiler") is None:
        from vae_lab.direct_step import QuietProfiler

        trainer_kwargs["profiler"] = QuietProfiler()  # Lightning's default, without its per-hook context cost
    trainer = L.Trainer(**trainer_kwargs, logger=loggers or False, callbacks=callbacks)
    note = hardware_note(trainer)
    if note and trainer.is_global_zero:
        print(note)
    if trainer.strategy.root_device.type == "cpu":
        # Lightning sets this at import; with a CUDA build it makes every torch.cuda.is_available() (Adam asks
        # at each step) retry loading NVML: ~0.1-0.2 ms per step on a machine without a GPU.
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    return trainer


def reliability_callbacks(cfg: DictConfig) -> list:
    """The callbacks every training run gets: non-finite guard (and gradient skipping), resumability (RNG state,
    signals, atomic IO), and the weights' moving average when `ema.decay` is set."""
    from vae_lab.callbacks.nonfinite import NonFiniteGuard
    from vae_lab.callbacks.resumable import Resumable
    from vae_lab.run_dir import CHECKPOINT_DIR

    guard = plain(cfg.guard) if cfg.get("guard") is not None else {}
    callbacks = [Resumable(Path(cfg.paths.output_dir) / CHECKPOINT_DIR), NonFiniteGuard(**guard)]
    ema = cfg.get("ema")  # absent from run configs saved before it existed
    if ema is not None and ema.get("decay") is not None:
        from vae_lab.callbacks.ema import EMA

        callbacks.append(EMA(ema.decay, evaluate=ema.get("evaluate", True)))
    return callbacks


def hub_callbacks(cfg: DictConfig) -> list:
    """The log-sync callback when hub.sync_logs is true (empty otherwise)."""
    hub = cfg.get("hub")
    if not hub or not hub.get("sync_logs"):
        return []
    from vae_lab.callbacks.hub_sync import HubLogSync

    return [HubLogSync(repo_id=hub.repo_id, every_minutes=float(hub.sync_every_minutes),
                       private=bool(hub.private), revision=hub.revision)]


def hardware_note(trainer) -> str | None:
    """One line naming the GPU a run trains on, suggesting hardware=gpu_bf16 where it has bf16; None on a CPU."""
    import torch

    device = trainer.strategy.root_device
    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    line = f"GPU: {props.name} ({device}, {props.total_memory / 2**30:.0f} GiB), precision {trainer.precision}"
    # Native bf16 only (Ampere and later): emulated bf16 on older GPUs is slower than float32.
    if trainer.precision == "32-true" and torch.cuda.is_bf16_supported(including_emulation=False):
        line += "; it has bfloat16: hardware=gpu_bf16 trains faster (log-probabilities stay float32)"
    return line
