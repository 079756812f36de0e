"""MADE (Germain et al. 2015): an autoregressive MLP, the network inside each step of an IAF posterior."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        # not persistent: the mask follows from the sizes and the order, so artifacts hold weights only
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def hidden_degrees(dim: int, width: int) -> Tensor:
    """Degrees 1..dim-1 cycled over `width` hidden units (Germain et al. 2015, Sec. 4: the deterministic choice).

    With dim == 1 no output may see any input, so every hidden unit gets degree 0 (context only).
    """
    if dim == 1:
        return torch.zeros(width, dtype=torch.long)
    return torch.arange(width) % (dim - 1) + 1


class MADE(nn.Module):
    """(z (..., D), context (..., C) or None) -> (..., 2D) = [m | s]; outputs i see z_j only if order[j] < order[i].

    Args:
        order: a permutation of 0..D-1, the position of each dimension in the autoregressive order (the IAF
            reverses it between steps).
        context_dim: width of the context h from the encoder, added to every first-layer hidden unit (unmasked:
            h depends on x, not on z; Kingma et al. 2016, Sec. 4).
    """

    def __init__(self, dim: int, hidden_dim: int, hidden_layers: int, context_dim: int, order: Sequence[int]):
        super().__init__()
        in_degrees = torch.as_tensor(list(order), dtype=torch.long) + 1  # (D,) in 1..D
        if sorted(int(i) for i in order) != list(range(dim)):  # on the list: a `meta` build has no tensor data
            raise ValueError(f"order must be a permutation of 0..{dim - 1}, got {list(order)}")
        degrees = [in_degrees] + [hidden_degrees(dim, hidden_dim) for _ in range(hidden_layers)]
        # hidden unit k may see unit j of the layer below if deg_k >= deg_j (Eq. 13 of Germain et al. 2015)
        self.hidden = nn.ModuleList(
            MaskedLinear(len(lower), len(upper), (upper[:, None] >= lower[None, :]))
            for lower, upper in zip(degrees[:-1], degrees[1:])
        )
        self.context = nn.Linear(context_dim, hidden_dim, bias=False) if context_dim else None
        # output i (for m_i and s_i) sees hidden units of degree < deg_i: strictly autoregressive
        out_degrees = in_degrees.repeat(2)  # (2D,)
        self.out = MaskedLinear(hidden_dim, 2 * dim, out_degrees[:, None] > degrees[-1][None, :])
        # m = s = 0 at the start: the IAF step is then the identity (see distributions/iaf.py)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.hidden[0](z)  # (..., H)
        if self.context is not None:
            h = h + self.context(context)  # context (B, C) broadcasts over leading sample dims of z (K, B, D)
        h = F.elu(h)
        for layer in self.hidden[1:]:
            h = F.elu(layer(h))
        return self.out(h)  # (..., 2D)
