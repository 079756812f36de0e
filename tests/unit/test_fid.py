"""Sample quality (vae_lab.fid, vae_lab.feature_nets): the Frechet distance against the closed form, precision /
recall on hand-made point sets, a missing or wrong weights file. The classifier features through evaluate:
tests/integration/test_sample_quality.py; evaluate.py's one line for a missing weights file:
tests/cli/test_evaluate_cli.py."""

import numpy as np
import pytest
import torch

from vae_lab.errors import DataError
from vae_lab.feature_nets import INCEPTION_FILE, check_weights_file, inception
from vae_lab.fid import fid, frechet_distance, moments, precision_recall

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
