"""Stage 2 of the VQ-VAE: a run with `prior_of=<stage-1 run | artifact | Hub id>` trains a prior over that
VQ-VAE's codes (model.family=vqvae_prior): the stage-1 model checked and adopted, its weights copied in."""

from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.rules import plain
from vae_lab.vq_args import PIXELCNN_RULES


def validate(cfg: DictConfig) -> None:
    """At start, before the run directory is written: prior_of= names a VQ-VAE (config.validate checks the
    families' model.* keys)."""
    if cfg.get("prior_of"):
        _stage1_model(str(cfg.prior_of))
    elif OmegaConf.select(cfg, "model.family", default=None) == "vqvae_prior":
        from vae_lab.errors import ConfigError

        raise ConfigError("model.family=vqvae_prior is trained with prior_of=<stage-1 run, artifact or Hub id>")


def _stage1_model(ref: str):
    """The model and run of prior_of=ref (vae_lab.loading.load_model), refused in one line unless a VQVAE."""
    from vae_lab.errors import ConfigError
    from vae_lab.loading import load_model
    from vae_lab.model.vqvae import VQVAE

    source = load_model(ref)
    if not isinstance(source.model, VQVAE):
        raise ConfigError(f"prior_of={ref} holds a {type(source.model).__name__}, not a VQ-VAE: point it at a run "
                          "of model.family=vqvae (architecture=vqvae)")
    return source


def adopt_stage1(cfg: DictConfig):
    """For `prior_of=<ref>`: load the stage-1 VQ-VAE (anything else is refused), check the data settings match its
    run, and make this run's model a VQPrior over it: model.* becomes stage 1's init args, model.pixelcnn_* as
    configured (architecture=vqvae_prior) or VQPrior's defaults, conditional when stage 1's data has labels.
    build.model_kwargs then reads them as for any family. Returns the stage-1 model (its weights go in after)."""
    from vae_lab.artifact import model_config
    from vae_lab.errors import ConfigError

    source = _stage1_model(str(cfg.prior_of))
    for key in ("dataset.binarize", "dataset.dequantize"):  # stage 1's codes and distortion are of its own data
        theirs = OmegaConf.select(source.cfg, key, default=None) if source.cfg is not None else None
        ours = OmegaConf.select(cfg, key, default=None)
        if theirs is not None and ours != theirs:
            raise ConfigError(f"{key}={ours} differs from stage 1's run ({key}={theirs}): set {key}={theirs}")
    stage1 = model_config(source.model, records=False)
    prior = {r.key: cfg.model[r.key] for r in PIXELCNN_RULES if r.key in cfg.model}
    with open_dict(cfg):
        cfg.model = {"family": "vqvae_prior", "architecture": "vqvae_prior",
                     **{k: v for k, v in stage1.items() if k not in ("in_shape", "num_classes", "likelihood_levels")},
                     "conditional": stage1.get("num_classes", 0) > 0, **plain(prior)}
    return source.model


def copy_stage1(model, stage1) -> None:
    """Stage 1's weights (and codebook buffers) into a VQPrior, strictly."""
    from vae_lab.artifact import load_state

    load_state(model.stage1, stage1.state_dict(), "prior_of: stage 1")

