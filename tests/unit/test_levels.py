"""Data beyond 8 bits after loading: grey levels k/(L-1), float data as stored, bins of discretised likelihoods,
and `model.likelihood=auto` chosen from the data (issue 15, item 10). (Trained end to end, and evaluation of data of
another bit depth: tests/integration/test_levels_training.py.)"""

import itertools
import json
import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from vae_lab.cli import CONFIG_DIR
from vae_lab.data.batches import InMemoryBatches, stream_seed
from vae_lab.data.datamodule import VAEDataModule
from vae_lab.data.raw import RawData
from vae_lab.distributions import LIKELIHOODS
from vae_lab.distributions.discretized import Discretized, log_mass_gaussian, log_mass_logistic
from vae_lab.distributions.logistic_mixture import DiscretizedLogisticMixture
from vae_lab.errors import ConfigError
from vae_lab.units import auto_likelihood, likelihood_status


def _raw(x: torch.Tensor, levels, y=None) -> RawData:
    return RawData(train_x=x, train_y=y, levels=levels)


def _datamodule(raw: RawData, **kwargs) -> VAEDataModule:
    """A datamodule serving `raw` as a loader would return it (the readers themselves are tested elsewhere)."""
    dm = VAEDataModule(name="array_file", data_dir=".", batch_size=4, val_fraction=0.25, seed=0,
                       options={"path": "unused.npy"}, **kwargs)
    dm._raw = raw  # what prepare_data keeps from the loader
    dm.setup()
    return dm


# ---------------------------------------------------------------- bins: masses sum to 1, bins of width 1/(L-1)


@pytest.mark.parametrize("levels", [4, 16, 256, 65536])
@pytest.mark.parametrize("family", ["logistic", "gaussian"])
def test_discretised_masses_sum_to_one_over_the_datas_levels(levels, family):
    loc = torch.tensor([-0.3, 0.0, 0.37, 0.5, 1.2])
    scale = torch.tensor([0.05, 0.3, 1e-3, 0.02, 0.4])
    dist = Discretized(loc, scale, family, levels=levels)
    x = torch.arange(levels, dtype=torch.float64).div(levels - 1).float().unsqueeze(1)  # every level, (L, 1)
    log_p = dist.log_prob(x).double()  # (L, 5)
    assert torch.logsumexp(log_p, 0).exp().sub(1).abs().max() < 2e-5


@pytest.mark.parametrize("levels", [4, 16])
def test_discretised_bins_have_width_one_over_levels_minus_one(levels):
    """Each level's mass against a float64 CDF difference on [k -+ 1/2] / (L-1), edges to -+inf (brute force)."""
    loc, scale = torch.tensor(0.4, dtype=torch.float64), torch.tensor(0.15, dtype=torch.float64)
    for k in range(levels):
        lo = -math.inf if k == 0 else (k - 0.5) / (levels - 1)
        hi = math.inf if k == levels - 1 else (k + 0.5) / (levels - 1)
        z = lambda t: (t - 0.4) / 0.15  # noqa: E731
        sigmoid = lambda t: 1 / (1 + math.exp(-z(t))) if math.isfinite(t) else float(t > 0)  # noqa: E731
        phi = lambda t: 0.5 * math.erfc(-z(t) / math.sqrt(2)) if math.isfinite(t) else float(t > 0)  # noqa: E731
        level = torch.tensor(float(k), dtype=torch.float64)
        assert log_mass_logistic(level, loc, scale, levels).item() == pytest.approx(math.log(sigmoid(hi) - sigmoid(lo)))
        assert log_mass_gaussian(level, loc, scale, levels).item() == pytest.approx(math.log(phi(hi) - phi(lo)))


def test_mixture_masses_sum_to_one_over_joint_levels_of_rgb():
    """PixelCNN++'s coupled mixture on 4 levels: the 4^3 joint masses of one RGB pixel sum to 1 (brute force)."""
    g = torch.Generator().manual_seed(0)
    k = 3
    logits, loc = torch.randn(k, 1, 1, generator=g), torch.randn(k, 3, 1, 1, generator=g) * 0.4 + 0.5
    scale, coeffs = torch.rand(k, 3, 1, 1, generator=g) * 0.3 + 0.05, torch.tanh(torch.randn(k, 3, 1, 1, generator=g))
    dist = DiscretizedLogisticMixture(logits, loc, scale, coeffs, levels=4)
    pixels = torch.tensor(list(itertools.product(range(4), repeat=3)), dtype=torch.float32).div(3)  # (64, 3)
    log_p = dist.log_prob(pixels.view(64, 3, 1, 1)).double()
    assert log_p.shape == (64,) and torch.logsumexp(log_p, 0).exp().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("levels", [16, 65536])
