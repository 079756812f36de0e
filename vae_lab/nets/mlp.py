"""Fully connected encoder and decoder (seed: the MNIST MLP VAE, 784-400-100-z)."""

from collections.abc import Sequence

from torch import nn

from vae_lab.errors import choices_error
from vae_lab.nets.shapes import check_widths

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def _stack(widths: list[int], activation: type[nn.Module]) -> list[nn.Module]:
    """Linear + activation between each pair of consecutive widths."""
    layers = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), activation()]
    return layers


def build_mlp(
    in_shape: tuple[int, int, int],
    latent_dim: int,
    out_channels: int,
    cond_dim: int,
    *,
    hidden_dims: Sequence[int] = (400, 100),
    activation: str = "relu",
) -> tuple[nn.Module, int, nn.Module]:
    """(encoder body, its feature width, decoder body) of an MLP; the decoder mirrors `hidden_dims`."""
    hidden_dims = check_widths("hidden_dims", hidden_dims, allow_empty=True)
    if activation not in ACTIVATIONS:
        raise choices_error("activation", activation, ACTIVATIONS)
    act = ACTIVATIONS[activation]
    channels, height, width = in_shape
    in_dim = channels * height * width

    # (B, C, H, W) -> (B, hidden_dims[-1]); the wrapper appends c and adds the linear head.
    encoder = nn.Sequential(nn.Flatten(), *_stack([in_dim, *hidden_dims], act))
    feature_dim = hidden_dims[-1] if hidden_dims else in_dim

    # (N, D + cond_dim) -> (N, K, H, W); the last layer is linear: the likelihood applies its own link.
    widths = [latent_dim + cond_dim, *reversed(hidden_dims)]
    decoder = nn.Sequential(
        *_stack(widths, act),
        nn.Linear(widths[-1], out_channels * height * width),
        nn.Unflatten(1, (out_channels, height, width)),
    )
    return encoder, feature_dim, decoder
