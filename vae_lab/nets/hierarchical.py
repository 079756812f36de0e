"""The nets of a top-down hierarchical VAE (VDVAE, Child 2021; NVAE, Vahdat & Kautz 2020): weights only.

Geometry: the image's (H, W) halved `downsamples` times gives levels d = 0 (full size) .. D (coarsest). The bottom-up
encoder keeps its features at the `latent_resolutions` coarsest levels (the finer, latent-free levels have their
own cell count: at 28x28 a cell costs as much as four at 14x14); the top-down decoder starts from a learned
map at level D and, at each latent level, runs `groups_per_resolution` group blocks before upsampling. The model
(vae_lab.model.hierarchical) turns the blocks' outputs into Gaussians and samples; nothing here is random.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lab.errors import ConfigError


def level_sizes(size: tuple[int, int], downsamples: int) -> list[tuple[int, int]]:
    """(H, W) at levels 0..downsamples, each half the one before; one ConfigError line when halving is not exact."""
    height, width = size
    factor = 2 ** downsamples
    if height % factor or width % factor:
        fits = 0
        while height % (2 ** (fits + 1)) == 0 and width % (2 ** (fits + 1)) == 0:
            fits += 1
        raise ConfigError(f"model.downsamples={downsamples} does not fit {height}x{width} images ({height}x{width} / "
                          f"2^{downsamples} is not whole): use model.downsamples <= {fits}")
    return [(height >> d, width >> d) for d in range(downsamples + 1)]


class Cell(nn.Module):
    """VDVAE's bottleneck block: GELU -> 1x1 -> GELU -> 3x3 -> GELU -> 3x3 -> GELU -> 1x1, optionally residual.

    The last conv is scaled by `last_scale` at init (1/sqrt(number of residual cells) keeps the residual stream's
    variance from growing with depth, Child 2021 Sec. 4) or zeroed (`last_scale=0`: a head that starts at 0).
    """

    def __init__(self, in_channels: int, middle: int, out_channels: int, residual: bool, last_scale: float = 1.0):
        super().__init__()
        self.residual = residual
        self.convs = nn.ModuleList([
            nn.Conv2d(in_channels, middle, 1),
            nn.Conv2d(middle, middle, 3, padding=1),
            nn.Conv2d(middle, middle, 3, padding=1),
            nn.Conv2d(middle, out_channels, 1),
        ])
        with torch.no_grad():
            self.convs[-1].weight.mul_(last_scale)
            self.convs[-1].bias.mul_(last_scale)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for conv in self.convs:
            h = conv(F.gelu(h))
        return x + h if self.residual else h  # (N, C_out, H, W)


def _cells(channels: int, middle: int, count: int, last_scale: float) -> nn.Sequential:
    return nn.Sequential(*[Cell(channels, middle, channels, True, last_scale) for _ in range(count)])


def first_level(free_level_cells: int, latent_levels: list[int]) -> int:
    """The finest level the nets work at: 0 when latent-free levels have cells, else the finest latent level (the
    levels below it are crossed by space-to-depth: no wide maps at full size doing nothing)."""
    return 0 if free_level_cells > 0 else min(latent_levels)


class BottomUp(nn.Module):
    """x (B, C, H, W) [+ one-hot condition] -> {level d: features (B, channels, H_d, W_d)} at the latent levels."""

    def __init__(self, image_channels: int, channels: int, middle: int, cells: int, free_level_cells: int,
                 downsamples: int, latent_levels: list[int], cond_dim: int = 0):
        super().__init__()
        self.latent_levels = list(latent_levels)
        self.first = first_level(free_level_cells, self.latent_levels)
        counts = [cells if d in self.latent_levels else free_level_cells for d in range(self.first, downsamples + 1)]
        scale = 1 / math.sqrt(max(1, sum(counts)))
        # the first level's 2^d x 2^d pixel blocks as channels (pixel unshuffle), then a 3x3 conv
        self.stem = nn.Conv2d(image_channels * 4 ** self.first, channels, 3, padding=1)
        self.cond = nn.Linear(cond_dim, channels) if cond_dim else None
        self.levels = nn.ModuleList([_cells(channels, middle, n, scale) for n in counts])

    def forward(self, x: Tensor, c: Tensor | None = None) -> dict[int, Tensor]:
        h = self.stem(F.pixel_unshuffle(x, 2 ** self.first))  # (B, channels, H_first, W_first)
        if self.cond is not None:
            h = h + self.cond(c.to(h.dtype))[:, :, None, None]
        features = {}
        for d, cells in enumerate(self.levels, start=self.first):
            h = cells(h)
            if d in self.latent_levels:
                features[d] = h
            if d + 1 < self.first + len(self.levels):
                h = F.avg_pool2d(h, 2)  # (B, channels, H_d / 2, W_d / 2)
        return features


class GroupBlock(nn.Module):
    """The weights of one latent group: prior head, posterior head, z projection and the cells after it.

    prior(h) -> [p loc | p raw scale | h update] (2 Z + channels); posterior(h, features) -> [q loc | q raw scale]
    (2 Z) from the decoder state and the encoder's features (VDVAE's q(z_l | x, z_<l)); merge(h, z) -> next h.
    """

    def __init__(self, channels: int, middle: int, latent_channels: int, cells: int, last_scale: float):
        super().__init__()
        self.latent_channels = latent_channels
        # zero-initialised: the prior starts at its base (N(0, 1) once the model offsets the scale), h unchanged
        self.prior_head = Cell(channels, middle, 2 * latent_channels + channels, residual=False, last_scale=0.0)
        self.posterior_head = Cell(2 * channels, middle, 2 * latent_channels, residual=False)
        self.z_proj = nn.Conv2d(latent_channels, channels, 1)
        with torch.no_grad():
            self.z_proj.weight.mul_(last_scale)
        self.cells = _cells(channels, middle, cells, last_scale)

    def prior(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(p params (N, 2 Z, H, W), h + the prior head's update)."""
        out = self.prior_head(h)
        params, update = out.split([2 * self.latent_channels, out.shape[1] - 2 * self.latent_channels], dim=1)
        return params, h + update

    def posterior(self, h: Tensor, features: Tensor) -> Tensor:
        """q params (N, 2 Z, H, W) from [h | encoder features]."""
        return self.posterior_head(torch.cat([h, features.to(h.dtype)], dim=1))

    def merge(self, h: Tensor, z: Tensor) -> Tensor:
        """The decoder state after z: cells(h + proj(z)) (N, channels, H, W)."""
        return self.cells(h + self.z_proj(z.to(h.dtype)))  # autocast still picks the conv's own dtype


