"""Config validation: types, ranges and choices checked once at start, each failure one clear line."""

from dataclasses import replace

from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import ConfigError
from vae_lab.model_args import COMMON_MODEL_KEYS, DEFAULT_FAMILY, FAMILIES, LATENT_KEYS, MODEL_RULES, family_named
from vae_lab.rules import VAL_FRACTION, VAL_MAX_EXAMPLES, Rule, check_rules, check_value, plain  # noqa: F401 (re-exported)


def _objectives():
    from vae_lab.objectives import OBJECTIVES

    return OBJECTIVES


def _binarize():
    from vae_lab.data import BINARIZE

    return BINARIZE


def _dequantize():
    from vae_lab.units import DEQUANTIZE

    return DEQUANTIZE


def _datasets():
    from vae_lab.data.registry import DATASETS

    return DATASETS


def _likelihoods_or_auto():
    from vae_lab.distributions import LIKELIHOODS
    from vae_lab.units import AUTO

    return (*LIKELIHOODS, AUTO)  # auto: chosen from the data at build time (build.resolve_likelihood)


_MODEL_RULE = {rule.key: rule for rule in MODEL_RULES}
# A run's config may say model.likelihood=auto; a saved model's config.json holds the resolved name.
_RUN_MODEL_RULES = [replace(rule, choices=_likelihoods_or_auto) if rule.key == "likelihood" else rule
                    for rule in MODEL_RULES]

