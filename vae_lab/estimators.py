"""IWAE-k estimates of log p(x) for any VAE (Burda et al. 2016, Eq. 8), fast enough for k = 5000 on a test set.

Generic over every posterior, prior and likelihood: only model.encode -> q(z|x) (rsample, log_prob),
model.prior() -> log_prob and model.decode -> p(x|z) are used (plus the likelihood's optional fused log_prob).
What makes it fast, measured on the MLP and conv decoders at k = 5000 (docs/performance.md):
  - one decoder call per chunk of samples x images, sized from a memory budget of decoder activations: big
    enough that per-chunk dispatch costs nothing, small enough that a conv decoder's activations are not streamed
    through memory (a plain loop's 16k-image passes of the conv decoder hold ~800 MB of activations);
  - the likelihood's fused log-probability (Bernoulli: ~2x fewer passes than the Distribution's BCE);
  - conv weights in channels_last (NHWC) while it runs, restored after: oneDNN's fast convolution layout;
  - torch.inference_mode, and bf16 decoder matmuls on a GPU as an opt-in (log-probabilities stay float32).
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from vae_lab.distributions.posterior import rsample_with_log_prob
from vae_lab.distributions.prior import prior_log_prob

# Decoder activations per chunk (MB), by device type. CPU: measured on the MLP and conv decoders at k = 5000 (2 MB:
# 1.0-1.9x slower from per-chunk overhead; 32-128 MB alike; the plain loop's 16k-image passes are slower again);
# CUDA: enough rows to fill the GPU.
MEMORY_BUDGET_MB = {"cpu": 32, "cuda": 2048}


class ChunkedIWAE:
    """L_K = log (1/K) sum_k w_k and the Monte Carlo E_q[log p(x|z)], accumulated over chunks of the K samples.

    logsumexp is associative: log sum_k w_k = logaddexp over chunks of each chunk's logsumexp, so any chunking
    gives the same bound as one (K, B) tensor while memory stays that of one chunk. float64 accumulators.
    """

    def __init__(self):
        self.log_sum_w: torch.Tensor | None = None  # (B,)
        self.sum_log_px_given_z: torch.Tensor | None = None  # (B,)
        self.sum_log_w: torch.Tensor | None = None  # (B,)
        self.num_samples = 0

    def update(self, log_w: torch.Tensor, log_px_given_z: torch.Tensor) -> None:
        """log_w, log_px_given_z: (S, B) for S more samples."""
        lse = torch.logsumexp(log_w.double(), dim=0)  # (B,)
        total, total_w = log_px_given_z.double().sum(0), log_w.double().sum(0)  # (B,)
        if self.log_sum_w is None:
            self.log_sum_w, self.sum_log_px_given_z, self.sum_log_w = lse, total, total_w
        else:
            self.log_sum_w = torch.logaddexp(self.log_sum_w, lse)
            self.sum_log_px_given_z = self.sum_log_px_given_z + total
            self.sum_log_w = self.sum_log_w + total_w
        self.num_samples += log_w.shape[0]

    def bound(self) -> torch.Tensor:
        """L_K per example (B,), Eq. 8 of Burda et al. 2016."""
        return self.log_sum_w - math.log(self.num_samples)

    def mean_log_px_given_z(self) -> torch.Tensor:
        """(1/K) sum_k log p(x|z_k): the reconstruction term of the ELBO, (B,)."""
        return self.sum_log_px_given_z / self.num_samples

    def mean_log_w(self) -> torch.Tensor:
        """(1/K) sum_k log w_k: the Monte Carlo ELBO, E_q[log p(x|z) + log p(z) - log q(z|x)], (B,)."""
        return self.sum_log_w / self.num_samples


@contextmanager
def _leaf_output_bytes(model: nn.Module):
    """A one-item list whose total grows by the bytes of every leaf module's tensor output while the block runs."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()