def test_discretised_samples_and_means_stay_on_the_datas_grid(levels):
    dist = Discretized(torch.full((2000,), 0.3), torch.full((2000,), 0.1), "logistic", levels=levels)
    sample = dist.sample()
    k = sample * (levels - 1)
    assert torch.allclose(k, k.round(), atol=1e-2 * (levels > 256) + 1e-4) and sample.min() >= 0 and sample.max() <= 1
    if levels == 65536:
        assert len(sample.unique()) > 1000  # not rounded to 8 bits
    assert dist.mean[0].item() == pytest.approx(sample.mean().item(), abs=0.01)


@pytest.mark.parametrize("cdf", [torch.sigmoid, torch.special.ndtr])
def test_sixteen_bit_binned_mean_matches_the_sum_over_all_bins(cdf):
    """Beyond 256 levels the mean is a closed-form integral: against the exact sum over the 65535 bin edges."""
    from vae_lab.distributions.discretized import binned_mean

    loc = torch.tensor([-0.2, 0.1, 0.5, 0.93, 1.3], dtype=torch.float64)
    scale = torch.tensor([0.05, 0.2, 0.01, 0.1, 0.3], dtype=torch.float64)
    edges = (torch.arange(1, 65536, dtype=torch.float64) - 0.5) / 65535
    exact = cdf((loc - edges[:, None]) / scale).sum(0) / 65535
    assert torch.allclose(binned_mean(loc, scale, cdf, levels=65536), exact, atol=1e-7)


def test_a_discretised_likelihood_refuses_continuous_data_in_one_line():
    from vae_lab.model import VAE

    with pytest.raises(ConfigError, match="gaussian_learned") as caught:
        VAE(in_shape=(1, 4, 4), latent_dim=2, likelihood="discretized_logistic", likelihood_levels=None)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------- pixels as they reach the model


def test_eight_bit_pixels_are_bit_identical_to_k_over_255_and_dequantised_k_plus_u_over_256():
    x = torch.randint(0, 256, (10, 1, 3, 3), dtype=torch.uint8)
    plain = torch.cat([b for b, _ in InMemoryBatches(x, None, 4, False, 0)])
    assert torch.equal(plain, x.float() / 255)
    batches = InMemoryBatches(x, None, 4, False, 7, dequantize="uniform")
    served = [b for b, _ in batches]
    g = torch.Generator()
    for b, got in enumerate(served):  # the reference: today's (k + u) / 256 with the same seeded noise
        g.manual_seed(stream_seed(7, "dequantize", -1, 0, b))
        chunk = x[b * 4 : (b + 1) * 4].float()
        assert torch.equal(got, (chunk + torch.rand(chunk.shape, generator=g)) / 256)


def test_sixteen_bit_levels_reach_the_model_as_k_over_65535_never_rounded_to_8_bits():
    k = torch.arange(0, 65536, 257, dtype=torch.int32)[:250].view(10, 1, 5, 5)
    k[0, 0, 0, :3] = torch.tensor([1, 2, 3], dtype=torch.int32)  # neighbouring 16-bit levels stay apart
    dm = _datamodule(_raw(k, 65536))
    assert dm.spec.levels == 65536 and not dm.spec.binary and "65536 levels" in dm.describe()
    got = torch.cat([b for b, _ in dm.train_dataloader()] + [b for b, _ in dm.val_dataloader()])
    assert got.dtype == torch.float32
    levels = torch.sort((got * 65535).round().int().flatten()).values
    assert torch.equal(levels, torch.sort(k.flatten()).values)
    assert torch.allclose(got * 65535, (got * 65535).round(), atol=5e-3)


def test_float_data_reach_the_model_as_stored():
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))  # ~all distinct: no grid
    dm = _datamodule(_raw(x, None))
    assert dm.spec.levels is None and "continuous" in dm.describe()
    served = torch.cat([b for b, _ in dm.train_dataloader()] + [b for b, _ in dm.val_dataloader()])
    assert torch.equal(torch.sort(served.flatten()).values, torch.sort(x.flatten()).values)


