"""Sample quality (vae_lab.fid, vae_lab.feature_nets): the Frechet distance against the closed form, precision /
recall on hand-made point sets, the classifier features through scripts/evaluate.py, a missing weights file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from vae_lab.cli import CONFIG_DIR
from vae_lab.errors import DataError
from vae_lab.feature_nets import INCEPTION_FILE, check_weights_file, inception
from vae_lab.fid import fid, frechet_distance, moments, precision_recall

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_frechet_distance_equals_the_closed_form_for_commuting_covariances():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])  # variances
    # diagonal covariances: ||mu1 - mu2||^2 + sum (sigma1 - sigma2)^2 = 5 + (1 + 1 + 4)
    got = frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    assert got == pytest.approx(5 + 6, abs=1e-10)


def test_frechet_distance_equals_scipy_sqrtm_for_general_covariances():
    from scipy.linalg import sqrtm

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 4, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g, dtype=torch.float64)
    c1, c2 = a @ a.T + 0.1 * torch.eye(4), b @ b.T + 0.1 * torch.eye(4)
    mu1, mu2 = torch.randn(4, generator=g, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    root = np.real(sqrtm(c1.numpy() @ c2.numpy()))
    expected = float((mu1 - mu2).pow(2).sum() + torch.trace(c1) + torch.trace(c2) - 2 * np.trace(root))
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-9)


def test_a_set_against_itself_is_zero_and_moments_are_the_sample_moments():
    f = torch.randn(500, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert fid(f, f) == pytest.approx(0.0, abs=1e-8)
    mu, cov = moments(f)
    assert torch.allclose(cov, torch.from_numpy(np.cov(f.numpy().T)))
    assert fid(f, f + 2.0) == pytest.approx(6 * 4.0, rel=1e-8)  # a shift of 2 in each of 6 dims


def test_precision_and_recall_on_hand_made_point_sets():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])  # k=1: every real ball has radius 1
    fake = torch.tensor([[0.5], [10.0]])  # 0.5 inside the real manifold, 10 far outside; fake radii 9.5
    assert precision_recall(real, fake, k=1) == (0.5, 1.0)
    near = torch.tensor([[0.2], [0.4], [0.6]])  # k=1: every fake ball has radius 0.2
    p, r = precision_recall(real, near, k=1)
    assert p == 1.0 and r == pytest.approx(1 / 5)  # all inside; only the real 0 lies within 0.2 of 0.2
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(real, fake, k=3)


def test_a_missing_or_wrong_weights_file_says_where_and_which(tmp_path):
    with pytest.raises(DataError, match=INCEPTION_FILE) as err:
        check_weights_file(str(tmp_path / "nope.pth"))
    assert str(tmp_path / "nope.pth") in str(err.value) and "\n" not in str(err.value)
    pytest.importorskip("torch_fidelity")
    (tmp_path / "wrong.pth").write_bytes(b"garbage\n")
    with pytest.raises(DataError, match="not the FID Inception weights"):
        inception(str(tmp_path / "wrong.pth"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from test_ood import _train_run

    return _train_run(tmp_path_factory.mktemp("fid") / "run")


def test_evaluate_reports_classifier_fid_naming_its_features_and_caches_it(run_dir, tmp_path):
    from vae_lab.evaluation import evaluate_model

    overrides = [f"model={run_dir}", f"out={tmp_path / 'e.json'}", "split=val", "iwae_samples=2", "progress=false",
                 "fid.features=mnist_classifier", "fid.num_examples=120", "fid.classifier_epochs=1",
                 f"fid.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides)
    report, _ = evaluate_model(cfg)
    q = report["sample_quality"]
    assert q["num_examples"] == 120 and "classifier of digits's train split" in q["features"]
    for key in ("fid_samples", "fid_reconstructions", "fid_real_halves"):
        assert np.isfinite(q[key]) and q[key] >= 0
    assert 0 <= q["precision_samples"] <= 1 and 0 <= q["recall_reconstructions"] <= 1
    cached = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(cached) == 1 and json.loads(cached[0].with_suffix(".json").read_text())["accuracy"] > 0.5
    stamp = cached[0].stat().st_mtime_ns
    again, _ = evaluate_model(cfg)  # read from the cache: the same features, the same numbers
    assert cached[0].stat().st_mtime_ns == stamp and again["sample_quality"]["fid_samples"] == q["fid_samples"]


def test_cli_missing_feature_weights_is_one_line_and_writes_nothing(run_dir, tmp_path):
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", f"model={run_dir}", f"out={tmp_path / 'e.json'}",
                           f"fid.features={tmp_path / 'inception.pth'}"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and INCEPTION_FILE in lines[0] and str(tmp_path / "inception.pth") in lines[0]
    assert not (tmp_path / "e.json").exists()
