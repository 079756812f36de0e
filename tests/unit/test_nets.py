"""Shapes, gradient flow, conditioning and config errors of every registered encoder/decoder pair."""

import pytest
import torch

from vae_lab.errors import ConfigError, DataError
from vae_lab.nets import NETS, build_nets
from vae_lab.nets.shapes import plan_convs

IN_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 48, 64)]
LATENT_DIM = 4


def _condition(batch: int, cond_dim: int, label: int = 0):
    """A one-hot (batch, cond_dim) condition, or None when unconditional."""
    return torch.nn.functional.one_hot(torch.full((batch,), label), cond_dim).float() if cond_dim else None


@pytest.mark.parametrize("cond_dim", [0, 10])
@pytest.mark.parametrize("in_shape", IN_SHAPES, ids=str)
@pytest.mark.parametrize("name", sorted(NETS))
def test_shapes_and_gradients(name, in_shape, cond_dim):
    torch.manual_seed(0)
    for out_channels in (in_shape[0], 2 * in_shape[0]):
        encoder, decoder = build_nets(name, in_shape, LATENT_DIM, out_channels, cond_dim=cond_dim)
        x = torch.randn(2, *in_shape)
        c = _condition(2, cond_dim)
        h = encoder(x, c)
        assert h.shape == (2, 2 * LATENT_DIM)
        out = decoder(h[:, :LATENT_DIM], c)
        assert out.shape == (2, out_channels, *in_shape[1:])

        out.sum().backward()
        for module in (encoder, decoder):
            missing = [n for n, p in module.named_parameters() if p.grad is None]
            assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("in_shape", [(1, 1, 1), (2, 7, 5), (1, 2, 100)], ids=str)
@pytest.mark.parametrize("name", sorted(NETS))
def test_odd_sizes_round_trip_exactly(name, in_shape):
    encoder, decoder = build_nets(name, in_shape, LATENT_DIM, 3)
    out = decoder(encoder(torch.randn(2, *in_shape))[:, :LATENT_DIM])
    assert out.shape == (2, 3, *in_shape[1:])


def test_plan_keeps_tiny_maps_at_full_resolution():
    # 8 -> 4 -> 2 -> 1 with a 4x4 kernel; a fourth stride-2 layer would leave no pixel, so it uses stride 1.
    plans = plan_convs((8, 8), num_layers=4, kernel_size=4)
    assert [p.stride for p in plans] == [(2, 2)] * 3 + [(1, 1)]
    assert [p.out_size for p in plans][:3] == [(4, 4), (2, 2), (1, 1)]


@pytest.mark.parametrize("name", sorted(NETS))
def test_condition_changes_outputs(name):
    torch.manual_seed(0)
    encoder, decoder = build_nets(name, (1, 8, 8), LATENT_DIM, 1, cond_dim=10)
    encoder.eval()
    decoder.eval()
    z, x = torch.randn(2, LATENT_DIM), torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(decoder(z, _condition(2, 10, 0)), decoder(z, _condition(2, 10, 3)))
        assert not torch.allclose(encoder(x, _condition(2, 10, 0)), encoder(x, _condition(2, 10, 3)))


def test_unknown_architecture_lists_choices():
    with pytest.raises(ConfigError) as err:
        build_nets("transformer", (1, 8, 8), LATENT_DIM, 1)
    assert "transformer" in str(err.value)
    assert all(name in str(err.value) for name in NETS)


def test_unknown_kwarg_names_key_and_accepted_ones():
    with pytest.raises(ConfigError) as err:
        build_nets("conv", (1, 8, 8), LATENT_DIM, 1, chanels=[8])
    assert "chanels" in str(err.value)
    assert "accepted: channels" in str(err.value)


def test_bad_values_raise_clear_errors():
    with pytest.raises(ConfigError, match="activation"):
        build_nets("mlp", (1, 8, 8), LATENT_DIM, 1, activation="swish")
    with pytest.raises(ConfigError, match="channels"):
        build_nets("conv_deep", (1, 8, 8), LATENT_DIM, 1, channels=[])
    with pytest.raises(DataError, match="shape"):
        build_nets("conv", (1, 0, 8), LATENT_DIM, 1)


def test_seed_mlp_parameter_count():
    encoder, decoder = build_nets("mlp", (1, 28, 28), latent_dim=20, out_channels=1)

    def linear(n_in, n_out):
        return n_in * n_out + n_out

    expected_encoder = linear(784, 400) + linear(400, 100) + linear(100, 2 * 20)
    expected_decoder = linear(20, 100) + linear(100, 400) + linear(400, 784)
    assert sum(p.numel() for p in encoder.parameters()) == expected_encoder
    assert sum(p.numel() for p in decoder.parameters()) == expected_decoder
