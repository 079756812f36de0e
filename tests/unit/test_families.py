"""The model-family interface and its registry: every family's schema matches its class, config.json records the
family, objectives are records over terms, and a family's options are refused for another family in one line."""

import importlib
import inspect
import json

import pytest
import torch
from omegaconf import OmegaConf

from vae_lab import artifact, publish
from vae_lab.errors import CheckpointError, ConfigError
from vae_lab.model import VAE, ModelFamily, Terms, class_of_family, family_class
from vae_lab.model_args import FAMILIES
from vae_lab.objectives import OBJECTIVES


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_schema_is_its_class_signature(family):
    spec = FAMILIES[family]
    cls = getattr(importlib.import_module(spec.module), spec.class_name)
    assert cls is class_of_family(family) and cls.family == family and issubclass(cls, ModelFamily)
    args = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(artifact.FAMILY_CONFIG_RULES[spec.class_name]) | set(artifact.SHAPED_KEYS) >= args - {"net"}
    assert set(artifact.FAMILY_CONFIG_RULES[spec.class_name]) <= args


def _tiny_vae(**kw) -> VAE:
    torch.manual_seed(0)
    return VAE(in_shape=[1, 8, 8], latent_dim=3, net={"hidden_dims": [8]}, **kw)


def test_config_json_records_the_family_and_version_and_round_trips(tmp_path):
    from vae_lab import __version__

    model = _tiny_vae()
    out = publish.save_artifact(tmp_path / "artifact", model)
    config = json.loads((out / artifact.CONFIG_NAME).read_text())
    assert config["_class_name"] == "VAE" and config["_vae_lab_version"] == __version__
    loaded = artifact.load_artifact(out, family_class)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(loaded.reconstruct(x), model.eval().reconstruct(x), rtol=0, atol=0)


@pytest.mark.parametrize("records, message", [
    ({"_class_name": "NoSuchVAE"}, "_class_name='NoSuchVAE' is not a vae_lab model family"),
    ({"_class_name": 3}, "_class_name=3 is not a vae_lab model family"),
    ({"_vae_lab_version": 1}, "_vae_lab_version=1 is invalid: must be a string"),
])
def test_bad_records_in_config_json_are_one_line(records, message):
    with pytest.raises(CheckpointError, match=message):
        artifact.check_config({"in_shape": [1, 8, 8], **records}, "config.json")


def test_the_vae_terms_are_one_group_whose_rate_is_the_objectives_rate():
    model = _tiny_vae()
    x = (torch.rand(4, 1, 8, 8) > 0.5).float()
    (group,) = model.latent_groups()
    assert group.shape == (3,) and model.latent_size == 3 and model.flat_code
    t = model.terms(x, num_samples=2, seed=1, with_log_q=True)
    assert isinstance(t, Terms) and t.rate.shape == (4, 1) and t.log_px_given_z.shape == (2, 4)
    torch.testing.assert_close(t.rate[:, 0], t.kl_units.sum(-1))
    # seeded terms are reproducible; log w = log p(x|z) + log p(z) - log q(z|x)
    again = model.terms(x, num_samples=2, seed=1, with_log_q=True)
    torch.testing.assert_close(t.log_weights(), again.log_weights(), rtol=0, atol=0)
    log_w, log_px = model.log_weights(x, None, 3)
    assert log_w.shape == log_px.shape == (3, 4)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_reads_terms(name):
    spec = OBJECTIVES[name]
    params = list(inspect.signature(spec.fn).parameters)
    assert params[0] == "t" and {"kl_weight", "step"} <= set(params)
    assert spec.rate_coefficient in (None, 0.0) or spec.rate_coefficient in params


def test_aux_loss_of_a_family_is_added_to_every_objective():
    from vae_lab.objectives import build_objective

    model = _tiny_vae()
    x = (torch.rand(4, 1, 8, 8) > 0.5).float()
    t = model.terms(x, with_log_q=True)
    plain = build_objective("elbo")(t).loss
    t.aux_loss = torch.tensor(2.5)
    assert float(build_objective("elbo")(t).loss) == pytest.approx(float(plain) + 2.5)


def test_temperature_must_be_positive_and_scales_a_gaussian_prior():
    model = _tiny_vae()
    for bad in (0, -1.0, float("nan"), float("inf"), "hot"):
        with pytest.raises(ConfigError, match="temperature=.* is invalid: must be a number > 0"):
            model.sample(2, temperature=bad)
    torch.manual_seed(3)
    cold = model.sample(256, temperature=1e-6)
    spread = cold.std(0).max()
    assert spread < 1e-4  # all z at the prior mean: the same image
    assert model.sample(2, temperature=0.7).shape == (2, 1, 8, 8)


def test_a_family_option_for_another_family_is_one_line():
    from vae_lab.config import validate

    cfg = OmegaConf.create({"model": {"family": "vae", "latent_dim": 4, "no_such_knob": 1}})
    with pytest.raises(ConfigError, match="model.no_such_knob is not a model option, not of model.family=vae: "
                                          "choose the family and its nets with architecture=mlp"):
        validate(cfg)
    with pytest.raises(ConfigError, match="model.family='nope' is invalid"):
        validate(OmegaConf.create({"model": {"family": "nope"}}))


def test_a_vae_checkpoint_has_no_family_key_so_old_runs_resume():
    from vae_lab.build import model_kwargs
    from vae_lab.data import DataSpec

    cfg = OmegaConf.create({"model": {"family": "vae", "latent_dim": 4, "architecture": "mlp", "net": {},
                                      "likelihood": "bernoulli", "likelihood_scale": 0.1, "likelihood_min_scale": 1e-3,
                                      "likelihood_components": 10, "posterior_min_scale": 1e-4,
                                      "conditional": False}})
    kwargs = model_kwargs(cfg, DataSpec(shape=(1, 8, 8), num_classes=None, class_names=None, has_test=False))
    assert "family" not in kwargs and kwargs["latent_dim"] == 4


def test_an_objective_on_a_flat_code_is_refused_for_a_family_without_one():
    from vae_lab.config import validate

    cfg = OmegaConf.create({"model": {"family": "hierarchical"}, "loss": {"name": "beta_tcvae"}})
    with pytest.raises(ConfigError, match="loss=beta_tcvae reads the aggregate posterior of one flat Gaussian code"):
        validate(cfg)


def test_labels_reach_a_conditional_model_only():
    """ModelFamily.labels: the one place labels are dropped (an unconditional model must not see them)."""
    y = torch.tensor([1, 0])
    plain = VAE(in_shape=[1, 4, 4], latent_dim=2, net={"hidden_dims": [8]})
    cond = VAE(in_shape=[1, 4, 4], latent_dim=2, net={"hidden_dims": [8]}, conditional=True, num_classes=2)
    assert plain.labels(y) is None and plain.labels(1) is None
    assert cond.labels(y) is y and cond.labels(1) == 1
