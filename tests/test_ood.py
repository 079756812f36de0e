"""Out-of-distribution scores (vae_lab.ood): the separation metrics against scikit-learn on a hand-made case,
likelihood regret against the linear-Gaussian oracle, scripts/score.py's files and its one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from oracles import LinearGaussian, diagonal_posterior
from vae_lab.cli import CONFIG_DIR
from vae_lab.cli.train import train
from vae_lab.errors import ConfigError
from vae_lab.ood.perturb import perturb
from vae_lab.ood.run import score_model, split_out_data
from vae_lab.ood.scores import likelihood_regret, png_bits
from vae_lab.ood.separation import separation

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- maths


def test_separation_on_a_hand_made_case_equals_the_hand_count_and_scikit_learn():
    from sklearn.metrics import roc_auc_score

    s_in, s_out = [0.0, 1.0, 2.0], [1.5, 3.0]
    got = separation(s_in, s_out)
    # out above in: 1.5 > 0, 1 (not 2); 3 > all: 5 of 6 pairs
    assert got["auroc"] == pytest.approx(5 / 6)
    assert got["auroc"] == pytest.approx(roc_auc_score([0, 0, 0, 1, 1], s_in + s_out))
    # ranked 3 (out), 2 (in), 1.5 (out): precision 1 at recall 1/2, 2/3 at recall 1
    assert got["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # flagging both outs needs the threshold 1.5, which flags the in-example 2 of 3
    assert got["fpr_at_95_tpr"] == pytest.approx(1 / 3)
    perfect = separation([0, 1], [2, 3])
    assert perfect == {"auroc": 1.0, "auprc": 1.0, "fpr_at_95_tpr": 0.0}


def _diagonal_oracle() -> LinearGaussian:
    """A linear-Gaussian model with orthogonal columns of W: its exact posterior is a diagonal Gaussian."""
    q, _ = torch.linalg.qr(torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    lg = LinearGaussian.random(data_dim=6, latent_dim=3, s=0.5)
    return LinearGaussian(q * torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64), lg.b, lg.s)


def test_likelihood_regret_is_zero_at_the_exact_posterior_and_positive_elsewhere():
    lg = _diagonal_oracle()
    x = lg.sample_x(16)
    m, S = lg.exact_posterior(x)
    assert torch.allclose(S, torch.diag(torch.diag(S)))  # the exact posterior is diagonal here
    exact = diagonal_posterior(m, torch.diag(S).sqrt().expand_as(m))
    regret = likelihood_regret(exact, lg.prior(), lg.likelihood, x, steps=30, lr=0.5, num_samples=8, seed=0)
    assert regret.shape == (16,)
    assert (regret >= 0).all() and regret.max() < 1e-6  # log w = log p(x) for every z: no gradient, no gain

    worse = diagonal_posterior(m + 0.7, 2 * torch.diag(S).sqrt().expand_as(m))
    gain = likelihood_regret(worse, lg.prior(), lg.likelihood, x, steps=50, lr=0.5, num_samples=512, seed=0)
    # the gap ELBO(exact) - ELBO(worse) = KL(worse || exact) is what there is to regain (512 draws: MC error ~0.2)
    kl = torch.distributions.kl_divergence(worse, exact)
    assert (gain >= 0).all() and ((gain - kl).abs() < 1.0).all()


def test_perturb_replaces_about_the_rate_of_pixels_with_levels():
    x = torch.zeros(200, 1, 10, 10, dtype=torch.uint8)
    y = perturb(x, 0.2, 256, seed=0)
    changed = (y != x).float().mean().item()
    assert 0.18 < changed < 0.21  # 0.2 minus the 1/256 draws that land on 0
    assert torch.equal(perturb(x, 0.2, 256, seed=0), y) and torch.equal(perturb(x, 0.0, 256, 0), x)


def test_png_bits_are_lower_for_a_flat_image_than_for_noise():
    flat, noise = torch.zeros(1, 1, 28, 28), torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    bits = png_bits(torch.cat([flat, noise]), 256)
    assert bits[0] < 0.2 * bits[1] and bits[1] > 28 * 28 * 6  # noise does not compress


def test_out_data_overrides_become_dataset_overrides():
    argv = ["score.py", "model=m", "out_data=mnist", "out_data.binarize=none", "split=test"]
    assert split_out_data(argv) == (["score.py", "model=m", "split=test"], ["dataset=mnist", "dataset.binarize=none"])
    rest, out = split_out_data(["score.py", "out_data.path=codes.npz", "out_data.options.key=x"])
    assert rest == ["score.py"]
    assert out == ["dataset=array_file", "dataset.options.path=codes.npz", "dataset.options.key=x"]
    with pytest.raises(ConfigError, match="out_data=<dataset>"):
        split_out_data(["score.py", "out_data.binarize=none"])


# ---------------------------------------------------------------- scripts/score.py


def _merged(defaults: list[str], overrides) -> list[str]:
    """defaults, less those whose key an override sets, then the overrides."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [d for d in defaults if d.split("=", 1)[0] not in keys] + list(overrides)


