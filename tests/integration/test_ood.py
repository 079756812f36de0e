"""scripts/score.py's work in-process (vae_lab.ood.run.score_model) on the shared plain run: per-example scores,
the AUROC of each column, background models and data, refused settings. The maths: tests/unit/test_ood_scores.py;
the command line: tests/cli/test_score_cli.py."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import ConfigError
from vae_lab.ood.run import score_model
from vae_lab.ood.separation import separation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _merged(defaults: list[str], overrides) -> list[str]:
    """defaults, less those whose key an override sets, then the overrides."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [d for d in defaults if d.split("=", 1)[0] not in keys] + list(overrides)


@pytest.fixture
def run_dir(trained_run) -> Path:
    """The shared plain run (latent_dim 3), read-only: every score here writes under tmp_path."""
    return trained_run("plain")


def _score(model, out, *overrides, out_data=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("score", overrides=_merged([f"model={model}", f"out={out}", "max_examples=40",
                                                  "iwae_samples=4", "regret.steps=3"], overrides))
    return score_model(cfg, [], list(out_data))


def test_in_distribution_scores_are_written_per_example_with_index_and_label(run_dir, tmp_path):
    report = _score(run_dir, tmp_path / "s", "split=val")
    frame = pd.read_csv(tmp_path / "s" / "scores.csv")
    assert list(frame.columns) == ["source", "dataset", "split", "index", "label", "iwae", "elbo", "recon"]
    assert len(frame) == 40 and list(frame["index"]) == list(range(40)) and frame["label"].between(0, 9).all()
    assert np.isfinite(frame[["iwae", "elbo", "recon"]].to_numpy()).all()
    assert frame["iwae"].mean() < frame["elbo"].mean()  # -IWAE-4 <= -ELBO on average
    assert report["scores"]["iwae"]["mean"]["in"] == pytest.approx(frame["iwae"].mean())
    for name in ("hist_iwae.png", "typical_in_iwae.png", "typical_in_recon.png", "ood.json"):
        assert (tmp_path / "s" / name).is_file()


def test_out_of_distribution_scores_give_the_auroc_of_their_columns(run_dir, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (60, 8, 8), dtype=np.uint8)  # digits are 8x8
    np.savez(tmp_path / "noise.npz", x=noise)
    names = "score=[iwae,elbo,recon,likelihood_ratio,likelihood_regret,input_complexity]"
    report = _score(run_dir, tmp_path / "s", "split=val", names, f"background={run_dir}",
                    out_data=["dataset=array_file", f"dataset.options.path={tmp_path / 'noise.npz'}"])
    frame = pd.read_csv(tmp_path / "s" / "scores.csv")
    assert report["sources"]["out"] | {"path": None} == {"dataset": "array_file", "split": "train+val",
                                                        "num_examples": 40, "path": None}
    assert (frame["label"][frame["source"] == "out"] == -1).all()  # unlabelled
    for name, entry in report["scores"].items():
        col = frame[name]
        expected = separation(col[frame.source == "in"], col[frame.source == "out"])
        assert {k: entry[k] for k in expected} == pytest.approx(expected)
    assert (frame["likelihood_regret"] >= 0).all()
    assert (frame["likelihood_ratio"].abs() < 1e-9).all()  # the model against itself: log p / log p = 0
    assert report["scores"]["iwae"]["auroc"] > 0.9  # uniform noise is far less likely than digits
    assert json.loads((tmp_path / "s" / "ood.json").read_text())["scores"]["iwae"]["auroc"] == \
        report["scores"]["iwae"]["auroc"]


def test_likelihood_ratio_needs_a_background_model(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="background="):
        _score(run_dir, tmp_path / "s", "split=val", "score=[likelihood_ratio]")
    with pytest.raises(ConfigError, match="likelihood_regret"):
        _score(run_dir, tmp_path / "s", "score=[iwae,bogus]")
    assert not (tmp_path / "s").exists()


def test_background_data_are_the_training_split_perturbed(run_dir, tmp_path):
    _score(run_dir, tmp_path, f"write_background_data={tmp_path / 'bg.npz'}", "background_rate=0.5")
    with np.load(tmp_path / "bg.npz") as f:
        assert f["x"].dtype == np.uint8 and f["x"].shape[1:] == (1, 8, 8) and f["y"].shape == (len(f["x"]),)


# ---------------------------------------------------------------- slow: real data


@pytest.mark.slow
def test_fashion_mnist_vs_mnist_input_complexity_separates_where_likelihood_fails(tmp_path):
    """A conv VAE (discretised logistic on 8-bit pixels) trained 400 steps (~1.5 min) on Fashion-MNIST gives MNIST
    higher likelihood (AUROC of -log p(x) well under 0.5, Nalisnick et al. 2019) while input complexity (Serra et
    al. 2020), the best score here, separates them (docs/ood.md)."""
    from datasets_fixtures import copy_mnist
    from trained import train_run

    root = copy_mnist(copy_mnist(tmp_path / "data", "FashionMNIST"), "MNIST")
    run = train_run(tmp_path / "run", "dataset=fashion_mnist", f"paths.data_dir={root}", "architecture=conv",
                    "dataset.binarize=none", "model.likelihood=discretized_logistic", "model.latent_dim=16",
                    "trainer.limit_train_batches=400", "trainer.limit_val_batches=5", "trainer.limit_test_batches=5")
    report = _score(run, tmp_path / "s", "max_examples=500", "iwae_samples=10", "score=[iwae,input_complexity]",
                    out_data=["dataset=mnist"])
    auroc = {name: entry["auroc"] for name, entry in report["scores"].items()}
    assert auroc["iwae"] < 0.3 and auroc["input_complexity"] > 0.85, auroc  # measured: 0.062 and 0.885