def decoded_bytes_per_sample(model: nn.Module, q_z, x: torch.Tensor, y: torch.Tensor | None) -> int:
    """Bytes of every leaf module's output and the likelihood's parameters for one decoded z per image.

    One probe call of model.decode on zeros shaped like one draw of q_z (in x's dtype and device; no random numbers
    drawn), with forward hooks on the leaf modules: a generic, high (the sum, not the peak) estimate of a chunk's
    memory.
    """
    with _leaf_output_bytes(model) as total:
        z = torch.zeros((1, *q_z.batch_shape, *q_z.event_shape), dtype=x.dtype, device=x.device)
        p_x = model.decode(z, y)
    total[0] += sum(t.numel() * t.element_size() for t in _tensors_of(p_x))
    return max(1, total[0] // max(1, math.prod(q_z.batch_shape)))


def _tensors_of(p_x) -> Iterator[torch.Tensor]:
    """The parameter tensors of a torch Distribution (Independent unwrapped)."""
    dist = getattr(p_x, "base_dist", p_x)
    for name in getattr(dist, "arg_constraints", {}):
        value = dist.__dict__.get(name)  # set by the constructor; lazy properties are left alone
        if isinstance(value, torch.Tensor):
            yield value


def samples_per_chunk(num_images: int, bytes_per_sample: int, memory_mb: float, max_decoded: int | None) -> int:
    """Samples of every image per decoder call: the chunk's activations within memory_mb, <= max_decoded images."""
    rows = int(memory_mb * 2**20) // bytes_per_sample
    if max_decoded is not None:
        rows = min(rows, max_decoded)
    return max(1, rows // num_images)


@contextmanager
def _channels_last(model: nn.Module, enabled: bool = True):
    """Conv weights in NHWC while the block runs (oneDNN's and cuDNN's fast layout), as they were after.

    Only 4-D parameters change layout (values untouched); the activations follow the weights inside each conv.
    """
    convs = [p for p in model.parameters() if enabled and p.dim() == 4 and p.is_contiguous()]
    if not convs:
        yield
        return
    with torch.no_grad():
        for p in convs:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    try:
        yield
    finally:
        with torch.no_grad():
            for p in convs:
                p.data = p.data.contiguous()


def _onednn_linear(linear: nn.Linear, attr: str):
    """linear's forward through oneDNN's matmul, with `attr` ("relu" or "none") fused into its output pass."""

    def forward(h: torch.Tensor) -> torch.Tensor:
        if h.dtype != torch.float32 or h.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            out = F.linear(h, linear.weight, linear.bias)  # autocast or another dtype: torch's own rules
            return torch.relu(out) if attr == "relu" else out
        return torch.ops.mkldnn._linear_pointwise(h, linear.weight, linear.bias, attr, [], "")

    return forward


@contextmanager
def _onednn_linears(model: nn.Module, enabled: bool = True):
    """Each nn.Linear of an nn.Sequential through oneDNN while the block runs, a ReLU right after it fused in.

    Same maths, another GEMM: on the 2-core AMD EPYC dev VM oneDNN's fp32 GEMM reaches ~35 GFLOP/s against MKL's
    ~28-31 at the MLP decoder's shapes, and the fused ReLU saves one pass over the activations. Modules are only
    given an instance `forward` (deleted after: the model is as before); a ReLU registered in more than one place is
    never fused away; float32 CPU inputs only (anything else, autocast included, takes F.linear).
    """
    if not (enabled and torch.backends.mkldnn.is_available()):
        yield
        return
    uses: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        uses[id(module)] = uses.get(id(module), 0) + 1
    patched: list[nn.Module] = []
    for module in model.modules():
        children = list(module.children()) if isinstance(module, nn.Sequential) else []
        for linear, after in zip(children, children[1:] + [None]):
            # exactly nn.Linear: a subclass (the MADE's MaskedLinear) has its own forward
            if type(linear) is not nn.Linear or linear.weight.device.type != "cpu" or "forward" in vars(linear):
                continue
            fuse = type(after) is nn.ReLU and uses[id(after)] == 1 and "forward" not in vars(after)
            linear.forward = _onednn_linear(linear, "relu" if fuse else "none")
            patched.append(linear)
            if fuse:
                after.forward = _identity
                patched.append(after)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def _identity(h: torch.Tensor) -> torch.Tensor:
    return h


def _log_px_given_z(model: nn.Module, p_x, x: torch.Tensor) -> torch.Tensor:
    """log p(x|z): the likelihood's fused log-probability when it has one, else the Distribution's."""
    likelihood = getattr(model, "likelihood", None)
    if likelihood is not None and hasattr(likelihood, "log_prob"):
        return likelihood.log_prob(p_x, x)
    return p_x.log_prob(x)


def iwae_log_px(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    num_samples: int = 5000,
    *,
    q_z=None,
    memory_mb: float | None = None,
    max_decoded: int | None = None,
    decoder_dtype: torch.dtype | None = None,
    cpu_layout: bool = True,
) -> ChunkedIWAE:
    """IWAE-k over k = num_samples draws z ~ q(z|x) for a batch x (B, C, H, W): the bound and E_q[log p(x|z)].

    Draws, in order, q_z.rsample((S,)) for consecutive chunks of S samples: the same noise as any loop that draws
    chunks of the same size after the same seed. Args:
        q_z: q(z|x) if the caller already encoded x (else model.encode(x, y)).
        memory_mb: decoder activations per chunk; None: MEMORY_BUDGET_MB of x's device type.
        max_decoded: at most this many images (samples x B) per decoder call.
        decoder_dtype: autocast dtype of the decoder (torch.bfloat16 on a GPU; opt-in): its matmuls in bf16, the
            likelihood's log-probabilities in float32; the bound then moves by the bf16 rounding of the logits.
        cpu_layout: during the call, conv weights in NHWC and (on a CPU, float32) nn.Linear through oneDNN with a
            following ReLU fused in: the same maths with other kernels (the bound moves by float rounding only).
    """
    budget = memory_mb if memory_mb is not None else MEMORY_BUDGET_MB.get(x.device.type, 256)
    if not getattr(model, "flat_code", True):  # a family without one flat code: through its log_weights (interface)
        return _family_iwae(model, x, y, num_samples, budget, max_decoded, decoder_dtype)
    onednn = cpu_layout and x.device.type == "cpu" and decoder_dtype is None
    with _channels_last(model, cpu_layout), _onednn_linears(model, onednn), torch.inference_mode():
        acc = _accumulate(model, x, y, num_samples, q_z, budget, max_decoded, decoder_dtype)
    result = ChunkedIWAE()  # plain tensors out of inference mode, so any caller may use them
    result.log_sum_w, result.sum_log_px_given_z = acc.log_sum_w.clone(), acc.sum_log_px_given_z.clone()
    result.sum_log_w = acc.sum_log_w.clone()
    result.num_samples = acc.num_samples
    return result


def _accumulate(model, x, y, num_samples, q_z, memory_mb, max_decoded, decoder_dtype) -> ChunkedIWAE:
    """The hot loop of iwae_log_px (inside inference mode)."""
    q_z = q_z if q_z is not None else model.encode(x, y)
    p_z = model.prior()
    autocast = torch.autocast(x.device.type, dtype=decoder_dtype or torch.float32, enabled=decoder_dtype is not None)
    with autocast:
        per_chunk = samples_per_chunk(x.shape[0], decoded_bytes_per_sample(model, q_z, x, y), memory_mb, max_decoded)
    acc = ChunkedIWAE()
    for start in range(0, num_samples, per_chunk):
        # z = q_z.rsample((S,)) (the same draws), log q(z|x) from its noise: (S, B, D), (S, B)
        z, log_qz = rsample_with_log_prob(q_z, (min(per_chunk, num_samples - start),))
        with autocast:
            p_x = model.decode(z, y)  # batch (S, B): one decoder call for S x B images
        log_px_given_z = _log_px_given_z(model, p_x, x)  # (S, B)
        if log_px_given_z.dtype in (torch.float16, torch.bfloat16):  # a likelihood that does not upcast itself
            log_px_given_z = log_px_given_z.float()
        acc.update(log_px_given_z + prior_log_prob(p_z, z) - log_qz, log_px_given_z)  # log w, Eq. 8
    return acc


def pass_bytes_per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> int:
    """Bytes of every leaf module's output in one `model.log_weights(x, y, 1)` pass, per image: a generic, high
    (the sum, not the peak) estimate of a chunk's memory for any family."""
    with _leaf_output_bytes(model) as total:
        model.log_weights(x[:1], None if y is None else y[:1], 1)
    return max(1, total[0])


def _family_iwae(model, x, y, num_samples, memory_mb, max_decoded, decoder_dtype) -> ChunkedIWAE:
    """IWAE-k of a family with latent groups: chunks of S samples through model.log_weights (log q and log p summed
    over the groups), S sized from the memory budget; float64 accumulation as for the VAE."""
    autocast = torch.autocast(x.device.type, dtype=decoder_dtype or torch.float32, enabled=decoder_dtype is not None)
    acc = ChunkedIWAE()
    with torch.inference_mode(), autocast:
        per_chunk = num_samples if getattr(model, "log_weights_bounded", False) else samples_per_chunk(
            x.shape[0], pass_bytes_per_sample(model, x, y), memory_mb, max_decoded)
        for start in range(0, num_samples, per_chunk):
            log_w, log_px_given_z = model.log_weights(x, y, min(per_chunk, num_samples - start))  # (S, B) each
            acc.update(log_w.float(), log_px_given_z.float())
    result = ChunkedIWAE()  # plain tensors out of inference mode
    result.log_sum_w, result.sum_log_px_given_z = acc.log_sum_w.clone(), acc.sum_log_px_given_z.clone()
    result.sum_log_w, result.num_samples = acc.sum_log_w.clone(), acc.num_samples
    return result