@pytest.mark.parametrize("levels", [16, 65536])
def test_uniform_dequantisation_uses_the_datas_levels(levels):
    k = torch.randint(0, levels, (8, 1, 4, 4), dtype=torch.int32 if levels > 256 else torch.uint8)
    batches = InMemoryBatches(k, None, 8, False, 0, dequantize="uniform", levels=levels)
    y = next(iter(batches))[0].double()
    assert torch.equal(torch.floor(y * levels), k.double())  # level k owns [k, k + 1) / L


def test_dequantising_continuous_data_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="continuous") as caught:
        _datamodule(_raw(torch.rand(8, 1, 2, 2), None), dequantize="uniform")
    assert "\n" not in str(caught.value) and "dataset.dequantize=none" in str(caught.value)


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
@pytest.mark.parametrize("levels", [65536, None])
def test_binarisation_works_on_every_storage(binarize, levels):
    x = torch.full((40, 1, 4, 4), 0.25) if levels is None else torch.full((40, 1, 4, 4), 16383, dtype=torch.int32)
    dm = _datamodule(_raw(x, levels), binarize=binarize)
    assert dm.spec.binary
    served = torch.cat([b for b, _ in dm.train_dataloader()])
    assert set(served.unique().tolist()) == {0.0, 1.0}
    assert served.mean().item() == pytest.approx(0.25, abs=0.06)


@pytest.mark.parametrize("levels, top", [(256, 255), (65536, 65535), (None, 1.0)])
def test_binary_data_are_detected_in_any_storage(levels, top):
    dtype = {256: torch.uint8, 65536: torch.int32, None: torch.float32}[levels]
    x = (torch.rand(8, 1, 3, 3, generator=torch.Generator().manual_seed(0)) < 0.5).to(dtype) * top
    assert _datamodule(_raw(x.to(dtype), levels)).spec.binary


# ---------------------------------------------------------------- likelihood by data


def test_auto_picks_a_normalised_likelihood_for_every_kind_of_data():
    mixture = "discretized_logistic_mixture"
    cases = {(True, 256, "none"): "bernoulli", (True, None, "none"): "bernoulli", (False, 256, "none"): mixture,
             (False, 65536, "none"): mixture, (False, None, "none"): "gaussian_learned",
             (False, 65536, "uniform"): "gaussian_learned"}
    for (binary, levels, dequantize), expected in cases.items():
        name, reason = auto_likelihood(binary, levels, dequantize)
        assert name == expected and name in LIKELIHOODS and reason
        assert likelihood_status(name, binary, dequantize, levels).normalised, (binary, levels, dequantize)


def test_status_counts_the_datas_levels():
    status = likelihood_status("gaussian_learned", False, "uniform", levels=65536)
    assert status.normalised and status.log_bin_width == pytest.approx(-math.log(65536)) and "65536" in status.note
    assert "65536 levels of 16-bit" in likelihood_status("discretized_logistic", False, levels=65536).note
    assert likelihood_status("gaussian_learned", False, levels=None).normalised  # a density of continuous data
    assert not likelihood_status("gaussian", False, levels=65536).normalised  # a density at the levels
    bernoulli = likelihood_status("bernoulli", False, levels=None)
    assert not bernoulli.normalised and "cross-entropy" in bernoulli.note


def test_auto_is_a_valid_choice_in_a_run_config_but_not_in_a_saved_model():
    from vae_lab.artifact import check_config
    from vae_lab.config import validate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["dataset=array_file", "dataset.options.path=x.npy"])
    assert cfg.model.likelihood == "auto"
    validate(cfg)
    with pytest.raises(Exception, match="likelihood"):
        check_config({"in_shape": [1, 4, 4], "likelihood": "auto"}, "config.json")


def test_a_config_json_without_levels_is_an_eight_bit_model(tmp_path):
    from vae_lab import publish
    from vae_lab.loading import load_artifact
    from vae_lab.model import VAE

    model = VAE([1, 4, 4], latent_dim=2, net={"hidden_dims": [8]}, likelihood="discretized_logistic").eval()
    publish.save_artifact(tmp_path / "artifact", model)
    path = tmp_path / "artifact" / "config.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "likelihood_levels"}))
    loaded = load_artifact(tmp_path / "artifact")
    assert loaded.likelihood_levels == 256 and loaded.decode(torch.zeros(1, 2)).base_dist.levels == 256
