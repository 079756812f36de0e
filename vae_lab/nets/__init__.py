"""The networks inside a VAE: images to [loc | raw_scale], codes to raw likelihood parameters."""

import inspect
import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vae_lab.errors import ConfigError, DataError, choices_error
from vae_lab.nets.conv import build_conv
from vae_lab.nets.conv_deep import build_conv_deep
from vae_lab.nets.mlp import build_mlp
from vae_lab.nets.resnet import build_resnet

# Each builder returns (encoder body: x -> (B, F), F, decoder body: (N, D + cond_dim) -> (N, K, H, W)).
NETS: dict[str, Callable[..., tuple[nn.Module, int, nn.Module]]] = {
    "mlp": build_mlp,
    "conv": build_conv,
    "conv_deep": build_conv_deep,
    "resnet": build_resnet,
}

__all__ = ["NETS", "Decoder", "Encoder", "build_nets"]


def _append_condition(h: Tensor, c: Tensor | None, cond_dim: int) -> Tensor:
    """(B, F) features with the (B, cond_dim) condition appended; c is ignored when cond_dim == 0."""
    if cond_dim == 0:
        return h
    if c is None or tuple(c.shape) != (h.shape[0], cond_dim):
        got = None if c is None else tuple(c.shape)
        raise ValueError(f"expected a condition of shape ({h.shape[0]}, {cond_dim}), got {got}")
    return torch.cat([h, c.to(h.dtype)], dim=-1)  # (B, F + cond_dim)


class Encoder(nn.Module):
    """x (B, C, H, W) and condition -> (B, 2 * latent_dim + context_dim) = [loc | raw_scale | context]."""

    def __init__(self, body: nn.Module, feature_dim: int, latent_dim: int, cond_dim: int, context_dim: int = 0):
        super().__init__()
        self.body = body
        self.latent_dim = latent_dim
        self.cond_dim = cond_dim
        self.head = nn.Linear(feature_dim + cond_dim, 2 * latent_dim + context_dim)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        h = self.body(x)  # (B, F)
        return self.head(_append_condition(h, c, self.cond_dim))  # (B, 2 * D + context_dim)


class Decoder(nn.Module):
    """z (N, latent_dim) and condition -> (N, out_channels, H, W) raw parameters, no output activation."""

    def __init__(self, body: nn.Module, latent_dim: int, cond_dim: int):
        super().__init__()
        self.body = body
        self.latent_dim = latent_dim
        self.cond_dim = cond_dim

    def forward(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        return self.body(_append_condition(z, c, self.cond_dim))  # (N, K, H, W)


def _check_sizes(in_shape, latent_dim, out_channels, cond_dim) -> tuple[tuple[int, int, int], int, int, int]:
    """The sizes as plain ints, or a clear error for any size the nets cannot take."""
    in_shape = tuple(in_shape)
    if len(in_shape) != 3 or not all(isinstance(n, numbers.Integral) and n >= 1 for n in in_shape):
        raise DataError(f"images must have shape (C, H, W) with every size >= 1, got {in_shape}")
    dims = {"latent_dim": (latent_dim, 1), "out_channels": (out_channels, 1), "cond_dim": (cond_dim, 0)}
    for key, (value, low) in dims.items():
        if not isinstance(value, numbers.Integral) or value < low:
            raise ConfigError(f"{key}={value!r} must be an int >= {low}")
    return tuple(int(n) for n in in_shape), int(latent_dim), int(out_channels), int(cond_dim)


def build_nets(
    name: str,
    in_shape: tuple[int, int, int],
    latent_dim: int,
    out_channels: int,
    cond_dim: int = 0,
    context_dim: int = 0,
    **arch_kwargs,
) -> tuple[Encoder, Decoder]:
    """The (encoder, decoder) pair of architecture `name` for images of `in_shape`.

    `context_dim` widens the encoder's head by a context vector h for the posterior (IAF, Kingma et al. 2016).
    """
    if name not in NETS:
        raise choices_error("architecture", name, NETS)
    builder = NETS[name]
    params = inspect.signature(builder).parameters.values()
    accepted = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(arch_kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"architecture {name!r} does not accept {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    sizes = _check_sizes(in_shape, latent_dim, out_channels, cond_dim)
    encoder_body, feature_dim, decoder_body = builder(*sizes, **arch_kwargs)
    _, latent_dim, _, cond_dim = sizes
    encoder = Encoder(encoder_body, feature_dim, latent_dim, cond_dim, int(context_dim))
    return encoder, Decoder(decoder_body, latent_dim, cond_dim)