def _train_run(root: Path, *overrides) -> Path:
    defaults = [f"paths.output_dir={root}", "print_config=false", "callbacks=no_images", "logger=none",
                "trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false", "model.latent_dim=3"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=_merged(defaults, overrides))
    (root / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, root / ".hydra" / "config.yaml")
    train(cfg)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _train_run(tmp_path_factory.mktemp("ood") / "run")


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


def test_cli_out_data_of_another_shape_is_one_line_naming_both_shapes(run_dir, tmp_path):
    np.savez(tmp_path / "big.npz", x=np.zeros((20, 28, 28), dtype=np.uint8))
    proc = subprocess.run([sys.executable, "scripts/score.py", f"model={run_dir}", f"out={tmp_path / 's'}",
                           f"out_data.path={tmp_path / 'big.npz'}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: out_data:")
    assert "(1, 28, 28)" in lines[0] and "(1, 8, 8)" in lines[0]
    assert not (tmp_path / "s").exists()


# ---------------------------------------------------------------- slow: real data


@pytest.mark.slow
def test_fashion_mnist_vs_mnist_input_complexity_separates_where_likelihood_fails(tmp_path):
    """A conv VAE (discretised logistic on 8-bit pixels) trained 400 steps (~1.5 min) on Fashion-MNIST gives MNIST
    higher likelihood (AUROC of -log p(x) well under 0.5, Nalisnick et al. 2019) while input complexity (Serra et
    al. 2020), the best score here, separates them (docs/ood.md)."""
    from datasets_fixtures import copy_mnist

    root = copy_mnist(copy_mnist(tmp_path / "data", "FashionMNIST"), "MNIST")
    run = _train_run(tmp_path / "run", "dataset=fashion_mnist", f"paths.data_dir={root}", "architecture=conv",
                     "dataset.binarize=none", "model.likelihood=discretized_logistic", "model.latent_dim=16",
                     "trainer.limit_train_batches=400", "trainer.limit_val_batches=5", "trainer.limit_test_batches=5")
    report = _score(run, tmp_path / "s", "max_examples=500", "iwae_samples=10", "score=[iwae,input_complexity]",
                    out_data=["dataset=mnist"])
    auroc = {name: entry["auroc"] for name, entry in report["scores"].items()}
    assert auroc["iwae"] < 0.3 and auroc["input_complexity"] > 0.85, auroc  # measured: 0.062 and 0.885


def test_a_family_without_a_flat_code_is_scored_through_its_terms_and_log_weights():
    from test_hierarchical import TINY
    from vae_lab.model import build_model
    from vae_lab.ood.scores import BatchScores, Settings

    torch.manual_seed(0)
    model = build_model({"family": "hierarchical", "in_shape": [1, 8, 8], **TINY}).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    batch = BatchScores(model, x, None, Settings(iwae_samples=5, regret_steps=2))
    for name in ("iwae", "elbo", "recon", "input_complexity"):
        values = batch.get(name)
        assert values.shape == (6,) and torch.isfinite(values).all(), name
    assert batch.get("iwae").mean() <= batch.get("elbo").mean() + 1.0  # -IWAE-5 <= -ELBO, up to Monte Carlo noise
    with pytest.raises(ConfigError, match="hierarchical family has none"):
        batch.get("likelihood_regret")
