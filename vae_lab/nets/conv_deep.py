"""Deeper conv encoder/decoder with BatchNorm, LeakyReLU and dropout (seed: the CIFAR-10 advanced VAE)."""

from collections.abc import Sequence

from torch import nn

from vae_lab.errors import ConfigError
from vae_lab.nets.shapes import check_widths, plan_convs


def build_conv_deep(
    in_shape: tuple[int, int, int],
    latent_dim: int,
    out_channels: int,
    cond_dim: int,
    *,
    channels: Sequence[int] = (32, 64, 128, 256),
    fc_dim: int = 512,
    dropout: float = 0.2,
    negative_slope: float = 0.2,
    batch_norm: bool = True,
) -> tuple[nn.Module, int, nn.Module]:
    """(encoder body, its feature width, decoder body): 4x4 stride-2 conv blocks, then a dense layer."""
    channels = check_widths("channels", channels)
    if fc_dim < 1:
        raise ConfigError(f"fc_dim={fc_dim!r} must be a positive int")
    image_channels, height, width = in_shape
    plans = plan_convs((height, width), len(channels), kernel_size=4)
    h, w = plans[-1].out_size
    flat_dim = channels[-1] * h * w

    def norm(num_channels: int) -> nn.Module:
        return nn.BatchNorm2d(num_channels) if batch_norm else nn.Identity()

    def act() -> nn.Module:
        return nn.LeakyReLU(negative_slope)

    encoder_layers = []
    for plan, ch_in, ch_out in zip(plans, [image_channels, *channels], channels):
        encoder_layers += [plan.conv(ch_in, ch_out), norm(ch_out), act(), nn.Dropout(dropout)]
    encoder = nn.Sequential(
        *encoder_layers,
        nn.Flatten(),  # (B, C_last * h * w)
        nn.Linear(flat_dim, fc_dim),
        act(),  # (B, fc_dim)
    )

    decoder_layers = [
        nn.Linear(latent_dim + cond_dim, fc_dim),
        act(),
        nn.Linear(fc_dim, flat_dim),
        act(),
        nn.Unflatten(1, (channels[-1], h, w)),  # (N, C_last, h, w)
    ]
    # Mirror each conv in reverse; the last one maps to the K raw likelihood parameters with no norm or
    # activation (the seed's Tanh is the likelihood's link, applied elsewhere).
    mirrored = [*reversed(channels), out_channels]
    for i, (plan, ch_in, ch_out) in enumerate(zip(reversed(plans), mirrored[:-1], mirrored[1:])):
        decoder_layers.append(plan.transposed(ch_in, ch_out))
        if i < len(plans) - 1:
            decoder_layers += [norm(ch_out), act()]
    return encoder, fc_dim, nn.Sequential(*decoder_layers)  # decoder: (N, K, H, W)
