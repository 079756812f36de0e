"""Out-of-distribution scores (vae_lab.ood), the maths: the separation metrics against scikit-learn on a hand-made
case, likelihood regret against the linear-Gaussian oracle, perturbation, PNG bits, out_data= overrides, and the scores
of a family without a flat code. scripts/score.py's files: tests/integration/test_ood.py."""

import pytest
import torch

from oracles import LinearGaussian, diagonal_posterior
from vae_lab.errors import ConfigError
from vae_lab.ood.perturb import perturb
from vae_lab.ood.run import split_out_data
from vae_lab.ood.scores import likelihood_regret, png_bits
from vae_lab.ood.separation import separation


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
