"""Pre-activation residual encoder and decoder, one downsampling conv per stage."""

import math
from collections.abc import Sequence

from torch import Tensor, nn

from vae_lab.errors import ConfigError, choices_error
from vae_lab.nets.shapes import check_widths, plan_convs


def _group_norm(num_channels: int) -> nn.Module:
    # gcd keeps the group count a divisor of any channel width.
    return nn.GroupNorm(math.gcd(8, num_channels), num_channels)


NORMS = {"group": _group_norm, "batch": nn.BatchNorm2d}


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))): two 3x3 convs with an identity skip (He et al. 2016b)."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.branch = nn.Sequential(
            NORMS[norm](channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            NORMS[norm](channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)  # (B, C, H, W)


def build_resnet(
    in_shape: tuple[int, int, int],
    latent_dim: int,
    out_channels: int,
    cond_dim: int,
    *,
    channels: Sequence[int] = (32, 64, 128),
    blocks_per_stage: int = 1,
    norm: str = "group",
) -> tuple[nn.Module, int, nn.Module]:
    """(encoder body, its feature width, decoder body); the decoder upsamples to the encoder's exact sizes."""
    channels = check_widths("channels", channels)
    if blocks_per_stage < 0:
        raise ConfigError(f"blocks_per_stage={blocks_per_stage!r} must be >= 0")
    if norm not in NORMS:
        raise choices_error("norm", norm, NORMS)
    image_channels, height, width = in_shape
    plans = plan_convs((height, width), len(channels), kernel_size=3)
    h, w = plans[-1].out_size
    flat_dim = channels[-1] * h * w

    def blocks(ch: int) -> list[nn.Module]:
        return [ResidualBlock(ch, norm) for _ in range(blocks_per_stage)]

    encoder_layers = []
    for plan, ch_in, ch_out in zip(plans, [image_channels, *channels], channels):
        encoder_layers += [plan.conv(ch_in, ch_out), *blocks(ch_out)]
    # Pre-activation blocks leave the residual stream un-normalised, so normalise once before flattening.
    encoder = nn.Sequential(*encoder_layers, NORMS[norm](channels[-1]), nn.SiLU(), nn.Flatten())

    decoder_layers = [
        nn.Linear(latent_dim + cond_dim, flat_dim),
        nn.Unflatten(1, (channels[-1], h, w)),  # (N, C_last, h, w)
    ]
    # Each stage in reverse: residual blocks, then nearest-upsample to the encoder's exact input size
    # for that stage (no checkerboard artefacts) and a 3x3 conv to the previous stage's width.
    mirrored = [*reversed(channels), channels[0]]
    for plan, ch_in, ch_out in zip(reversed(plans), mirrored[:-1], mirrored[1:]):
        decoder_layers += [
            *blocks(ch_in),
            nn.Upsample(size=plan.in_size, mode="nearest"),
            nn.Conv2d(ch_in, ch_out, 3, padding=1),
        ]
    decoder_layers += [
        NORMS[norm](channels[0]),
        nn.SiLU(),
        nn.Conv2d(channels[0], out_channels, 3, padding=1),  # (N, K, H, W)
    ]
    return encoder, flat_dim, nn.Sequential(*decoder_layers)  # decoder: (N, K, H, W)
