"""`model.likelihood=auto` end to end: trained runs store the resolved likelihood, a Bernoulli on float grey levels is
not called a log-likelihood, and evaluation refuses data of another bit depth (the levels, bins and pixels
themselves: tests/unit/test_levels.py)."""

import json
import math

import numpy as np
import pytest


def _train(compose, tmp_path, array: np.ndarray, *overrides):
    from vae_lab.cli.train import train

    np.save(tmp_path / "x.npy", array)
    cfg = compose("print_config=false", "dataset=array_file", "trainer.max_steps=4", "trainer.max_epochs=-1",
                  "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "schedule.batch_size=8",
                  "callbacks=none", "logger=none", "model.latent_dim=2", *overrides)
    cfg.paths.output_dir = str(tmp_path / "run")
    cfg.dataset.options.path = str(tmp_path / "x.npy")
    metrics = train(cfg)
    config = json.loads((tmp_path / "run" / "artifact" / "config.json").read_text())
    return metrics, config


_RNG = np.random.default_rng(0)


@pytest.mark.parametrize("array, likelihood, levels", [
    (_RNG.integers(0, 65536, (32, 6, 5)).astype(np.uint16), "discretized_logistic_mixture", 65536),
    (_RNG.random((32, 6, 5)).astype(np.float32), "gaussian_learned", None),
    ((_RNG.random((32, 6, 5)) < 0.3).astype(np.float32), "bernoulli", 256),  # read as 0/255 uint8
], ids=["uint16", "float", "binary-float"])
def test_auto_trains_end_to_end_and_stores_the_resolved_likelihood(compose, tmp_path, capsys, array, likelihood,
                                                                    levels):
    metrics, config = _train(compose, tmp_path, array)
    out = capsys.readouterr().out
    assert f"likelihood auto -> {likelihood} (" in out and out.count("likelihood auto ->") == 1  # once per run
    assert config["likelihood"] == likelihood and config.get("likelihood_levels", 256) == levels
    assert metrics["log_likelihood"]["normalised"] is True
    assert math.isfinite(metrics["val"]["val/elbo_nats"]) and "val/bits_per_dim" in metrics["val"]


def test_bernoulli_on_float_grey_levels_warns_and_is_not_called_a_log_likelihood(compose, tmp_path):
    with pytest.warns(UserWarning, match="not a normalised log-likelihood: bernoulli on continuous pixels"):
        metrics, config = _train(compose, tmp_path, _RNG.random((32, 6, 5)).astype(np.float32), "model.likelihood=bernoulli")
    assert config["likelihood"] == "bernoulli" and metrics["log_likelihood"]["normalised"] is False
    assert "cross-entropy" in metrics["log_likelihood"]["note"]
    assert not [k for k in metrics["val"] if "bits_per_dim" in k]


def test_evaluate_refuses_data_of_another_bit_depth_for_a_discretised_model(compose, tmp_path):
    from vae_lab.evaluation import evaluate_model
    from vae_lab.errors import DataError
    from vae_lab.model import VAE

    VAE(in_shape=(1, 6, 5), latent_dim=2, likelihood="discretized_logistic", likelihood_levels=65536).save_pretrained(
        tmp_path / "model")
    np.save(tmp_path / "x8.npy", _RNG.integers(0, 256, (20, 6, 5)).astype(np.uint8))  # 8-bit data
    cfg = compose(f"model={tmp_path / 'model'}", "split=val", f"out={tmp_path / 'e.json'}", config="evaluate")
    with pytest.raises(DataError, match="bins 65536 grey levels but these data have 256") as caught:
        evaluate_model(cfg, ["dataset=array_file", f"dataset.options.path={tmp_path / 'x8.npy'}"])
    assert "\n" not in str(caught.value) and not (tmp_path / "e.json").exists()
