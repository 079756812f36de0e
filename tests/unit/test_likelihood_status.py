"""What a number is: which runs report a normalised log-likelihood (and bits/dim), and that dequantised densities
report a true bound on the 8-bit data (Theis et al. 2016): the maths and the status evaluate is given. On trained runs:
tests/integration/test_units.py."""

import math

import numpy as np
import pytest
import torch

from binned import log_bin_mass_gaussian
from vae_lab.distributions import LIKELIHOODS
from vae_lab.units import Status, likelihood_status


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_status_of_every_likelihood_on_every_kind_of_data(name):
    kind = LIKELIHOODS[name].kind
    on_binary, on_bytes = likelihood_status(name, binary_data=True), likelihood_status(name, binary_data=False)
    dequantized = likelihood_status(name, binary_data=False, dequantize="uniform")
    assert on_binary.normalised == (kind in ("binary", "discrete"))  # a density at {0, 1} is no probability
    assert on_bytes.normalised == (kind == "discrete")  # Bernoulli on grey levels, a density at k/255: no
    assert dequantized.normalised == (kind == "density")  # dequantisation is for densities only
    assert dequantized.log_bin_width == (-math.log(256) if kind == "density" else 0.0)
    assert on_binary.log_bin_width == on_bytes.log_bin_width == 0.0  # masses are used as they are
    for status in (on_binary, on_bytes, dequantized):
        assert name in status.note and "\n" not in status.note
        assert status.as_json() == {"normalised": status.normalised, "note": status.note}


def test_the_notes_name_the_fix():
    assert "dataset.binarize=dynamic" in likelihood_status("bernoulli", binary_data=False).note
    assert "cross-entropy" in likelihood_status("bernoulli", binary_data=False).note
    assert "dataset.dequantize=uniform" in likelihood_status("gaussian", binary_data=False).note
    assert "model.likelihood=bernoulli" in likelihood_status("gaussian_learned", binary_data=True).note


@pytest.mark.parametrize("scale", [1e-3, 4e-3, 0.05, 0.5])
def test_dequantised_density_is_a_lower_bound_on_the_bin_mass(scale):
    """Theis et al. 2016, Sec. 3.1: E_u log p((k + u)/256) - ln 256 <= log P(k), by Jensen, per pixel."""
    level = np.arange(256.0)
    for loc in (0.0, 0.3, 0.51, 1.0):
        u = (np.arange(20000) + 0.5) / 20000  # midpoint quadrature of E_u
        y = (level[:, None] + u) / 256
        log_p = -0.5 * ((y - loc) / scale) ** 2 - np.log(scale * math.sqrt(2 * math.pi))
        bound = log_p.mean(1) - math.log(256)
        mass = log_bin_mass_gaussian(level, loc, scale)
        ok = np.isfinite(mass)
        assert (bound[ok] <= mass[ok] + 1e-9).all()


def test_status_is_given_to_evaluate_or_taken_conservatively():
    from vae_lab.evaluation import evaluate
    from vae_lab.model import VAE

    model = VAE(in_shape=(1, 4, 4), latent_dim=2, net={"hidden_dims": [8]}, likelihood="gaussian_learned").eval()
    x = [(torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long))]
    assert "elbo_bits_per_dim" not in evaluate(model, x, iwae_samples=2)  # dequantised or not: it cannot know
    told = evaluate(model, x, iwae_samples=2, status=Status(True, "dequantised", -math.log(256)))
    assert told["elbo_bits_per_dim"] == pytest.approx(
        -(told["elbo_nats"] - 16 * math.log(256)) / (16 * math.log(2)), rel=1e-6)