RULES = [
    Rule("seed", "int", lo=0, hi=2**32 - 1),  # numpy's (and seed_everything's) range
    Rule("dataset.name", "choice", choices=_datasets),
    VAL_FRACTION,
    VAL_MAX_EXAMPLES,
    Rule("dataset.binarize", "choice", choices=_binarize),
    Rule("dataset.dequantize", "choice", choices=_dequantize),
    Rule("model.family", "choice", choices=lambda: FAMILIES),
    Rule("guard.skip_grad_norm_above", "float", lo=0, lo_open=True, nullable=True),
    Rule("ema.decay", "float", lo=0, hi=1, hi_open=True, nullable=True),
    Rule("ema.evaluate", "bool"),
    Rule("disentanglement.enabled", "bool"),
    Rule("disentanglement.num_train", "int", lo=10),
    Rule("disentanglement.num_test", "int", lo=10),
    Rule("loss.name", "choice", choices=_objectives),
    Rule("loss.beta", "float", lo=0),
    Rule("loss.free_bits", "float", lo=0),
    Rule("loss.kl_balancing", "bool"),
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


# The VAE family's run-config rules: its init args as model.* (model.likelihood may be auto), prior.* / posterior.*.
_VAE_RUN_RULES = [
    *(replace(rule, key=f"model.{rule.key}") for rule in _RUN_MODEL_RULES if rule.key not in LATENT_KEYS.values()),
    *(replace(_MODEL_RULE[arg], key=key) for key, arg in LATENT_KEYS.items()),
]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that breaks a rule or a combination that cannot work."""
    _check_required(cfg)
    check_rules(cfg, RULES)
    check_rules(cfg, model_rules(OmegaConf.select(cfg, "model.family", default=DEFAULT_FAMILY)))
    _check_family_keys(cfg)
    _check_combinations(cfg)


def model_rules(family: str) -> list[Rule]:
    """The rules of a family's model.* keys in a run config (likelihood may be `auto` there)."""
    if family == DEFAULT_FAMILY:
        return _VAE_RUN_RULES
    return [replace(rule, key=f"model.{rule.key}", choices=_likelihoods_or_auto) if rule.key == "likelihood"
            else replace(rule, key=f"model.{rule.key}") for rule in family_named(family).rules]


def _check_family_keys(cfg: DictConfig) -> None:
    """Every model.* key belongs to the chosen family (a key of another family is one line naming both)."""
    model = OmegaConf.select(cfg, "model", default=None)
    if model is None:
        return
    family = model.get("family", DEFAULT_FAMILY)
    own = {rule.key for rule in family_named(family).rules} | set(COMMON_MODEL_KEYS)
    for key in model:
        if key in own:
            continue
        owners = [name for name, spec in FAMILIES.items() if key in {r.key for r in spec.rules}]
        whose = f"an option of model.family={'/'.join(owners)}" if owners else "not a model option"
        fix = ("architecture=mlp|conv|conv_deep|resnet" if family == DEFAULT_FAMILY else f"architecture={family}")
        raise ConfigError(f"model.{key} is {whose}, not of model.family={family}: choose the family and its nets "
                          f"with {fix} (not model.family= alone), or drop model.{key}")
    if family != DEFAULT_FAMILY:
        for group, vae_only in (("prior", "standard_normal"), ("posterior", "gaussian")):
            chosen = OmegaConf.select(cfg, f"{group}.name", default=vae_only)
            if chosen != vae_only:
                raise ConfigError(f"{group}={chosen} applies to model.family=vae; model.family={family} defines its "
                                  f"own {group}s: drop {group}={chosen}")


def _check_required(cfg: DictConfig) -> None:
    """A value left ??? (dataset.options.path of array_file, say): one line before anything is printed or made."""
    key = next(_missing(cfg), None)
    if key is not None:
        raise ConfigError(f"{key} is required: set it on the command line ({key}=...)")


def _missing(node: DictConfig, prefix: str = ""):
    """Keys left ??? under `node`, without resolving interpolations (${hydra:...} is not set yet at run start)."""
    for key in node.keys():
        if prefix == "" and key == "hydra":  # Hydra's own ??? keys are filled by Hydra
            continue
        if OmegaConf.is_missing(node, key):
            yield f"{prefix}{key}"
        elif not OmegaConf.is_interpolation(node, key) and isinstance(node[key], DictConfig):
            yield from _missing(node[key], f"{prefix}{key}.")


def _check_combinations(cfg: DictConfig) -> None:
    """Choices that are valid alone but not together."""
    _check_dequantize(cfg)
    _check_latent_combinations(cfg)
    _check_steps_per_call(cfg)
    optimizer = OmegaConf.select(cfg, "schedule.optimizer", default=None)
    if optimizer is not None:  # the class and `fused`, before any data is read
        from vae_lab.schedules import optimizer_options

        optimizer_options(plain(optimizer), OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    warmup = [k for k in ("schedule.kl_warmup_steps", "schedule.kl_warmup_epochs")
              if (OmegaConf.select(cfg, k, default=0) or 0) > 0]
    name = OmegaConf.select(cfg, "loss.name", default=None)
    samples = OmegaConf.select(cfg, "loss.num_samples", default=1)
    from vae_lab.objectives import OBJECTIVES

    if name in OBJECTIVES and OBJECTIVES[name].one_sample and samples != 1:
        raise ConfigError(f"loss.num_samples={samples} is invalid with loss={name}: must be 1 (several samples "
                          f"per example are for loss=iwae)")
    if name == "beta_tcvae" and OmegaConf.select(cfg, "schedule.batch_size", default=2) < 2:
        raise ConfigError("schedule.batch_size=1 is invalid with loss=beta_tcvae: must be >= 2 (its estimators "
                          "of log q(z) pair the examples of a batch)")
    if name == "iwae" and warmup:
        raise ConfigError(f"{warmup[0]}={OmegaConf.select(cfg, warmup[0])} has no effect with loss=iwae (the IWAE "
                          f"bound has no separate KL term to warm up): set {warmup[0]}=0 or use loss=elbo")


AUTO_STEPS_PER_CALL = 8  # schedule.steps_per_call=auto, where nothing in the config counts Lightning calls


def _checkpoint_intervals(cfg: DictConfig) -> list[tuple[str, int]]:
    """(callback name, every_n_train_steps) of the step-based checkpoint callbacks."""
    nodes = OmegaConf.select(cfg, "callbacks", default=None) or {}
    return [(name, node.get("every_n_train_steps")) for name, node in nodes.items()
            if isinstance(node, DictConfig) and node.get("every_n_train_steps")]


def _validates_within_epochs(cfg: DictConfig) -> bool:
    interval = OmegaConf.select(cfg, "trainer.val_check_interval", default=None)
    return interval is not None and not (isinstance(interval, float) and interval == 1.0)


def _accumulates(cfg: DictConfig) -> bool:
    return (OmegaConf.select(cfg, "trainer.accumulate_grad_batches", default=1) or 1) != 1


def steps_per_call(cfg: DictConfig) -> int:
    """schedule.steps_per_call as a number. auto: 8 (Lightning's per-call cost, ~1 ms on the 2-core dev CPU, spread
    over 8 optimizer steps), halved until it divides every step-based checkpoint interval; 1 when validation runs
    within epochs (trainer.val_check_interval counts Lightning calls) or gradients are accumulated (Lightning's
    accumulation is for its own optimisation loop). Absent (configs saved before it existed): 1."""
    value = OmegaConf.select(cfg, "schedule.steps_per_call", default=1)
    if value != "auto":
        return 1 if value is None else int(value)
    if _validates_within_epochs(cfg) or _accumulates(cfg):
        return 1
    n = AUTO_STEPS_PER_CALL
    while n > 1 and any(every % n for _, every in _checkpoint_intervals(cfg)):
        n //= 2
    return n


def _check_steps_per_call(cfg: DictConfig) -> None:
    """auto or an integer >= 1. Several steps per call keep step-based checkpoints exact at call boundaries; step-based
    validation inside an epoch counts Lightning calls, not optimizer steps, so a set number > 1 is refused with it
    rather than silently moved. auto is not checked: steps_per_call picks a number that fits (1 where none > 1 does)."""
    value = OmegaConf.select(cfg, "schedule.steps_per_call", default=1)
    if value == "auto" or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"schedule.steps_per_call={value} is invalid: must be auto or an integer >= 1")
    n = value
    if n == 1:
        return
    if _validates_within_epochs(cfg):
        interval = OmegaConf.select(cfg, "trainer.val_check_interval")
        raise ConfigError(f"trainer.val_check_interval={interval} is invalid with schedule.steps_per_call={n}: must "
                          "be null (validate every epoch; trainer.check_val_every_n_epoch) or steps_per_call=1 "
                          "(or auto)")
    if _accumulates(cfg):
        accumulate = OmegaConf.select(cfg, "trainer.accumulate_grad_batches")
        raise ConfigError(f"trainer.accumulate_grad_batches={accumulate} is invalid with schedule.steps_per_call={n}: "
                          "set schedule.steps_per_call=1 (or auto), or a larger schedule.batch_size instead")
    for name, every in _checkpoint_intervals(cfg):
        if every % n:
            raise ConfigError(f"callbacks.{name}.every_n_train_steps={every} is invalid with schedule.steps_per_call="
                              f"{n}: must be a multiple of it (checkpoints are taken between calls)")


def _check_dequantize(cfg: DictConfig) -> None:
    """Uniform dequantisation (k + u)/L is for a density on discrete pixels only (Theis et al. 2016); the datamodule
    refuses it for continuous data, which it alone sees."""
    if OmegaConf.select(cfg, "dataset.dequantize", default="none") == "none":
        return
    binarize = OmegaConf.select(cfg, "dataset.binarize", default="none")
    if binarize != "none":
        raise ConfigError(f"dataset.dequantize=uniform is invalid: must be none with dataset.binarize={binarize} "
                          "(binary pixels are not dequantised)")
    from vae_lab.distributions import LIKELIHOODS

    name = OmegaConf.select(cfg, "model.likelihood", default=None)
    if name in LIKELIHOODS and LIKELIHOODS[name].kind != "density":
        raise ConfigError(f"dataset.dequantize=uniform is invalid: must be none with model.likelihood={name} "
                          f"({name} is a probability mass on the pixels as stored; dequantisation is for densities "
                          "such as gaussian_learned)")


def _check_latent_combinations(cfg: DictConfig) -> None:
    """Free bits need a factorised rate; the VampPrior cannot condition its pseudo-inputs on a label."""
    from vae_lab.distributions import POSTERIORS, PRIORS
    from vae_lab.distributions.prior import VAMP_CONDITIONAL

    prior = OmegaConf.select(cfg, "prior.name", default="standard_normal")
    posterior = OmegaConf.select(cfg, "posterior.name", default="gaussian")
    free_bits = OmegaConf.select(cfg, "loss.free_bits", default=0) or 0
    factorised = PRIORS[prior].diagonal_gaussian and POSTERIORS[posterior].diagonal_gaussian
    name = OmegaConf.select(cfg, "loss.name", default="elbo")
    from vae_lab.objectives import OBJECTIVES

    family = OmegaConf.select(cfg, "model.family", default=DEFAULT_FAMILY)
    if name in OBJECTIVES and OBJECTIVES[name].flat_code and family != DEFAULT_FAMILY:
        raise ConfigError(f"loss={name} reads the aggregate posterior of one flat Gaussian code (model.family=vae); "
                          f"model.family={family} has none: use loss=elbo or loss=iwae")
    if name in OBJECTIVES and OBJECTIVES[name].analytic_rate and not factorised:
        raise ConfigError(f"loss={name} needs the KL in closed form (prior=standard_normal, posterior=gaussian); "
                          f"with prior={prior} posterior={posterior} it has none: choose those, or loss=elbo")
    if free_bits > 0 and not factorised:
        raise ConfigError(f"loss.free_bits={free_bits} needs a factorised rate (KL per latent dim, Kingma et al. "
                          f"2016), but with prior={prior} posterior={posterior} the rate is the Monte Carlo "
                          f"log q(z|x) - log p(z): set loss.free_bits=0 (or use loss.beta / a KL warm-up)")
    if prior == "vamp" and OmegaConf.select(cfg, "model.conditional", default=False):
        raise ConfigError(VAMP_CONDITIONAL)
