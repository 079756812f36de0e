"""The VQ-VAE families' init args: their rules (config.json schema and model.* checks), the stage-1 init args from a
run's config, and stage 2's from `prior_of=<stage-1 run | artifact | Hub id>`."""

from dataclasses import replace

from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.rules import Rule, check_rules, plain


def _likelihoods():
    from vae_lab.distributions import LIKELIHOODS

    return LIKELIHOODS


def _quantizers():
    from vae_lab.nets.quantizer import QUANTIZERS

    return QUANTIZERS


def _codebooks():
    from vae_lab.model.vqvae import CODEBOOKS

    return CODEBOOKS


VQVAE_RULES = (
    Rule("codebook_size", "int", lo=2),
    Rule("code_dim", "int", lo=1),
    Rule("quantizer", "choice", choices=_quantizers),
    Rule("codebook", "choice", choices=_codebooks),
    Rule("ema_decay", "float", lo=0, hi=1, lo_open=True, hi_open=True),
    Rule("commitment", "float", lo=0),
    Rule("dead_code_threshold", "float", lo=0),
    Rule("likelihood", "choice", choices=_likelihoods),
    Rule("likelihood_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_min_scale", "float", lo=0, lo_open=True),
    Rule("likelihood_components", "int", lo=1),
    Rule("likelihood_levels", "int", lo=2, hi=65536, nullable=True),
    Rule("conditional", "bool"),
)
PIXELCNN_RULES = (
    Rule("pixelcnn_channels", "int", lo=1),
    Rule("pixelcnn_layers", "int", lo=1),
    Rule("pixelcnn_kernel", "int", lo=1),
)
VQPRIOR_RULES = VQVAE_RULES + PIXELCNN_RULES
_STAGE1_KEYS = [r.key for r in VQVAE_RULES if r.key not in ("likelihood", "conditional")]


def validate(cfg: DictConfig) -> None:
    """At start, before the run directory is written: the VQ-VAE keys' rules, and that prior_of= is a VQ-VAE."""
    if OmegaConf.select(cfg, "model.family", default=None) == "vqvae":
        check_rules(cfg, [replace(r, key=f"model.{r.key}") for r in VQVAE_RULES if r.key != "likelihood"])
    if OmegaConf.select(cfg, "model.family", default=None) == "vqvae_prior" or cfg.get("prior_of"):
        check_rules(cfg, [replace(r, key=f"model.{r.key}") for r in PIXELCNN_RULES])
    if cfg.get("prior_of"):
        _stage1_model(str(cfg.prior_of))


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


def vqvae_kwargs(cfg: DictConfig, spec) -> dict:
    """VQVAE's init args from model.* (configs/architecture/vqvae.yaml) and the data spec."""
    from vae_lab.build import resolve_likelihood

    run_rules = [replace(r, key=f"model.{r.key}") for r in VQVAE_RULES if r.key != "likelihood"]  # may be auto
    check_rules(cfg, run_rules)
    m = cfg.model
    levels = getattr(spec, "levels", 256)
    return {
        "in_shape": list(spec.shape),
        **{key: plain(m[key]) for key in _STAGE1_KEYS if key in m and key != "likelihood_levels"},
        "net": plain(m.get("net")) or {},
        "likelihood": resolve_likelihood(cfg, spec)[0],
        "likelihood_levels": levels,
        "conditional": bool(m.get("conditional", False)),
        "num_classes": spec.num_classes or 0,
    }


def vqprior_kwargs(cfg: DictConfig, spec) -> dict:
    """VQPrior's init args: stage 1's (put in model.stage1_args by adopt_stage1) and the PixelCNN's (model.pixelcnn_*
    when the config has them, else VQPrior's defaults); class-conditional when the data has labels."""
    from vae_lab.errors import ConfigError, DataError

    if OmegaConf.select(cfg, "model.stage1_args", default=None) is None:
        raise ConfigError("model.family=vqvae_prior is trained with prior_of=<stage-1 run, artifact or Hub id>")
    stage1 = plain(cfg.model.stage1_args)
    if list(spec.shape) != list(stage1["in_shape"]):
        raise DataError(f"prior_of: stage 1 takes {tuple(stage1['in_shape'])} images but these data are "
                        f"{tuple(spec.shape)}: train stage 2 on stage 1's dataset")
    check_rules(cfg, [replace(r, key=f"model.{r.key}") for r in PIXELCNN_RULES])
    prior = {r.key: cfg.model[r.key] for r in PIXELCNN_RULES if r.key in cfg.model}
    classes = spec.num_classes or 0
    return {**stage1, "conditional": classes > 0, "num_classes": classes, **prior}


def adopt_stage1(cfg: DictConfig):
    """For `prior_of=<ref>`: load the stage-1 VQ-VAE, refuse anything else, check the data settings match its run,
    and make this run's model a VQPrior over it (model.family=vqvae_prior, model.stage1_args). Returns the model."""
    from vae_lab.artifact import model_config
    from vae_lab.errors import ConfigError

    source = _stage1_model(str(cfg.prior_of))
    for key in ("dataset.binarize", "dataset.dequantize"):  # stage 1's codes and distortion are of its own data
        theirs = OmegaConf.select(source.cfg, key, default=None) if source.cfg is not None else None
        ours = OmegaConf.select(cfg, key, default=None)
        if theirs is not None and ours != theirs:
            raise ConfigError(f"{key}={ours} differs from stage 1's run ({key}={theirs}): set {key}={theirs}")
    with open_dict(cfg):
        cfg.model.family = "vqvae_prior"
        cfg.model.stage1_args = {k: v for k, v in model_config(source.model, records=False).items()
                                 if k not in ("conditional", "num_classes")}
    return source.model


def copy_stage1(model, stage1) -> None:
    """Stage 1's weights (and codebook buffers) into a VQPrior, strictly."""
    from vae_lab.artifact import load_state

    load_state(model.stage1, stage1.state_dict(), "prior_of: stage 1")


# model.family -> its init args from a run's config (build.model_kwargs; the VAE's are build's own)
FAMILY_KWARGS = {"vqvae": vqvae_kwargs, "vqvae_prior": vqprior_kwargs}
