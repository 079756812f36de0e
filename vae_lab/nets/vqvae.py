"""The VQ-VAE's encoder and decoder (van den Oord et al. 2017, Sec. 4.1): strided 4x4 convs down to a grid of code
vectors, residual 3x3/1x1 blocks, and the exact transposed mirror back to the image size."""

from collections.abc import Sequence

from torch import Tensor, nn

from vae_lab.errors import ConfigError
from vae_lab.nets.shapes import check_widths, plan_convs


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): the paper's residual block (ReLU, 3x3 conv, ReLU, 1x1 conv)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def grid_plans(in_shape: Sequence[int], downsample: int):
    """The stride-2 4x4 convs taking (H, W) to the code grid; ConfigError when the image is too small for them."""
    _, height, width = in_shape
    plans = plan_convs((height, width), downsample, kernel_size=4, stride=2, padding=1)
    if any(p.stride != (2, 2) for p in plans):
        fits = 0
        while fits < downsample and all(s == 2 for s in plans[fits].stride):
            fits += 1
        raise ConfigError(f"model.net.channels asks for {downsample} stride-2 stages, invalid for {height}x{width} "
                          f"images: the code grid does not fit (at most {fits} halvings: give fewer channels)")
    return plans


def build_vq_nets(in_shape: Sequence[int], code_dim: int, out_channels: int, *, channels: Sequence[int] = (64, 128),
                  residual_blocks: int = 2, residual_hidden: int = 32) -> tuple[nn.Module, nn.Module]:
    """(encoder: (B, C, H, W) -> (B, code_dim, h, w), decoder: (B, code_dim, h, w) -> (B, out_channels, H, W)).

    One stride-2 conv per entry of `channels` (the grid is the image halved len(channels) times: 28 -> 7 with
    two), then `residual_blocks` blocks at the last width and a 1x1 conv to code_dim; the decoder mirrors it.
    """
    channels = check_widths("model.net.channels", channels)
    if not isinstance(residual_blocks, int) or residual_blocks < 0:
        raise ConfigError(f"model.net.residual_blocks={residual_blocks!r} must be an int >= 0")
    plans = grid_plans(in_shape, len(channels))
    image_channels = in_shape[0]
    encoder = []
    for i, (plan, ch_in, ch_out) in enumerate(zip(plans, [image_channels, *channels], channels)):
        encoder += [plan.conv(ch_in, ch_out)] + ([nn.ReLU()] if i < len(plans) - 1 else [])
    encoder += [ResidualBlock(channels[-1], residual_hidden) for _ in range(residual_blocks)]
    encoder += [nn.ReLU(), nn.Conv2d(channels[-1], code_dim, 1)]

    decoder = [nn.Conv2d(code_dim, channels[-1], 3, padding=1)]
    decoder += [ResidualBlock(channels[-1], residual_hidden) for _ in range(residual_blocks)]
    decoder += [nn.ReLU()]
    mirrored = [*reversed(channels), channels[0]]
    for plan, ch_in, ch_out in zip(reversed(plans), mirrored[:-1], mirrored[1:]):
        decoder += [plan.transposed(ch_in, ch_out), nn.ReLU()]
    decoder.append(nn.Conv2d(channels[0], out_channels, 3, padding=1))  # raw likelihood parameters
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def grid_shape(in_shape: Sequence[int], downsample: int) -> tuple[int, int]:
    """(h, w) of the code grid."""
    return tuple(grid_plans(in_shape, downsample)[-1].out_size)
