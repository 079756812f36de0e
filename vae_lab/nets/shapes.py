"""Shape arithmetic shared by the nets: per-layer conv geometry and its exact transposed mirror."""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from vae_lab.errors import ConfigError


@dataclass(frozen=True)
class ConvGeometry:
    """One conv layer's per-axis stride and padding, its sizes, and the output_padding its mirror needs."""

    kernel_size: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    output_padding: tuple[int, int]
    in_size: tuple[int, int]
    out_size: tuple[int, int]

    def conv(self, in_channels: int, out_channels: int) -> nn.Conv2d:
        """The conv that maps in_size to out_size."""
        return nn.Conv2d(in_channels, out_channels, self.kernel_size, self.stride, self.padding)

    def transposed(self, in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
        """The transposed conv that maps out_size back to exactly in_size."""
        return nn.ConvTranspose2d(
            in_channels, out_channels, self.kernel_size, self.stride, self.padding, self.output_padding
        )


def _plan_axis(size: int, kernel_size: int, stride: int, padding: int) -> tuple[int, int, int, int]:
    """(stride, padding, out_size, output_padding) of one conv along one axis."""
    span = size + 2 * padding - kernel_size
    if span < 0:
        # Not even one output pixel fits: keep this axis at full resolution (stride 1) and pad by k // 2,
        # which keeps the map at least `size` wide (even kernels grow it by one pixel; the mirror undoes it).
        stride, padding = 1, kernel_size // 2
        span = size + 2 * padding - kernel_size
    # A conv maps n to floor(span / s) + 1; its transpose maps that back to n - span % s, so the
    # transposed conv needs output_padding = span % s (always < s, as PyTorch requires).
    return stride, padding, span // stride + 1, span % stride


def plan_convs(
    size: tuple[int, int], num_layers: int, kernel_size: int, stride: int = 2, padding: int = 1
) -> list[ConvGeometry]:
    """Geometry of a stack of `num_layers` convs applied to an (H, W) map, derived from the sizes alone."""
    plans = []
    for _ in range(num_layers):
        axes = [_plan_axis(n, kernel_size, stride, padding) for n in size]  # [(s, p, out, op)] for H, W
        s, p, out, op = (tuple(values) for values in zip(*axes))
        plans.append(ConvGeometry(kernel_size, s, p, op, tuple(size), out))
        size = out
    return plans


def check_widths(key: str, widths: Sequence[int], allow_empty: bool = False) -> list[int]:
    """The layer widths as a list of positive ints, or a ConfigError naming the key."""
    widths = list(widths)
    if (not widths and not allow_empty) or not all(isinstance(w, int) and w >= 1 for w in widths):
        need = "positive ints" if allow_empty else "a non-empty list of positive ints"
        raise ConfigError(f"{key}={widths!r} must be {need}")
    return widths
