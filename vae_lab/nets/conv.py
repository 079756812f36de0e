"""Small strided-conv encoder and transposed-conv decoder (seed: the Fashion-MNIST conv VAE)."""

from collections.abc import Sequence

from torch import nn

from vae_lab.nets.shapes import check_widths, plan_convs


def build_conv(
    in_shape: tuple[int, int, int],
    latent_dim: int,
    out_channels: int,
    cond_dim: int,
    *,
    channels: Sequence[int] = (32, 64, 128),
) -> tuple[nn.Module, int, nn.Module]:
    """(encoder body, its feature width, decoder body): 3x3 stride-2 convs, mirrored by transposed convs."""
    channels = check_widths("channels", channels)
    image_channels, height, width = in_shape
    plans = plan_convs((height, width), len(channels), kernel_size=3)
    h, w = plans[-1].out_size
    flat_dim = channels[-1] * h * w

    encoder_layers = []
    for plan, ch_in, ch_out in zip(plans, [image_channels, *channels], channels):
        encoder_layers += [plan.conv(ch_in, ch_out), nn.ReLU()]
    encoder = nn.Sequential(*encoder_layers, nn.Flatten())  # (B, C, H, W) -> (B, C_last * h * w)

    # Mirror each conv in reverse; the last transposed conv lands on channels[0] // 2 (seed: 32 -> 16),
    # and a 3x3 conv maps those to the K raw likelihood parameters.
    mirrored = [*reversed(channels), max(1, channels[0] // 2)]
    decoder_layers = [
        nn.Linear(latent_dim + cond_dim, flat_dim),
        nn.ReLU(),
        nn.Unflatten(1, (channels[-1], h, w)),  # (N, C_last, h, w)
    ]
    for plan, ch_in, ch_out in zip(reversed(plans), mirrored[:-1], mirrored[1:]):
        decoder_layers += [plan.transposed(ch_in, ch_out), nn.ReLU()]
    decoder_layers.append(nn.Conv2d(mirrored[-1], out_channels, kernel_size=3, padding=1))  # (N, K, H, W)
    return encoder, flat_dim, nn.Sequential(*decoder_layers)