class TopDown(nn.Module):
    """The decoder's weights: the top map, one GroupBlock per latent group, cells at latent-free levels, the output.

    `start(n, c)` gives the top state; the model walks `plan` (level, blocks) from coarse to the first level, calling
    `between` to upsample after each but the last, and `finish(h)` for raw likelihood parameters (N, out_channels,
    H, W).
    """

    def __init__(self, sizes: list[tuple[int, int]], channels: int, middle: int, cells: int, free_level_cells: int,
                 latent_levels: list[int], groups_per_resolution: int, latent_channels: int, out_channels: int,
                 cond_dim: int = 0):
        super().__init__()
        self.sizes = sizes
        self.latent_levels = list(latent_levels)
        top = len(sizes) - 1
        num_groups = groups_per_resolution * len(self.latent_levels)
        # residual branches adding to the stream: each group's z projection and cells, the free levels' cells
        self.first = first_level(free_level_cells, self.latent_levels)
        free_levels = [d for d in range(self.first, top + 1) if d not in self.latent_levels]
        scale = 1 / math.sqrt(max(1, num_groups * (1 + cells) + free_level_cells * len(free_levels)))
        self.top = nn.Parameter(torch.zeros(channels, *sizes[top]))  # (channels, H_D, W_D)
        self.cond = nn.Linear(cond_dim, channels) if cond_dim else None
        self.groups = nn.ModuleList([GroupBlock(channels, middle, latent_channels, cells, scale) for _ in range(num_groups)])
        self.plain = nn.ModuleDict({str(d): _cells(channels, middle, free_level_cells, scale) for d in free_levels})
        # a 3x3 conv to the first level's 2^d x 2^d pixel blocks, then pixel shuffle to the full size
        self.out = nn.Conv2d(channels, out_channels * 4 ** self.first, 3, padding=1)
        self.groups_per_resolution = groups_per_resolution

    def start(self, n: int, c: Tensor | None = None) -> Tensor:
        h = self.top.expand(n, *self.top.shape)  # (N, channels, H_D, W_D)
        if self.cond is not None:
            h = h + self.cond(c.to(h.dtype))[:, :, None, None]
        return h

    def plan(self) -> list[tuple[int, list[GroupBlock]]]:
        """(level d, its group blocks: [] at a latent-free level) from the coarsest level to the finest."""
        out, g = [], 0
        for d in reversed(range(self.first, len(self.sizes))):
            if d in self.latent_levels:
                out.append((d, list(self.groups[g:g + self.groups_per_resolution])))
                g += self.groups_per_resolution
            else:
                out.append((d, []))
        return out

    def level(self, d: int, h: Tensor) -> Tensor:
        """The cells of a latent-free level d."""
        return self.plain[str(d)](h)

    def between(self, h: Tensor) -> Tensor:
        """Nearest upsampling to the next finer level (no checkerboard artefacts)."""
        return F.interpolate(h, scale_factor=2.0, mode="nearest")

    def finish(self, h: Tensor) -> Tensor:
        return F.pixel_shuffle(self.out(F.gelu(h)), 2 ** self.first)  # (N, out_channels, H, W)
