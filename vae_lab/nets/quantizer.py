"""Quantisers of a spatial grid of D-dim vectors (B, D, H, W) to a finite set of codes: vector quantisation with a
codebook (van den Oord et al. 2017) and finite scalar quantisation (Mentzer et al. 2023). Weights and buffers only:
no likelihood, no loss weighting beyond the commitment / codebook terms that belong to the quantiser.

Why our own code and not vector-quantize-pytorch (docs/families.md): the library adds four dependencies (einops, einx,
loguru, torch-einops-utils), names its buffers after its own internals (a checkpoint or artifact would be tied to
its version), and was ~5x slower on the dev CPU at this size with the same nearest codes (a one-off measurement;
the numbers are in the VQ-VAE section of docs/families.md). What we need is ~150 lines.
"""

import math
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vae_lab.errors import ConfigError

CODEBOOKS = ("ema", "loss")  # how a vq codebook learns: moving averages (App. A.1) or the codebook loss (Eq. 3)
QUANTIZERS = ("vq", "fsq")


class Quantized(NamedTuple):
    """One pass of a quantiser over z_e (B, D, H, W)."""

    z_q: Tensor  # (B, D, H, W): the code vectors, with the straight-through gradient to z_e
    codes: Tensor  # (B, H, W) long: code indices in [0, K)
    aux_loss: Tensor  # (B,) per example: commitment (+ codebook) loss, 0 for FSQ
    commitment: Tensor  # (B,) ||z_e - sg(e)||^2 summed over the grid, unweighted
    restarts: int  # dead codes restarted in this pass (training only)


def _to_rows(z: Tensor) -> Tensor:
    """(B, D, H, W) -> (B*H*W, D)."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def _from_rows(rows: Tensor, like: Tensor) -> Tensor:
    """(B*H*W, D) -> (B, D, H, W) shaped like `like`."""
    b, d, h, w = like.shape
    return rows.reshape(b, h, w, d).permute(0, 3, 1, 2)


def _all_reduce(t: Tensor) -> Tensor:
    """Sum over DDP ranks (the EMA statistics of the whole global batch), a no-op in one process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


