"""A gated PixelCNN over a grid of discrete codes (van den Oord et al. 2016, "Conditional Image Generation with
PixelCNN Decoders"): codes (B, h, w) -> logits (B, K, h, w), where position (i, j) sees only the codes before it in
raster order. Vertical and horizontal stacks (no blind spot); causality by padding and shifting, not weight masks.
Class-conditional through a per-layer bias from the one-hot label (their Eq. 4)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _gate(h: Tensor) -> Tensor:
    """tanh(a) * sigmoid(b) for h = [a | b] along channels (Eq. 2)."""
    a, b = h.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def _shift_down(x: Tensor) -> Tensor:
    """Row i gets row i - 1 (zeros in row 0)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def _shift_right(x: Tensor) -> Tensor:
    """Column j gets column j - 1 (zeros in column 0)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class GatedLayer(nn.Module):
    """One gated layer. Vertical stack: a (k//2 + 1) x k conv over rows i - k//2 .. i (so v[i] depends on input rows
    <= i). Horizontal stack: a 1 x (k//2 + 1) conv over columns j - k//2 .. j of its own row, plus the vertical
    stack shifted down one row (rows < i only). The first layer shifts its horizontal input right (`first`), so no
    output sees its own position; later layers may, as their inputs at (i, j) already exclude code (i, j)."""

    def __init__(self, channels: int, kernel: int, cond_dim: int, first: bool):
        super().__init__()
        self.k, self.first = kernel // 2, first
        self.vertical = nn.Conv2d(channels, 2 * channels, (self.k + 1, 2 * self.k + 1))
        self.horizontal = nn.Conv2d(channels, 2 * channels, (1, self.k + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = nn.Linear(cond_dim, 2 * channels, bias=False) if cond_dim else None

    def forward(self, v: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        k = self.k
        v_pre = self.vertical(F.pad(v, (k, k, k, 0)))  # (B, 2C, h, w): rows i-k..i, columns j-k..j+k
        h_in = _shift_right(h) if self.first else h
        h_pre = self.horizontal(F.pad(h_in, (k, 0, 0, 0))) + self.v_to_h(_shift_down(v_pre))
        if self.cond is not None:
            bias = self.cond(c)[:, :, None, None]  # (B, 2C, 1, 1)
            v_pre, h_pre = v_pre + bias, h_pre + bias
        h_out = self.h_out(_gate(h_pre))
        return _gate(v_pre), h_out if self.first else h + h_out  # residual on the horizontal stack after layer 1


class GatedPixelCNN(nn.Module):
    """Codes (B, h, w) in [0, K) and an optional one-hot label (B, cond_dim) -> logits (B, K, h, w) of
    p(code_ij | codes before (i, j) in raster order, label)."""

    def __init__(self, num_codes: int, channels: int = 64, layers: int = 8, kernel: int = 5, cond_dim: int = 0):
        super().__init__()
        self.num_codes, self.cond_dim = num_codes, cond_dim
        self.embedding = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, cond_dim, first=(i == 0)) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 4 * channels, 1), nn.ReLU(),
                                  nn.Conv2d(4 * channels, num_codes, 1))

    def forward(self, codes: Tensor, c: Tensor | None = None) -> Tensor:
        x = self.embedding(codes).permute(0, 3, 1, 2)  # (B, C, h, w)
        # v[i] depends on code rows <= i; the horizontal stack reads it shifted down a row (rows < i)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h, c)
        return self.head(h)  # (B, K, h, w)
