"""Every option of every config group composes and validates; bad values fail with one clear line."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from vae_lab.config import _missing
from vae_lab.model_args import COMMON_MODEL_KEYS, family_named
from vae_lab.cli import CONFIG_DIR
from vae_lab.config import validate
from vae_lab.errors import ConfigError

GROUPS = sorted(p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "hydra")


DEFAULT_GROUPS = {next(iter(d)) for d in OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "train.yaml").defaults)
                  if isinstance(d, dict)}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(override):
    group = override.split("=")[0]
    prefix = "" if group in DEFAULT_GROUPS else "+"  # groups not in train.yaml's defaults list are appended
    cfg = make_cfg(prefix + override)
    required = list(_missing(cfg))  # the user-supplied paths (???): refused in one line until given
    for key in required:
        with pytest.raises(ConfigError, match=f"{key} is required"):
            validate(cfg)
        OmegaConf.update(cfg, key, "given/by/the/user")
    validate(cfg)
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    model = container["model"]
    # the VAE's code size, or another family's knobs: its own init args only, at least one of them set
    # (vqvae_prior takes stage 1's from prior_of= at start)
    own = {rule.key for rule in family_named(model["family"]).rules}
    assert model["latent_dim"] >= 1 if model["family"] == "vae" else (
        set(model) - set(COMMON_MODEL_KEYS) <= own and set(model) & own - set(COMMON_MODEL_KEYS))


@pytest.mark.parametrize("dataset", ["digits", "mnist", "fashion_mnist"])
def test_binary_likelihood_defaults_binarise_the_data(dataset):
    cfg = make_cfg(f"dataset={dataset}")
    assert (cfg.model.likelihood, cfg.dataset.binarize, cfg.dataset.dequantize) == ("bernoulli", "dynamic", "none")


@pytest.mark.parametrize("dataset", ["cifar10", "image_folder", "array_file"])
def test_eight_bit_datasets_default_to_a_discretised_likelihood(dataset):
    from vae_lab.build import resolve_likelihood
    from vae_lab.data.spec import DataSpec

    cfg = make_cfg(f"dataset={dataset}")
    # user data say `auto`, which for 8-bit grey levels is the same choice (tests/test_levels.py: other data)
    assert cfg.model.likelihood == ("discretized_logistic_mixture" if dataset == "cifar10" else "auto")
    eight_bit = DataSpec(shape=(3, 8, 8), num_classes=None, class_names=None, has_test=False)
    assert (resolve_likelihood(cfg, eight_bit)[0], cfg.dataset.binarize, cfg.dataset.dequantize) == (
        "discretized_logistic_mixture", "none", "none")
    assert make_cfg("dataset=cifar10", "model.likelihood=gaussian_learned").model.likelihood == "gaussian_learned"


@pytest.mark.parametrize("override, message", [
    (["dataset=cifar10", "dataset.dequantize=uniform"],
     "dataset.dequantize=uniform is invalid: must be none with model.likelihood=discretized_logistic_mixture"),
    (["dataset=mnist", "dataset.dequantize=uniform", "model.likelihood=gaussian_learned"],
     "dataset.dequantize=uniform is invalid: must be none with dataset.binarize=dynamic"),
    (["dataset.dequantize=gaussian"], "dataset.dequantize='gaussian' is invalid: must be one of: none, uniform"),
    (["model.likelihood_components=0"], "model.likelihood_components=0 is invalid: must be an integer >= 1"),
])
def test_dequantisation_is_for_densities_on_8bit_data_only(override, message):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(*override))
    assert message in str(err.value) and "\n" not in str(err.value)
    validate(make_cfg("dataset=cifar10", "dataset.dequantize=uniform", "model.likelihood=gaussian_learned"))


def test_experiments_reproduce_the_seeds_settings():
    cfg = make_cfg("experiment=seed_mnist_mlp")
    assert (cfg.dataset.name, cfg.model.architecture, cfg.model.latent_dim) == ("mnist", "mlp", 20)
    # the seeds' grey-level BCE (a cross-entropy, reported as such) and fixed-scale MSE are kept
    assert (cfg.model.likelihood, cfg.dataset.binarize) == ("bernoulli", "none")
    assert (cfg.schedule.batch_size, cfg.schedule.lr, cfg.trainer.max_epochs) == (64, 1e-3, 10)
    cfg = make_cfg("experiment=seed_fashion_mnist_conv")
    assert (cfg.model.likelihood, cfg.dataset.binarize, cfg.model.latent_dim) == ("bernoulli", "none", 2)
    cfg = make_cfg("experiment=seed_cifar10_advanced")
    assert cfg.schedule.optimizer._target_ == "torch.optim.AdamW" and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.schedule.kl_warmup_epochs == 10 and cfg.model.architecture == "conv_deep"
    assert (cfg.model.likelihood, cfg.model.likelihood_scale, cfg.dataset.dequantize) == ("gaussian", 0.7071, "none")


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.latent_dim=0", "model.latent_dim=0 is invalid: must be an integer >= 1"),
        ("loss.beta=-1", "loss.beta=-1 is invalid: must be a number >= 0"),
        ("loss.beta=abc", "loss.beta='abc' is invalid: must be a number >= 0"),
        ("model.likelihood=nope", "model.likelihood='nope' is invalid: must be one of: auto, bernoulli, continuous_bernoulli"),
        ("schedule.lr=0", "schedule.lr=0 is invalid: must be a number > 0"),
        ("schedule.batch_size=0", "schedule.batch_size=0 is invalid"),
        ("dataset.val_fraction=1.5", "dataset.val_fraction=1.5 is invalid: must be a number > 0 and < 1"),
        ("schedule.kl_warmup_steps=-5", "schedule.kl_warmup_steps=-5 is invalid"),
        ("model.conditional=maybe", "model.conditional='maybe' is invalid: must be true or false"),
    ],
)
def test_bad_values_fail_with_one_clear_line(override, message):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(override))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_group_option_lists_the_choices():
    with pytest.raises(MissingConfigException, match="(?s)dataset/nope.*digits"):
        make_cfg("dataset=nope")


def test_unknown_key_is_refused():
    with pytest.raises(ConfigCompositionException, match="model.foo"):
        make_cfg("model.foo=1")


def test_fused_auto_is_torchs_fused_optimizer_except_under_fp16_loss_scaling():
    import torch

    from vae_lab.schedules import optimizer_options

    adam = {"_target_": "torch.optim.Adam", "lr": 1e-2, "fused": "auto"}
    assert optimizer_options(adam, "32-true")["fused"] is True
    assert optimizer_options(adam, "bf16-mixed")["fused"] is True
    assert optimizer_options(adam, "16-mixed")["fused"] is False  # Lightning would clip still-scaled gradients
    assert "fused" not in optimizer_options({**adam, "_target_": "torch.optim.RMSprop"}, "32-true")  # has none
    assert optimizer_options({**adam, "fused": False}, "32-true")["fused"] is False  # as set
    # the fused update is Adam's: 20 steps agree with torch's per-tensor implementation to float precision
    weights = []
    for fused in (True, False):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(50, 7))
        options = {k: v for k, v in optimizer_options(adam, "32-true").items() if k != "_target_"}
        optimizer = torch.optim.Adam([w], **{**options, "fused": fused})
        for _ in range(20):
            optimizer.zero_grad()
            (w.sin() * torch.arange(7.0)).sum().backward()
            optimizer.step()
        weights.append(w.detach())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