class VectorQuantizer(nn.Module):
    """Nearest-code lookup in a codebook of K vectors of size D, straight-through gradient (van den Oord et al. 2017,
    Eq. 3), the codebook learned by exponential moving averages (their App. A.1) or by the codebook loss.

    Training terms per example (sums over the grid): commitment * ||z_e - sg(e)||^2, plus ||sg(z_e) - e||^2 when
    ema=False. Dead codes: after each training pass, a code whose moving average of assignments per batch (`usage`,
    decay `decay`) is below `dead_threshold` is restarted at a random encoder output of this batch (Dhariwal et al.
    2020, Sec. 2.4's random restarts) with its usage set to the threshold: it survives the next pass only if it
    draws at least `dead_threshold` vectors there, else it is moved again. Usage starts at 0: the first training
    pass restarts every code that drew fewer than dead_threshold / (1 - decay) vectors, a data-dependent
    initialisation. dead_threshold=0: no restarts.
    """

    def __init__(self, num_codes: int, dim: int, ema: bool = True, decay: float = 0.99, commitment: float = 0.25,
                 dead_threshold: float = 1.0, eps: float = 1e-5):
        super().__init__()
        self.num_codes, self.dim, self.ema = num_codes, dim, ema
        self.decay, self.commitment, self.dead_threshold, self.eps = decay, commitment, dead_threshold, eps
        init = torch.empty(num_codes, dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)  # the paper's code
        if ema:
            self.register_buffer("codebook", init)  # (K, D) = ema_sum / smoothed count
            self.register_buffer("ema_sum", init.clone())  # (K, D) moving average of the assigned vectors' sums
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(num_codes))  # (K,) moving average of assignments per batch
        self.register_buffer("restart_count", torch.zeros((), dtype=torch.long))  # all restarts so far

    @property
    def size(self) -> int:
        return self.num_codes

    def nearest(self, rows: Tensor) -> Tensor:
        """argmin_k ||z - e_k||^2 for rows z (N, D): (N,) long. ||z||^2 is the same for every k, so it is left out."""
        e = self.codebook.float()
        distances = (e * e).sum(1) - 2.0 * rows.float() @ e.t()  # (N, K)
        return distances.argmin(1)

    def embed(self, codes: Tensor) -> Tensor:
        """Code indices (B, H, W) -> their vectors (B, D, H, W)."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    def forward(self, z_e: Tensor) -> Quantized:
        rows = _to_rows(z_e)  # (N, D), N = B*H*W
        codes = self.nearest(rows.detach())
        e = self.codebook[codes]  # (N, D)
        per_example = lambda sq: sq.reshape(z_e.shape[0], -1).sum(1)  # noqa: E731  (N, D) -> (B,)
        commitment = per_example((rows - e.detach()).pow(2))
        aux = self.commitment * commitment
        if not self.ema:
            aux = aux + per_example((rows.detach() - e).pow(2))  # the codebook loss (Eq. 3's second term)
        restarts = 0
        if self.training:
            restarts = self._update(rows.detach().float(), codes)
        z_q = rows + (e - rows).detach()  # straight-through: forward e, backward identity to z_e
        return Quantized(_from_rows(z_q, z_e), codes.reshape(z_e.shape[0], *z_e.shape[2:]), aux, commitment.detach(),
                         restarts)

    @torch.no_grad()
    def _update(self, rows: Tensor, codes: Tensor) -> int:
        """EMA codebook step (App. A.1, with Laplace smoothing of the counts as in Sonnet) and dead-code restarts."""
        counts = _all_reduce(torch.bincount(codes, minlength=self.num_codes).to(rows.dtype))  # (K,)
        self.usage.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            sums = _all_reduce(rows.new_zeros(self.num_codes, self.dim).index_add_(0, codes, rows))  # (K, D)
            self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.usage.sum()
            smoothed = (self.usage + self.eps) / (total + self.num_codes * self.eps) * total
            self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(1))
        return self._restart(rows)

    def _restart(self, rows: Tensor) -> int:
        dead = (self.usage < self.dead_threshold).nonzero().squeeze(1)  # (R,)
        if dead.numel() == 0:
            return 0
        # random encoder outputs of this batch (with replacement when the batch has fewer vectors than dead codes);
        # rank 0's choice is broadcast so every DDP rank keeps the same codebook
        pick = torch.randint(rows.shape[0], (dead.numel(),), device=rows.device)
        fresh = rows[pick]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(fresh, 0)
        self.codebook.data[dead] = fresh.to(self.codebook.dtype)
        if self.ema:
            self.ema_sum[dead] = fresh
        self.usage[dead] = self.dead_threshold
        self.restart_count += dead.numel()
        return int(dead.numel())


def fsq_levels(num_codes: int) -> list[int]:
    """FSQ's levels for exactly `num_codes` codes: its prime factors grouped into d = ceil(log_8 K) dimensions, each
    factor to the dimension with the fewest levels so far (64 -> [8, 8], 512 -> [8, 8, 8], 1000 -> [8, 5, 5, 5]:
    Mentzer et al. 2023 recommend L_i >= 5). Refused when K has a prime factor > 16 (a dimension of > 16 levels)."""
    factors, rest, p = [], num_codes, 2
    while rest > 1 and p * p <= rest:
        while rest % p == 0:
            factors.append(p)
            rest //= p
        p += 1
    if rest > 1:
        factors.append(rest)
    if num_codes < 2 or max(factors) > 16:
        raise ConfigError(f"model.codebook_size={num_codes} is invalid with model.quantizer=fsq: must be a product of "
                          "levels <= 16 (e.g. 64, 240, 512, 1000, 1024)")
    d = max(1, math.ceil(math.log(num_codes) / math.log(8) - 1e-9))
    levels = [1] * d
    for f in sorted(factors, reverse=True):
        i = min(range(d), key=lambda j: levels[j])
        levels[i] *= f
    return sorted(levels, reverse=True)


class FiniteScalarQuantizer(nn.Module):
    """Finite scalar quantisation (Mentzer et al. 2023): each of d channels bounded to L_i levels and rounded, with
    the straight-through gradient; the code is the mixed-radix number of the rounded digits. No codebook, no
    commitment loss, no dead codes to restart. Follows the paper's reference code (their App. A.1): bound z to
    tanh(z + shift) * half_l - offset with shift = tan(offset / half_l), half_l = (L - 1)(1 - eps)/2, offset 1/2 for even L (so even L gives L
    integers -L/2 .. L/2 - 1), then round, then divide by L // 2 (values in [-1, 1])."""

    def __init__(self, levels: list[int], eps: float = 1e-3):
        super().__init__()
        self.levels = list(levels)
        self.dim = len(self.levels)
        levels_t = torch.tensor(self.levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1, *self.levels[:-1]], dtype=torch.float32), 0)
        # non-persistent: derived from the init args, not weights (the state_dict stays empty)
        self.register_buffer("_levels", levels_t, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.eps = eps

    @property
    def size(self) -> int:
        return math.prod(self.levels)

    def _shape(self, t: Tensor) -> Tensor:
        return t.view(1, -1, 1, 1)

    def bound(self, z: Tensor) -> Tensor:
        """z (B, d, H, W) -> values in (-L/2 - offset, L/2 - offset) per channel, before rounding."""
        levels = self._shape(self._levels)
        half_l = (levels - 1) * (1 - self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = torch.tan(offset / half_l)  # the reference code's shift (tan, not atanh: defined for L = 2 too)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z_e: Tensor) -> Quantized:
        bounded = self.bound(z_e.float())
        rounded = bounded + (bounded.round() - bounded).detach()  # straight-through rounding
        half_width = self._shape(torch.div(self._levels, 2, rounding_mode="floor"))
        digits = (rounded.detach() + half_width)  # (B, d, H, W) in 0 .. L_i - 1
        codes = (digits * self._shape(self._basis)).sum(1).round().long()  # (B, H, W)
        zero = z_e.new_zeros(z_e.shape[0])
        return Quantized((rounded / half_width).to(z_e.dtype), codes, zero, zero, 0)

    def embed(self, codes: Tensor) -> Tensor:
        """Code indices (B, H, W) -> their normalised vectors (B, d, H, W)."""
        digits = torch.div(codes.unsqueeze(1), self._shape(self._basis), rounding_mode="floor") % self._shape(
            self._levels)
        half_width = self._shape(torch.div(self._levels, 2, rounding_mode="floor"))
        return (digits - half_width) / half_width


def build_quantizer(name: str, codebook_size: int, code_dim: int, ema: bool, decay: float, commitment: float,
                    dead_threshold: float) -> nn.Module:
    """The quantiser called `name` (QUANTIZERS) with K = codebook_size codes."""
    if name == "vq":
        return VectorQuantizer(codebook_size, code_dim, ema, decay, commitment, dead_threshold)
    if name == "fsq":
        return FiniteScalarQuantizer(fsq_levels(codebook_size))
    from vae_lab.errors import choices_error

    raise choices_error("model.quantizer", name, QUANTIZERS)
